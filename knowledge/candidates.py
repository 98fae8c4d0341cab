"""Answer candidates for a cloze query: which entities the graph proposes for its ``[MASK]``.

The encoder scores candidates; the store proposes them (DESIGN.md, "Entity-level answers"):

- **fitting relations**: the relations whose template and label share the most content words with
  the query (the subject's own words left out) — learned from the store's relations, nothing per
  relation in code;
- **type**: the entities a fitting relation takes as object across the store — its range — and
  the entities of the same type as those; facts of the query's own subjects do not count here, so
  closed-book candidates never come from the subject's facts;
- **fact**: (augmented only) the other end of the linked entities' facts whose relation fits;
- **passage**: (augmented only) the entities mentioned in the injected passages.

Every entity comes with its name and aliases as surface forms (``alias`` marks a surface other
than the name). Each function reads through the caller's session.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from knowledge.db import select_rows
from knowledge.models import Alias, Entity, Fact, Mention
from knowledge.views import FactView

_WORD = re.compile(r"\w+")
_STOP = frozenset("the a an of is was in on at to and by for as with its his her their [x] [y] x y mask".split())
SOURCES = ("fact", "passage", "type", "alias")


@dataclass(frozen=True)
class Candidate:
    """A surface form that may fill the ``[MASK]``: its text, the entity it names and where the
    candidate came from (one of :data:`SOURCES`)."""

    text: str
    entity_id: int | None
    source: str


def content_words(text: str) -> set[str]:
    """Lower-cased words of ``text`` without stop words and slot markers."""
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def fitting_relations(relations: Sequence[dict[str, Any]], query: str, subject_words: Iterable[str] = ()) -> list[str]:
    """Ids of the relations that fit ``query`` best: the highest Jaccard overlap between the query's
    content words (``subject_words`` left out) and the relation's template and label; none when no
    relation shares a word with the query."""
    q = content_words(query) - {w.lower() for w in subject_words}
    best, out = 0.0, []
    for r in relations:
        words = content_words(f"{r.get('template') or ''} {r.get('label') or ''}")
        if not q or not words:
            continue
        score = len(q & words) / len(q | words)
        if score > best + 1e-9:
            best, out = score, [r["id"]]
        elif score > 0 and abs(score - best) <= 1e-9:
            out.append(r["id"])
    return out


class RangeCounts:
    """What the store proposes for every query, kept per process: how often each object (entity
    id, or literal value) appears in the facts of a set of relations, most frequent first (one
    grouped query over the relation's index range), and the surface forms of the entities
    proposed. Both are read again when the store moved on — a fact or an alias was added (a
    rename adds one) — or after ``ttl_seconds`` (edits that leave both alone, such as a merge).
    Thread-safe; at most ``size`` relation sets and ``max_surfaces`` entities are kept."""

    def __init__(self, ttl_seconds: float = 60.0, size: int = 64, max_surfaces: int = 200_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.size = size
        self.max_surfaces = max_surfaces
        self._lock = threading.Lock()
        self._kept: OrderedDict[tuple[tuple[str, ...], bool], tuple[tuple[int, int], float, list[tuple[Any, int]]]] = (
            OrderedDict()
        )
        self._surfaces: dict[int, list[tuple[str, bool]]] = {}
        self._surfaces_since: tuple[tuple[int, int], float] = ((-1, -1), 0.0)

    def read(self, s: Session) -> RangeRead:
        """The rankings and surfaces as the store stands now, for one query's reads through ``s``
        (the store's version is looked up once)."""
        version = (s.scalar(select(func.max(Fact.id))) or 0, s.scalar(select(func.max(Alias.id))) or 0)
        return RangeRead(self, s, version)

    def _ranked(
        self, s: Session, relation_ids: Sequence[str], literal: bool, version: tuple[int, int]
    ) -> list[tuple[Any, int]]:
        key = (tuple(sorted(set(relation_ids))), literal)
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[0] == version and now - kept[1] < self.ttl_seconds:
                self._kept.move_to_end(key)
                return kept[2]
        ranked = _ranking(_object_counts(s, key[0], literal))
        with self._lock:
            self._kept[key] = (version, now, ranked)
            self._kept.move_to_end(key)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return ranked

    def _surfaces_of(
        self, s: Session, entity_ids: Sequence[int], version: tuple[int, int]
    ) -> dict[int, list[tuple[str, bool]]]:
        now = time.monotonic()
        with self._lock:
            since, at = self._surfaces_since
            if since != version or now - at >= self.ttl_seconds or len(self._surfaces) > self.max_surfaces:
                self._surfaces, self._surfaces_since = {}, (version, now)
            known = self._surfaces
            missing = [e for e in dict.fromkeys(entity_ids) if e not in known]
        read = surfaces(s, missing) if missing else {}
        with self._lock:
            if self._surfaces is known:
                known.update(read)
                known.update((e, []) for e in missing if e not in read)  # unknown ids: remembered as such
        return {e: known[e] if e in known else read.get(e, []) for e in entity_ids}


@dataclass(frozen=True)
class RangeRead:
    """:class:`RangeCounts` at one version of the store, read through one session."""

    ranges: RangeCounts
    s: Session
    version: tuple[int, int]

    def ranked(self, relation_ids: Sequence[str], literal: bool) -> list[tuple[Any, int]]:
        """``(object, count)`` over every fact (current or closed) of ``relation_ids``, most frequent first."""
        return self.ranges._ranked(self.s, relation_ids, literal, self.version)

    def surfaces(self, entity_ids: Sequence[int]) -> dict[int, list[tuple[str, bool]]]:
        """:func:`surfaces` of the entities, those read before (at this version) from memory."""
        return self.ranges._surfaces_of(self.s, entity_ids, self.version)


def _object_column(literal: bool) -> InstrumentedAttribute[Any]:
    return Fact.object_literal if literal else Fact.object_id


def _object_counts(
    s: Session, relation_ids: Sequence[str], literal: bool, subjects: Sequence[int] = ()
) -> list[tuple[Any, int]]:
    """How often each object appears in facts of ``relation_ids`` (of ``subjects`` only, if given)."""
    column = _object_column(literal)
    stmt = select(column, func.count()).where(Fact.relation_id.in_(relation_ids), column.is_not(None))
    if subjects:
        stmt = stmt.where(Fact.subject_id.in_(subjects))
    return [(obj, int(n)) for obj, n in s.execute(stmt.group_by(column)).all()]


def _ranking(counts: Iterable[tuple[Any, int]]) -> list[tuple[Any, int]]:
    return sorted(counts, key=lambda r: (-r[1], r[0]))


def _top_without(
    s: Session,
    kept: RangeRead | None,
    relation_ids: Sequence[str],
    exclude_subjects: Sequence[int],
    limit: int,
    literal: bool,
) -> list[Any]:
    """The ``limit`` objects most frequent in facts of ``relation_ids`` whose subject is not one of
    ``exclude_subjects`` (ties by object): the relation's ranking less what those subjects add."""
    ranked = (
        kept.ranked(relation_ids, literal) if kept is not None else _ranking(_object_counts(s, relation_ids, literal))
    )
    own = dict(_object_counts(s, relation_ids, literal, exclude_subjects)) if exclude_subjects else {}
    # Objects the excluded subjects point at can only fall in the ranking; the others keep their
    # order. So the first ``limit`` others plus the lowered ones seen before them, re-sorted, are
    # exactly the ranking without those subjects.
    others: list[tuple[Any, int]] = []
    lowered: list[tuple[Any, int]] = []
    for obj, n in ranked:
        if len(others) >= limit:
            break
        if obj in own:
            if n > own[obj]:
                lowered.append((obj, n - own[obj]))
        else:
            others.append((obj, n))
    return [obj for obj, _ in _ranking(others + lowered)[:limit]]


def relation_range(
    s: Session,
    relation_ids: Sequence[str],
    exclude_subjects: Sequence[int],
    limit: int,
    kept: RangeRead | None = None,
) -> list[int]:
    """Entities the relations take as object in facts (current or closed) of other subjects than
    ``exclude_subjects``, most frequent first, then the entities sharing a type with them; at most
    ``limit``."""
    if not relation_ids:
        return []
    out: list[int] = _top_without(s, kept, relation_ids, exclude_subjects, limit, literal=False)
    if out and len(out) < limit:
        types = {t for (t,) in select_rows(s, select(Entity.type), Entity.id, out) if t}
        if types:
            seen = set(out)
            typed = s.scalars(
                select(Entity.id).where(Entity.type.in_(sorted(types))).order_by(Entity.id).limit(limit + len(seen))
            )
            out += [e for e in typed if e not in seen][: limit - len(out)]
    return out


def surfaces(s: Session, entity_ids: Sequence[int]) -> dict[int, list[tuple[str, bool]]]:
    """``(surface, is_name)`` of each entity: its name first, then its other aliases."""
    out: dict[int, list[tuple[str, bool]]] = {}
    for eid, name in select_rows(s, select(Entity.id, Entity.name), Entity.id, list(entity_ids)):
        out[eid] = [(name, True)]
    for eid, surface in select_rows(s, select(Alias.entity_id, Alias.surface), Alias.entity_id, list(entity_ids)):
        known = out.setdefault(eid, [])
        if all(surface.lower() != t.lower() for t, _ in known):
            known.append((surface, False))
    return out


def answer_candidates(
    s: Session,
    relations: Sequence[dict[str, Any]],
    query: str,
    subject_ids: Sequence[int],
    subject_words: Iterable[str] = (),
    facts: Sequence[FactView] = (),
    passage_ids: Sequence[int] = (),
    limit: int = 2000,
    ranges: RangeCounts | None = None,
) -> list[Candidate]:
    """The candidates for the ``[MASK]`` of ``query`` whose linked entities are ``subject_ids``:
    ``facts`` and ``passage_ids`` are the knowledge injected with it (none for closed-book). Best
    sources first (fact, passage, type); each entity once, with all its surfaces; at most ``limit``
    entities. ``ranges``: the process's kept relation rankings (none: read them now)."""
    fitting = fitting_relations(relations, query, subject_words)
    kept = ranges.read(s) if ranges is not None else None
    subjects = set(subject_ids)
    ordered: dict[int, str] = {}  # entity id -> source, in order of preference
    literals: dict[str, str] = {}  # literal objects ("Republic of Türkiye") -> source
    for f in facts:
        if f.relation_id not in fitting:
            continue
        if f.object_id is None and f.subject_id in subjects:
            literals.setdefault(f.object, "fact")
            continue
        other = f.object_id if f.subject_id in subjects else f.subject_id if f.object_id in subjects else None
        if other is not None and other not in subjects:
            ordered.setdefault(other, "fact")
    if passage_ids:
        stmt = select(Mention.entity_id).order_by(Mention.passage_id, Mention.start)
        for (eid,) in select_rows(s, stmt, Mention.passage_id, list(passage_ids)):
            if eid not in subjects:
                ordered.setdefault(eid, "passage")
    for eid in relation_range(s, fitting, sorted(subjects), limit, kept):
        ordered.setdefault(eid, "type")
    for literal in literal_range(s, fitting, sorted(subjects), limit, kept):
        literals.setdefault(literal, "type")
    chosen = list(ordered)[:limit]
    names = kept.surfaces(chosen) if kept is not None else surfaces(s, chosen)
    out = []
    for eid in chosen:
        for surface, is_name in names.get(eid, []):
            out.append(Candidate(surface, eid, ordered[eid] if is_name else "alias"))
    out += [Candidate(text, None, source) for text, source in list(literals.items())[:limit]]
    return out


def literal_range(
    s: Session,
    relation_ids: Sequence[str],
    exclude_subjects: Sequence[int],
    limit: int,
    kept: RangeRead | None = None,
) -> list[str]:
    """Literal objects (values, not entities) the relations take in facts of other subjects than
    ``exclude_subjects``, most frequent first; at most ``limit``."""
    if not relation_ids:
        return []
    return [t for t in _top_without(s, kept, relation_ids, exclude_subjects, limit, literal=True) if t]
