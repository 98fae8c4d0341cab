"""The registry of update cycles: one row per run (timings, counts, metrics, the promotion
decision) and one per model checkpoint (its lineage and status).

Each function works inside the caller's session and transaction.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from knowledge.db import utcnow
from knowledge.models import Checkpoint, UpdateRun

RUN_FIELDS = frozenset(
    {"status", "finished_at", "timings", "counts", "metrics", "decision", "reasons", "error", "checkpoint_version"}
)


def start_run(s: Session, trigger: str) -> int:
    """Insert an ``update_run`` row in status "running"; returns its id."""
    run = UpdateRun(trigger=trigger, status="running", timings={}, counts={}, metrics={}, reasons=[])
    s.add(run)
    s.flush()
    return run.id


def finish_run(s: Session, run_id: int, **fields: Any) -> None:
    """Update a run's row with ``fields`` (any of :data:`RUN_FIELDS`; ``finished_at`` defaults to now).

    Raises ValueError, writing nothing, for a field outside :data:`RUN_FIELDS`. An unknown
    ``run_id`` updates nothing.
    """
    unknown = set(fields) - RUN_FIELDS
    if unknown:
        raise ValueError(f"finish_run: unknown fields {sorted(unknown)}")
    fields.setdefault("finished_at", utcnow())
    s.execute(update(UpdateRun).where(UpdateRun.id == run_id).values(**fields))


def runs(s: Session, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """A page of update runs as dicts (see :func:`run_dict`), newest first."""
    rows = s.scalars(select(UpdateRun).order_by(UpdateRun.id.desc()).offset(offset).limit(limit)).all()
    return [run_dict(r) for r in rows]


def count_runs(s: Session) -> int:
    """How many update runs there are."""
    return s.scalar(select(func.count()).select_from(UpdateRun)) or 0


def get_run(s: Session, run_id: int) -> dict[str, Any] | None:
    """One update run as a dict (see :func:`run_dict`); None for an unknown id."""
    r = s.get(UpdateRun, run_id)
    return run_dict(r) if r is not None else None


def run_dict(r: UpdateRun) -> dict[str, Any]:
    """A run's columns by name, timestamps as ISO strings (None while unset)."""
    return {
        "id": r.id,
        "trigger": r.trigger,
        "status": r.status,
        "started_at": r.started_at.isoformat() if r.started_at else None,
        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
        "timings": r.timings,
        "counts": r.counts,
        "metrics": r.metrics,
        "decision": r.decision,
        "reasons": r.reasons,
        "error": r.error,
        "checkpoint_version": r.checkpoint_version,
    }


def record_checkpoint(
    s: Session, version: str, parent: str | None, status: str, metrics: dict[str, Any], path: str | None = None
) -> None:
    """Insert or update a checkpoint's row (status: candidate / active / rejected / retired).

    On update, a None ``parent`` or empty ``path`` keeps the stored one.
    """
    row = s.get(Checkpoint, version)
    if row is None:
        s.add(Checkpoint(version=version, parent_version=parent, status=status, metrics=metrics, path=path))
    else:
        row.status, row.metrics = status, metrics
        row.parent_version = parent if parent is not None else row.parent_version
        row.path = path or row.path


def set_checkpoint_status(s: Session, version: str, status: str) -> None:
    """Set one checkpoint's status, inserting its row if missing; making one "active" retires the
    previously active one."""
    if status == "active":
        s.execute(
            update(Checkpoint)
            .where(Checkpoint.status == "active", Checkpoint.version != version)
            .values(status="retired")
        )
    # Session.execute is annotated Result for every statement; an UPDATE without RETURNING gives a CursorResult
    n = cast(
        CursorResult[Any], s.execute(update(Checkpoint).where(Checkpoint.version == version).values(status=status))
    ).rowcount
    if not n:
        s.add(Checkpoint(version=version, status=status, metrics={}))


def checkpoints(s: Session) -> list[dict[str, Any]]:
    """Checkpoint rows as dicts (``version``, ``parent``, ``status``, ``created_at``, ``metrics``,
    ``path``), oldest first."""
    rows = s.scalars(select(Checkpoint).order_by(Checkpoint.created_at, Checkpoint.version)).all()
    return [
        {
            "version": c.version,
            "parent": c.parent_version,
            "status": c.status,
            "created_at": c.created_at.isoformat(),
            "metrics": c.metrics,
            "path": c.path,
        }
        for c in rows
    ]
