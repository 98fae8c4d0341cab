"""Reads of the knowledge graph in SQL: entities, facts (current, as of a date, history),
neighbourhoods, relations and table counts, plus the increments the linker and graph views need.

Each function reads through the caller's session.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, func, not_, or_, select, union
from sqlalchemy.orm import Session, aliased

from knowledge.db import select_rows
from knowledge.graph import GraphFact
from knowledge.linker import normalise_alias
from knowledge.models import Alias, Checkpoint, Document, Entity, Fact, Mention, Passage, Relation, Source, UpdateRun
from knowledge.views import EntityView, FactView


def entity_id(s: Session, key: str) -> int | None:
    """The internal id of the entity with external id ``key``; None if there is none."""
    return s.scalar(select(Entity.id).where(Entity.external_id == key))


def find_entities(s: Session, query: str, limit: int = 20) -> list[dict[str, Any]]:
    """Entities whose name or alias matches ``query`` (normalised; exact first, then prefix).

    Returns up to ``limit`` dicts with ``id``, ``key``, ``name`` and ``type``; none for a query
    that normalises to nothing.
    """
    norm = normalise_alias(query)
    if not norm:
        return []
    rows = s.execute(
        select(Entity.id, Entity.external_id, Entity.name, Entity.type, Alias.normalised, Alias.prior)
        .join(Alias, Alias.entity_id == Entity.id)
        .where(or_(Alias.normalised == norm, Alias.normalised.like(_like_prefix(norm), escape="\\")))
        .limit(limit * 10)
    ).all()
    best: dict[int, tuple] = {}
    for eid, key, name, typ, alias_norm, prior in rows:
        rank = (0 if alias_norm == norm else 1, -prior, len(alias_norm), eid)
        if eid not in best or rank < best[eid][0]:
            best[eid] = (rank, {"id": eid, "key": key, "name": name, "type": typ})
    return [v for _, v in sorted(best.values(), key=lambda x: x[0])][:limit]


def resolve_entity(s: Session, ref: str | int) -> int | None:
    """An entity id from an internal id, an external id, or a name/alias; None if nothing matches."""
    # ASCII digits only (int() also reads other scripts' digits), and within SQL's 64-bit integers
    numeric = isinstance(ref, int) or (ref.isascii() and ref.isdigit())
    if numeric and 0 <= int(ref) < 2**63:
        if s.get(Entity, int(ref)) is not None:
            return int(ref)
    eid = entity_id(s, str(ref))
    if eid is not None:
        return eid
    found = find_entities(s, str(ref), limit=1)
    return found[0]["id"] if found else None


def get_entity(s: Session, entity_id: int, limit: int | None = None) -> EntityView | None:
    """An entity with its aliases, current facts (id order), history (newest first) and mention count.

    ``limit`` caps each of the two fact lists; ``facts_total`` / ``history_total`` count them all.
    Only the ids of a list are read in its order (an index range for a hub with many facts), then
    names are resolved for the page alone. Returns None for an unknown id.
    """
    e = s.get(Entity, entity_id)
    if e is None:
        return None
    aliases = [a.surface for a in s.scalars(select(Alias).where(Alias.entity_id == entity_id).order_by(Alias.id))]
    mention_count = s.scalar(select(func.count()).select_from(Mention).where(Mention.entity_id == entity_id)) or 0
    current = and_(Fact.valid_to.is_(None), Fact.retracted_at.is_(None))
    pages: dict[str, list[FactView]] = {}
    totals: dict[str, int] = {}
    for name, where in (("facts", current), ("history", not_(current))):
        # As subject, then as object: one index range each, joined by a UNION that also drops a
        # fact about itself (with an OR of the two, SQLite's plan read every current fact through
        # the valid_to index instead).
        ends = union(
            select(Fact.id, Fact.valid_to).where(Fact.subject_id == entity_id, where),
            select(Fact.id, Fact.valid_to).where(Fact.object_id == entity_id, where),
        ).subquery()
        order = (ends.c.id,) if name == "facts" else (ends.c.valid_to.desc().nulls_last(), ends.c.id)
        ids = list(s.scalars(select(ends.c.id).order_by(*order).limit(limit)))
        pages[name] = facts_in_order(s, ids)
        totals[name] = (
            len(ids) if limit is None or len(ids) < limit else s.scalar(select(func.count()).select_from(ends)) or 0
        )
    return EntityView(
        id=e.id,
        key=e.external_id,
        name=e.name,
        type=e.type,
        description=e.description,
        aliases=aliases,
        facts=pages["facts"],
        history=pages["history"],
        mention_count=mention_count,
        facts_total=totals["facts"],
        history_total=totals["history"],
    )


def facts(
    s: Session,
    *,
    entity: int | None = None,
    subject: int | None = None,
    relation: str | None = None,
    object: int | None = None,
    as_of: dt.date | None = None,
    include_closed: bool = False,
    ids: Sequence[int] | None = None,
    limit: int | None = 1000,
    offset: int = 0,
) -> list[FactView]:
    """Facts with names resolved, in id order, ``offset``/``limit`` applied after the filters.

    Default: current facts. ``as_of=D``: the facts believed on D (valid_from ≤ D < valid_to).
    ``include_closed``: current and closed alike (history). ``entity``: as subject or object.
    ``ids``: only these facts (any number; unknown ids are ignored).
    """
    subj, obj = aliased(Entity), aliased(Entity)
    q = (
        select(
            Fact,
            subj.external_id,
            subj.name,
            Relation.label,
            Relation.template,
            obj.external_id,
            obj.name,
            Source.name,
        )
        .join(subj, Fact.subject_id == subj.id)
        .join(Relation, Fact.relation_id == Relation.id)
        .outerjoin(obj, Fact.object_id == obj.id)
        .outerjoin(Source, Fact.source_id == Source.id)
        .where(*fact_filters(entity, subject, relation, object, as_of, include_closed))
    )
    q = q.order_by(Fact.id)
    if ids is None:
        q = q.offset(offset)
        if limit is not None:
            q = q.limit(limit)
        rows = list(s.execute(q).all())
    else:
        # An id list can be a whole ingest's new facts, so it is chunked. Sorted distinct ids make
        # the chunks' id-ordered rows one id-ordered list; the page is cut from it afterwards.
        rows = select_rows(s, q, Fact.id, sorted(set(ids)))
        rows = rows[offset:] if limit is None else rows[offset : offset + limit]
    return [
        FactView(
            id=f.id,
            subject_id=f.subject_id,
            subject_key=skey,
            subject=sname,
            relation_id=f.relation_id,
            relation=label,
            template=template,
            object_id=f.object_id,
            object_key=okey,
            object=oname if f.object_id is not None else (f.object_literal or ""),
            valid_from=f.valid_from,
            valid_to=f.valid_to,
            source=source,
            document_id=f.document_id,
            confidence=f.confidence,
            retraction_reason=f.retraction_reason,
        )
        for f, skey, sname, label, template, okey, oname, source in rows
    ]


def fact_filters(
    entity: int | None = None,
    subject: int | None = None,
    relation: str | None = None,
    object: int | None = None,
    as_of: dt.date | None = None,
    include_closed: bool = False,
) -> list[ColumnElement[bool]]:
    """The WHERE conditions of :func:`facts` (shared with :func:`count_facts`).

    Retracted facts were never true: they leave the current and as-of views, and stay in the history.
    """
    where: list[ColumnElement[bool]] = []
    if entity is not None:
        where.append(or_(Fact.subject_id == entity, Fact.object_id == entity))
    if subject is not None:
        where.append(Fact.subject_id == subject)
    if object is not None:
        where.append(Fact.object_id == object)
    if relation is not None:
        where.append(Fact.relation_id == relation)
    if as_of is not None:
        where += [
            or_(Fact.valid_from.is_(None), Fact.valid_from <= as_of),
            or_(Fact.valid_to.is_(None), Fact.valid_to > as_of),
            Fact.retracted_at.is_(None),
        ]
    elif not include_closed:
        where += [Fact.valid_to.is_(None), Fact.retracted_at.is_(None)]
    return where


def count_facts(
    s: Session,
    *,
    entity: int | None = None,
    subject: int | None = None,
    relation: str | None = None,
    object: int | None = None,
    as_of: dt.date | None = None,
    include_closed: bool = False,
) -> int:
    """How many facts :func:`facts` would list with these filters and no page limit."""
    where = fact_filters(entity, subject, relation, object, as_of, include_closed)
    return s.scalar(select(func.count()).select_from(Fact).where(*where)) or 0


def entities_named(s: Session, ref: str) -> list[dict[str, Any]]:
    """Every entity ``ref`` names exactly: by numeric id or external id (at most one), else by a
    name or alias (any number: a write must not guess between them). Dicts of ``id``, ``key``, ``name``."""
    if ref.isdigit() and (e := s.get(Entity, int(ref))) is not None:
        return [{"id": e.id, "key": e.external_id, "name": e.name}]
    by_key = s.execute(select(Entity.id, Entity.external_id, Entity.name).where(Entity.external_id == ref)).all()
    if by_key:
        return [{"id": i, "key": k, "name": n} for i, k, n in by_key]
    norm = normalise_alias(ref)
    if not norm:
        return []
    rows = s.execute(
        select(Entity.id, Entity.external_id, Entity.name)
        .join(Alias, Alias.entity_id == Entity.id)
        .where(Alias.normalised == norm)
        .distinct()
        .order_by(Entity.id)
    ).all()
    return [{"id": i, "key": k, "name": n} for i, k, n in rows]


def facts_in_order(s: Session, ids: Sequence[int]) -> list[FactView]:
    """The facts with these ids, current or closed, in the order of ``ids`` (unknown ids skipped)."""
    by_id = {f.id: f for f in facts(s, ids=ids, include_closed=True, limit=None)} if ids else {}
    return [by_id[i] for i in ids if i in by_id]


def neighbourhood_ids_as_of(
    s: Session, entity_id: int, hops: int, as_of: dt.date, max_fanout: int, max_facts: int
) -> list[int]:
    """Ids of the facts believed on ``as_of`` within ``hops`` of an entity, breadth-first, closest first.

    At most ``max_fanout`` facts per entity and ``max_facts`` in all; an unknown entity has none.
    """
    ids: list[int] = []
    frontier, seen = {entity_id}, {entity_id}
    for _ in range(hops):
        nxt: set[int] = set()
        for eid in sorted(frontier):
            for f in facts(s, entity=eid, as_of=as_of, limit=max_fanout):
                if f.id not in ids:
                    ids.append(f.id)
                for other in (f.subject_id, f.object_id):
                    if other is not None and other not in seen:
                        seen.add(other)
                        nxt.add(other)
        frontier = nxt
    return ids[:max_facts]


def relations(s: Session) -> list[dict[str, Any]]:
    """Every relation as a dict with ``id``, ``label``, ``template`` and ``functional``, by id."""
    return [
        {"id": r.id, "label": r.label, "template": r.template, "functional": r.functional}
        for r in s.scalars(select(Relation).order_by(Relation.id))
    ]


def max_fact_id(s: Session) -> int:
    """The highest fact id, 0 for no facts."""
    return s.scalar(select(func.max(Fact.id))) or 0


def aliases_after(s: Session, alias_id: int) -> list[tuple[int, str, int, float]]:
    """``(alias id, surface, entity id, prior)`` of the aliases with an id above ``alias_id``, by id."""
    rows = s.execute(
        select(Alias.id, Alias.surface, Alias.entity_id, Alias.prior).where(Alias.id > alias_id).order_by(Alias.id)
    ).all()
    return [(aid, surface, eid, prior) for aid, surface, eid, prior in rows]


def current_facts_after(s: Session, fact_id: int) -> list[GraphFact]:
    """The current facts with an id above ``fact_id``, by id, as graph edges."""
    rows = s.execute(
        select(Fact.id, Fact.subject_id, Fact.relation_id, Fact.object_id, Fact.object_literal)
        .where(Fact.id > fact_id, Fact.valid_to.is_(None), Fact.retracted_at.is_(None))
        .order_by(Fact.id)
    ).all()
    return [GraphFact(*row) for row in rows]


def last_closed_at(s: Session) -> dt.datetime | None:
    """When the most recently closed fact was closed; None if none ever was."""
    return s.scalar(select(func.max(Fact.closed_at)))


def facts_closed_since(s: Session, since: dt.datetime | None) -> list[tuple[int, dt.datetime]]:
    """``(fact id, closed_at)`` of the facts closed at or after ``since`` (every closed fact for None).

    At-or-after rather than after: facts closed in the same clock tick as the last one seen are
    not missed; removing a fact from the graph twice is harmless.
    """
    where = Fact.closed_at >= since if since is not None else Fact.closed_at.is_not(None)
    rows = s.execute(select(Fact.id, Fact.closed_at).where(where)).all()
    return [(fid, closed_at) for fid, closed_at in rows if closed_at is not None]


def stats(s: Session) -> dict[str, int]:
    """Row counts of every table (facts split into current and closed)."""

    def count(model: Any, *where: Any) -> int:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0

    return {
        "sources": count(Source),
        "documents": count(Document),
        "passages": count(Passage),
        "entities": count(Entity),
        "aliases": count(Alias),
        "relations": count(Relation),
        "facts_current": count(Fact, Fact.valid_to.is_(None), Fact.retracted_at.is_(None)),
        "facts_closed": count(Fact, Fact.valid_to.is_not(None)),
        "mentions": count(Mention),
        "update_runs": count(UpdateRun),
        "checkpoints": count(Checkpoint),
    }


def _like_prefix(norm: str) -> str:
    return norm.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
