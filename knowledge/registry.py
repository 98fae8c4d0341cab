"""The registry of update cycles: one row per run (timings, counts, metrics, the promotion
decision) and one per model checkpoint (its lineage and status).

Each function works inside the caller's session and transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from knowledge.db import utcnow
from knowledge.models import Checkpoint, Document, Fact, Passage, UpdateRun

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


def abandon_running(s: Session, error: str) -> list[dict[str, Any]]:
    """Mark every run still "running" as "failed" with ``error``; returns them as they were.

    Only a cycle that holds the update lock may call this: then no other run can be alive.
    """
    stale = [run_dict(r) for r in s.scalars(select(UpdateRun).where(UpdateRun.status == "running"))]
    if stale:
        s.execute(
            update(UpdateRun)
            .where(UpdateRun.id.in_([r["id"] for r in stale]))
            .values(status="failed", finished_at=utcnow(), error=error)
        )
    return stale


def changed_since(s: Session, since: dt.datetime) -> tuple[list[int], list[int], list[int]]:
    """What the store took in from ``since`` on: (current facts created, facts closed, passages of
    documents ingested), each as ids in order."""
    new_facts = s.scalars(select(Fact.id).where(Fact.created_at >= since, Fact.valid_to.is_(None)).order_by(Fact.id))
    closed = s.scalars(select(Fact.id).where(Fact.closed_at >= since).order_by(Fact.id))
    new_passages = s.scalars(
        select(Passage.id).join(Document, Passage.document_id == Document.id).where(Document.ingested_at >= since)
    )
    return list(new_facts), list(closed), sorted(new_passages)


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

    On update, a None ``parent`` or empty ``path`` keeps the stored one. Recording one as "active"
    retires the previously active one in the same transaction (the database allows one).
    """
    if status == "active":
        _retire_active_except(s, version)
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
        _retire_active_except(s, version)
    # Session.execute is annotated Result for every statement; an UPDATE without RETURNING gives a CursorResult
    n = cast(
        CursorResult[Any], s.execute(update(Checkpoint).where(Checkpoint.version == version).values(status=status))
    ).rowcount
    if not n:
        s.add(Checkpoint(version=version, status=status, metrics={}))


def _retire_active_except(s: Session, version: str) -> None:
    s.execute(
        update(Checkpoint).where(Checkpoint.status == "active", Checkpoint.version != version).values(status="retired")
    )
    s.flush()


def active_checkpoint(s: Session) -> str | None:
    """The version SQL records as active (the one answer to "which model is active"), or None."""
    return s.scalar(select(Checkpoint.version).where(Checkpoint.status == "active"))


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
