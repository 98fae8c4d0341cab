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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

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


def relation_range(s: Session, relation_ids: Sequence[str], exclude_subjects: Sequence[int], limit: int) -> list[int]:
    """Entities the relations take as object in facts (current or closed) of other subjects than
    ``exclude_subjects``, most frequent first, then the entities sharing a type with them; at most
    ``limit``."""
    if not relation_ids:
        return []
    stmt = select(Fact.object_id, Fact.subject_id).where(Fact.object_id.is_not(None))
    counts: dict[int, int] = {}
    excluded = set(exclude_subjects)
    for object_id, subject_id in select_rows(s, stmt, Fact.relation_id, list(relation_ids)):
        if subject_id not in excluded and object_id is not None:
            counts[object_id] = counts.get(object_id, 0) + 1
    ranked = sorted(counts, key=lambda e: (-counts[e], e))
    out = ranked[:limit]
    if len(out) < limit and ranked:
        types = {t for t in select_rows(s, select(Entity.type), Entity.id, ranked) for t in t if t}
        if types:
            seen = set(out)
            typed = select_rows(s, select(Entity.id).order_by(Entity.id), Entity.type, sorted(types))
            out += [e for (e,) in typed if e not in seen][: limit - len(out)]
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
) -> list[Candidate]:
    """The candidates for the ``[MASK]`` of ``query`` whose linked entities are ``subject_ids``:
    ``facts`` and ``passage_ids`` are the knowledge injected with it (none for closed-book). Best
    sources first (fact, passage, type); each entity once, with all its surfaces; at most ``limit``
    entities."""
    fitting = fitting_relations(relations, query, subject_words)
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
    for eid in relation_range(s, fitting, sorted(subjects), limit):
        ordered.setdefault(eid, "type")
    for literal in literal_range(s, fitting, sorted(subjects), limit):
        literals.setdefault(literal, "type")
    chosen = list(ordered)[:limit]
    names = surfaces(s, chosen)
    out = []
    for eid in chosen:
        for surface, is_name in names.get(eid, []):
            out.append(Candidate(surface, eid, ordered[eid] if is_name else "alias"))
    out += [Candidate(text, None, source) for text, source in list(literals.items())[:limit]]
    return out


def literal_range(s: Session, relation_ids: Sequence[str], exclude_subjects: Sequence[int], limit: int) -> list[str]:
    """Literal objects (values, not entities) the relations take in facts of other subjects than
    ``exclude_subjects``, most frequent first; at most ``limit``."""
    if not relation_ids:
        return []
    stmt = select(Fact.object_literal, Fact.subject_id).where(Fact.object_literal.is_not(None))
    counts: dict[str, int] = {}
    excluded = set(exclude_subjects)
    for literal, subject_id in select_rows(s, stmt, Fact.relation_id, list(relation_ids)):
        if subject_id not in excluded and literal:
            counts[literal] = counts.get(literal, 0) + 1
    return sorted(counts, key=lambda t: (-counts[t], t))[:limit]
