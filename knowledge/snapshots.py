"""What other processes follow: the passage event log and the published index generations.

Triggers on ``passage`` append one ``passage_event`` per passage added or removed (migration
0004), so every writer is covered. A published generation is a row naming an immutable folder
of index files and the last event it covers; committing the row is the commit point, so a reader
never sees a generation whose files are not all written. Each function works inside the
caller's session and transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from knowledge.db import utcnow
from knowledge.models import IndexGeneration, PassageEvent

ADDED = "added"
REMOVED = "removed"


@dataclass(frozen=True)
class PassageEventView:
    """One entry of the event log: ``kind`` is ``"added"`` or ``"removed"``."""

    id: int
    passage_id: int
    kind: str
    created_at: dt.datetime


@dataclass(frozen=True)
class GenerationView:
    """A published index generation (see :class:`knowledge.models.IndexGeneration`)."""

    id: int
    folder: str
    events_through: int
    vectors: int
    kind: str
    embedder: str | None
    created_at: dt.datetime


def events_after(s: Session, after_id: int, limit: int = 5000, before_id: int | None = None) -> list[PassageEventView]:
    """Events with ids above ``after_id`` (and below ``before_id`` when given), oldest first, at
    most ``limit``."""
    stmt = select(PassageEvent).where(PassageEvent.id > after_id)
    if before_id is not None:
        stmt = stmt.where(PassageEvent.id < before_id)
    rows = s.scalars(stmt.order_by(PassageEvent.id).limit(limit))
    return [PassageEventView(e.id, e.passage_id, e.kind, e.created_at) for e in rows]


def max_event_id(s: Session) -> int:
    """The highest event id (0 before any)."""
    return int(s.scalar(select(func.max(PassageEvent.id))) or 0)


def settled_event_id(s: Session, seconds: float) -> int:
    """The highest event id written more than ``seconds`` ago (0 if none): a safe point to replay
    from, since a transaction that was still open then has committed or given up by now."""
    cutoff = utcnow() - dt.timedelta(seconds=seconds)
    return int(s.scalar(select(func.max(PassageEvent.id)).where(PassageEvent.created_at < cutoff)) or 0)


def first_event_time_after(s: Session, after_id: int) -> dt.datetime | None:
    """When the oldest event above ``after_id`` was written (None when there is none)."""
    return s.scalar(select(func.min(PassageEvent.created_at)).where(PassageEvent.id > after_id))


def record_generation(
    s: Session,
    folder: str,
    events_through: int,
    vectors: int,
    kind: str,
    embedder: str | None,
    publisher: str | None = None,
) -> int:
    """Publish the generation in ``folder`` (its files already written); returns its id."""
    row = IndexGeneration(
        folder=folder,
        events_through=events_through,
        vectors=vectors,
        kind=kind,
        embedder=embedder,
        publisher=publisher,
        created_at=utcnow(),
    )
    s.add(row)
    s.flush()
    return row.id


def latest_generation(s: Session) -> GenerationView | None:
    """The newest published generation, or None before the first."""
    g = s.scalar(select(IndexGeneration).order_by(IndexGeneration.id.desc()).limit(1))
    return _view(g) if g is not None else None


def generations(s: Session) -> list[GenerationView]:
    """All published generations still recorded, newest first."""
    return [_view(g) for g in s.scalars(select(IndexGeneration).order_by(IndexGeneration.id.desc()))]


def forget_generations(s: Session, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` generation rows; returns the folders they named."""
    old = s.scalars(select(IndexGeneration).order_by(IndexGeneration.id.desc()).offset(keep)).all()
    folders = [g.folder for g in old]
    if old:
        s.execute(delete(IndexGeneration).where(IndexGeneration.id.in_([g.id for g in old])))
    return folders


def _view(g: IndexGeneration) -> GenerationView:
    return GenerationView(g.id, g.folder, g.events_through, g.vectors, g.kind, g.embedder, g.created_at)
