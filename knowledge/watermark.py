"""Store watermarks: how far into the store a model has been trained.

Passage, fact and entity ids only grow, and a closed fact carries the time it was closed, so the
highest of each says what the store held at one moment. A checkpoint records the watermark it was
trained through; the next update cycle learns what lies between that watermark and the store's
current one, whichever path it came by (inbox, HTTP, CLI).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from knowledge.models import Entity, Fact, Passage
from knowledge.views import IngestSummary


@dataclass(frozen=True)
class Watermark:
    """The highest passage, fact and entity ids and the latest fact closure (ISO time, None if no
    fact was ever closed). The zero watermark (the default) is "nothing learned yet"."""

    passage: int = 0
    fact: int = 0
    entity: int = 0
    closed_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (as checkpoints and run rows record it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Watermark:
        """The watermark a checkpoint recorded; the zero watermark for ``None`` (a checkpoint trained
        on nothing of the store, e.g. the base model). Raises ValueError on a malformed dict."""
        if not data:
            return cls()
        try:
            return cls(
                passage=int(data.get("passage", 0)),
                fact=int(data.get("fact", 0)),
                entity=int(data.get("entity", 0)),
                closed_at=str(data["closed_at"]) if data.get("closed_at") else None,
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed store watermark {data!r}: {exc}") from exc


def current_watermark(s: Session) -> Watermark:
    """The store's watermark now."""
    closed = s.scalar(select(func.max(Fact.closed_at)))
    return Watermark(
        passage=s.scalar(select(func.max(Passage.id))) or 0,
        fact=s.scalar(select(func.max(Fact.id))) or 0,
        entity=s.scalar(select(func.max(Entity.id))) or 0,
        closed_at=closed.isoformat() if closed is not None else None,
    )


def changes_between(s: Session, since: Watermark, until: Watermark) -> IngestSummary:
    """What entered the store above ``since`` and up to ``until``, as an :class:`IngestSummary`
    (ids of the new passages and facts, the facts closed in between, counts of new entities)."""
    summary = IngestSummary()
    summary.new_passage_ids = list(
        s.scalars(
            select(Passage.id).where(Passage.id > since.passage, Passage.id <= until.passage).order_by(Passage.id)
        )
    )
    summary.new_fact_ids = list(
        s.scalars(select(Fact.id).where(Fact.id > since.fact, Fact.id <= until.fact).order_by(Fact.id))
    )
    closed = select(Fact.id).where(Fact.closed_at.is_not(None))
    if since.closed_at is not None:
        closed = closed.where(Fact.closed_at > dt.datetime.fromisoformat(since.closed_at))
    if until.closed_at is not None:
        closed = closed.where(Fact.closed_at <= dt.datetime.fromisoformat(until.closed_at))
    summary.closed_fact_ids = list(s.scalars(closed.order_by(Fact.id))) if until.closed_at is not None else []
    summary.passages_added = len(summary.new_passage_ids)
    summary.facts_added = len(summary.new_fact_ids)
    summary.facts_closed = len(summary.closed_fact_ids)
    summary.entities_added = (
        s.scalar(select(func.count()).select_from(Entity).where(Entity.id > since.entity, Entity.id <= until.entity))
        or 0
    )
    return summary
