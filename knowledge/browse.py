"""Reads for browsing the store: an entity's page (facts as of a date, its history, the passages
that mention it), neighbourhoods walked in SQL, and documents by full-text search.

Every read is bounded (a hub entity with a million facts still answers in one indexed page), so a
page's server time does not grow with the store. Each function reads through the caller's session.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, func, literal, or_, select, union_all
from sqlalchemy.orm import InstrumentedAttribute, Session

from knowledge import passages, queries
from knowledge.models import Alias, Document, Entity, Fact, Mention, Passage, Source
from knowledge.views import FactView, PassageInfo


@dataclass(frozen=True)
class TimelineEntry:
    """One fact on an entity's timeline: what was believed, over which interval, and from where.

    ``superseded_by`` names the object that replaced this one (a closed fact of the same subject
    and relation whose successor starts where it ends); None while current or when nothing did.
    """

    fact: FactView
    superseded_by: str | None = None

    @property
    def believed_on(self) -> tuple[dt.date | None, dt.date | None]:
        """The half-open interval ``[valid_from, valid_to)`` (None: unbounded)."""
        return self.fact.valid_from, self.fact.valid_to


@dataclass(frozen=True)
class EntityPage:
    """What the store says about one entity, as of a date (None: now)."""

    id: int
    key: str
    name: str
    type: str | None
    description: str | None
    aliases: list[str]
    as_of: dt.date | None
    facts: list[FactView]  # as subject, believed on ``as_of`` (current facts for None)
    incoming: list[FactView]  # as object, believed on ``as_of``
    timeline: list[TimelineEntry]  # as subject, current and closed, by relation then valid_from
    passages: list[PassageInfo]  # passages that mention the entity, first linked first
    mention_count: int
    fact_total: int  # facts with the entity as subject, current and closed
    truncated: list[str] = field(default_factory=list)  # which lists hit their limit


@dataclass(frozen=True)
class DocumentHit:
    """A document whose title matched a search."""

    id: int
    title: str | None
    external_id: str | None
    source: str | None
    published_at: dt.date | None


def entity_page(
    s: Session, entity_id: int, as_of: dt.date | None = None, fact_limit: int = 200, passage_limit: int = 10
) -> EntityPage | None:
    """An entity's page: its facts believed on ``as_of`` (now for None), facts pointing at it, its
    timeline with what superseded each closed fact, and the passages that mention it.

    Each list holds at most ``fact_limit`` (passages: ``passage_limit``) items; the names of the
    lists that were cut are in ``truncated``. Returns None for an unknown id.
    """
    e = s.get(Entity, entity_id)
    if e is None:
        return None
    aliases = list(
        s.scalars(select(Alias.surface).where(Alias.entity_id == entity_id).order_by(Alias.id).limit(fact_limit))
    )
    outgoing_order = (Fact.relation_id, Fact.id)  # the subject index's order: no sort of a hub's facts
    believed = _page(s, Fact.subject_id == entity_id, believed_on(as_of), outgoing_order, fact_limit + 1)
    incoming = _page(s, Fact.object_id == entity_id, believed_on(as_of), (Fact.id,), fact_limit + 1)
    history = _page(s, Fact.subject_id == entity_id, [], outgoing_order, fact_limit + 1)
    truncated = [
        name
        for name, rows in (("facts", believed), ("incoming", incoming), ("timeline", history))
        if len(rows) > fact_limit
    ]
    mention_rows = s.execute(
        select(Mention.passage_id)
        .where(Mention.entity_id == entity_id)
        .group_by(Mention.passage_id)
        .order_by(func.min(Mention.id))
        .limit(passage_limit + 1)
    ).all()
    passage_ids = [int(r[0]) for r in mention_rows]
    if len(passage_ids) > passage_limit:
        truncated.append("passages")
        passage_ids = passage_ids[:passage_limit]
    info = passages.passage_info(s, passage_ids)
    mention_count = s.scalar(select(func.count()).select_from(Mention).where(Mention.entity_id == entity_id)) or 0
    fact_total = s.scalar(select(func.count()).select_from(Fact).where(Fact.subject_id == entity_id)) or 0
    return EntityPage(
        id=e.id,
        key=e.external_id,
        name=e.name,
        type=e.type,
        description=e.description,
        aliases=aliases,
        as_of=as_of,
        facts=believed[:fact_limit],
        incoming=incoming[:fact_limit],
        timeline=timeline(history[:fact_limit]),
        passages=[info[i] for i in passage_ids if i in info],
        mention_count=mention_count,
        fact_total=fact_total,
        truncated=truncated,
    )


def _page(
    s: Session,
    where: ColumnElement[bool],
    conditions: list[ColumnElement[bool]],
    order: tuple[InstrumentedAttribute[Any], ...],
    limit: int,
) -> list[FactView]:
    """Up to ``limit`` facts matching, in ``order``: the ids from the fact table alone (an index
    range that stops at the limit), then names resolved for those ids only."""
    ids = list(s.scalars(select(Fact.id).where(where, *conditions).order_by(*order).limit(limit)))
    return queries.facts_in_order(s, ids)


def timeline(facts: list[FactView]) -> list[TimelineEntry]:
    """Facts ordered by relation, then by when they became true, each closed one paired with the
    object of the fact of the same relation that started when it ended (what superseded it)."""
    ordered = sorted(facts, key=lambda f: (f.relation_id, f.valid_from or dt.date.min, f.id))
    starts: dict[tuple[str, dt.date | None], FactView] = {}
    for f in ordered:
        starts.setdefault((f.relation_id, f.valid_from), f)
    out = []
    for f in ordered:
        successor = starts.get((f.relation_id, f.valid_to)) if f.valid_to is not None else None
        out.append(TimelineEntry(f, successor.object if successor is not None and successor.id != f.id else None))
    return out


def believed_on(as_of: dt.date | None) -> list[ColumnElement[bool]]:
    """The conditions of a fact believed on ``as_of`` (valid_from ≤ D < valid_to), or current for None."""
    if as_of is None:
        return [Fact.valid_to.is_(None)]
    return [
        or_(Fact.valid_from.is_(None), Fact.valid_from <= as_of),
        or_(Fact.valid_to.is_(None), Fact.valid_to > as_of),
    ]


# Entities read per statement: two capped selects each, under SQLite's limit of 500 compound selects.
_WALK_CHUNK = 200


def _facts_around(
    s: Session, nodes: list[int], as_of: dt.date | None, fanout: int
) -> dict[int, list[tuple[int, int, int | None]]]:
    """``(fact id, subject, object)`` of up to ``fanout`` facts of each node, outgoing first: one
    statement per chunk of nodes, each node's two reads capped by their own LIMIT."""
    out: dict[int, list[tuple[int, int, int | None]]] = {n: [] for n in nodes}
    for i in range(0, len(nodes), _WALK_CHUNK):
        parts = [
            select(
                select(Fact.id, Fact.subject_id, Fact.object_id, literal(n).label("node"), literal(side).label("side"))
                .where(column == n, *believed_on(as_of))
                .limit(fanout)
                .subquery()
            )
            for n in nodes[i : i + _WALK_CHUNK]
            for side, column in enumerate((Fact.subject_id, Fact.object_id))
        ]
        rows = s.execute(union_all(*parts)).all()
        for side in (0, 1):  # outgoing before incoming, each in the order the database gave
            for fid, subject, obj, node, row_side in rows:
                if row_side == side and len(out[node]) < fanout:
                    out[node].append((fid, subject, obj))
    return out


def walk_neighbourhood(
    s: Session, entity_id: int, hops: int = 1, as_of: dt.date | None = None, fanout: int = 25, max_facts: int = 300
) -> list[FactView]:
    """The facts within ``hops`` of an entity believed on ``as_of`` (now for None), breadth-first,
    closest first: from each entity at most ``fanout`` facts, outgoing first, ``max_facts`` in all.

    Each hop is one statement (per 200 entities of its frontier) of capped reads through the
    subject and object indexes, so no hub's thousands of facts are sorted and a walk costs a few
    round trips whatever the store's size. An unknown entity has none; raises ValueError for
    negative ``hops``.
    """
    if hops < 0:
        raise ValueError(f"hops must be >= 0, got {hops}")
    found: list[int] = []
    seen_facts: set[int] = set()
    seen, frontier = {entity_id}, [entity_id]
    for _ in range(hops):
        if not frontier:
            break
        around = _facts_around(s, frontier, as_of, fanout)
        nxt: list[int] = []
        for node in frontier:
            for fid, subject, obj in around[node]:
                if fid in seen_facts:  # an edge between two entities of the walk
                    continue
                seen_facts.add(fid)
                found.append(fid)
                if len(found) >= max_facts:
                    return queries.facts_in_order(s, found)
                for other in (subject, obj):
                    if other is not None and other not in seen:
                        seen.add(other)
                        nxt.append(other)
        frontier = nxt
    return queries.facts_in_order(s, found)


def find_documents(s: Session, query: str, limit: int = 20) -> list[DocumentHit]:
    """Documents whose text matches ``query`` by the database's full-text search, best first (each
    document once, ranked by its best passage), at most ``limit``.

    Full-text rather than a substring scan of titles: it answers from an index at any store size.
    Returns none for a blank query or one of stopwords only.
    """
    hits = passages.lexical_search(s, query, k=limit * 5)
    if not hits:
        return []
    rank = {pid: i for i, (pid, _) in enumerate(hits)}
    rows = s.execute(
        select(Passage.id, Document.id, Document.title, Document.external_id, Source.name, Document.published_at)
        .join(Document, Passage.document_id == Document.id)
        .outerjoin(Source, Document.source_id == Source.id)
        .where(Passage.id.in_(list(rank)))
    ).all()
    best: dict[int, tuple[int, DocumentHit]] = {}
    for pid, doc_id, title, external_id, source, published_at in sorted(rows, key=lambda r: rank[r[0]]):
        best.setdefault(doc_id, (rank[pid], DocumentHit(doc_id, title, external_id, source, published_at)))
    return [hit for _, hit in sorted(best.values(), key=lambda x: x[0])][:limit]
