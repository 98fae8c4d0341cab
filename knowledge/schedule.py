"""Facts dated in the future: kept aside until their ``valid_from`` comes, then ingested as usual.

A feed may announce a change ahead of time ("from 2027-01-01 the currency is …"). Ingested at
once, such a fact would close today's fact and be current already; kept in ``scheduled_fact``,
it changes nothing until its day, when the next ingest (or update cycle) adds it like any fact.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from knowledge.models import ScheduledFact
from knowledge.readers import FactRecord
from knowledge.views import IngestSummary


def schedule(s: Session, records: Sequence[FactRecord], summary: IngestSummary) -> None:
    """Keep ``records`` (each with a future ``valid_from``) until their day; one already scheduled
    (same subject, relation, object and date) counts as unchanged."""
    for r in records:
        assert r.valid_from is not None  # callers pass dated records only
        exists = s.scalar(
            select(ScheduledFact.id).where(
                ScheduledFact.subject == r.subject,
                ScheduledFact.relation == r.relation,
                ScheduledFact.object.is_(None) if r.object is None else ScheduledFact.object == r.object,
                ScheduledFact.object_literal.is_(None)
                if r.object_literal is None
                else ScheduledFact.object_literal == r.object_literal,
                ScheduledFact.valid_from == r.valid_from,
            )
        )
        if exists is not None:
            summary.facts_unchanged += 1
            continue
        s.add(
            ScheduledFact(
                subject=r.subject,
                relation=r.relation,
                object=r.object,
                object_literal=r.object_literal,
                valid_from=r.valid_from,
                source=r.source,
                confidence=r.confidence,
                origin=r.origin,
            )
        )
        summary.facts_scheduled += 1
    s.flush()


def take_due(s: Session, today: dt.date) -> list[FactRecord]:
    """Remove and return the scheduled facts whose day has come (oldest date first)."""
    rows = s.scalars(
        select(ScheduledFact)
        .where(ScheduledFact.valid_from <= today)
        .order_by(ScheduledFact.valid_from, ScheduledFact.id)
    ).all()
    if not rows:
        return []
    records = [
        FactRecord(r.subject, r.relation, r.object, r.object_literal, r.valid_from, r.source, r.confidence, r.origin)
        for r in rows
    ]
    s.execute(delete(ScheduledFact).where(ScheduledFact.id.in_([r.id for r in rows])))
    return records


def scheduled(s: Session) -> list[FactRecord]:
    """The facts waiting for their day, soonest first."""
    rows = s.scalars(select(ScheduledFact).order_by(ScheduledFact.valid_from, ScheduledFact.id))
    return [
        FactRecord(r.subject, r.relation, r.object, r.object_literal, r.valid_from, r.source, r.confidence, r.origin)
        for r in rows
    ]
