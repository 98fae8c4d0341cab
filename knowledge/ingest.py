"""Writes: relation, entity and fact upserts, documents with their passages and mentions, relinking
and deletion. Bulk Core inserts rather than one ORM object at a time.

Each function works inside the caller's session and transaction, and counts what it did in the
caller's :class:`~knowledge.views.IngestSummary`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from knowledge import schedule
from knowledge.chunking import Chunk, chunk_text
from knowledge.db import execute_in, select_rows, select_scalars, utcnow
from knowledge.linker import EntityLinker, normalise_alias
from knowledge.models import Alias, Document, Entity, Fact, Mention, Passage, PassageVector, Relation, Source
from knowledge.readers import (
    DocumentRecord,
    EntityRecord,
    FactRecord,
    IngestIssue,
    ReadBatch,
    RelationRecord,
    iter_input_files,
    read_file,
)
from knowledge.views import IngestSummary


class _PassageRow(TypedDict):
    """One passage as inserted (``Passage`` columns)."""

    document_id: int
    ordinal: int
    text: str
    char_start: int
    char_end: int
    token_count: int


# The tables behind the models, for Core inserts (DeclarativeBase annotates ``__table__`` as any
# FromClause, since a class may map a join; these map plain tables).
_DOCUMENT = cast(Table, Document.__table__)
_PASSAGE = cast(Table, Passage.__table__)
_MENTION = cast(Table, Mention.__table__)
_PASSAGE_VECTOR = cast(Table, PassageVector.__table__)


def read_in_order(paths: Iterable[Path]) -> list[tuple[Path, ReadBatch]]:
    """Every input file under ``paths`` with its read batch, in the order to write them.

    Files defining relations first, then entities, then facts, then documents (ties keep file
    order): feeds and corpora given together resolve regardless of the order of their file names.
    Unreadable files and records come back as issues in their batch, never as exceptions.
    """
    files = list(iter_input_files([Path(p) for p in paths]))
    batches = [read_file(f) for f in files]

    def rank(b: ReadBatch) -> int:
        return 0 if b.relations else 1 if b.entities else 2 if b.facts else 3

    order = sorted(range(len(files)), key=lambda i: (rank(batches[i]), i))
    return [(files[i], batches[i]) for i in order]


def upsert_relations(s: Session, records: Sequence[RelationRecord], summary: IngestSummary) -> None:
    """Insert new relations and update changed ones; the last definition in ``records`` wins."""
    if not records:
        return
    latest = {r.id: r for r in records}
    existing = {r.id: r for r in select_scalars(s, select(Relation), Relation.id, list(latest))}
    new_rows = []
    for rid, r in latest.items():
        row = existing.get(rid)
        if row is None:
            new_rows.append({"id": rid, "label": r.label, "template": r.template, "functional": r.functional})
        elif (row.label, row.template, row.functional) != (r.label, r.template, r.functional):
            row.label, row.template, row.functional = r.label, r.template, r.functional
            summary.relations_updated += 1
    if new_rows:
        s.execute(insert(Relation), new_rows)
        summary.relations_added += len(new_rows)
    s.flush()


def upsert_entities(s: Session, records: Sequence[EntityRecord], summary: IngestSummary) -> None:
    """Insert new entities, update changed ones, and add their names and aliases to the gazetteer.

    Repeated definitions of one entity in ``records`` merge their aliases (the records' ``aliases``
    lists are extended in place). A missing type or description keeps the stored one.
    """
    if not records:
        return
    latest: dict[str, EntityRecord] = {}
    for r in records:
        if r.id in latest:
            r.aliases = latest[r.id].aliases + r.aliases
        latest[r.id] = r
    ids = entity_ids(s, latest)
    new = [k for k in latest if k not in ids]
    if new:
        rows = [
            {"external_id": k, "name": latest[k].name, "type": latest[k].type, "description": latest[k].description}
            for k in new
        ]
        result = s.execute(insert(Entity).returning(Entity.id, sort_by_parameter_order=True), rows)
        ids.update(zip(new, result.scalars()))
        summary.entities_added += len(new)
    changed = []
    for k in set(latest) - set(new):
        r = latest[k]
        changed.append((ids[k], r))
    if changed:
        current = {e.id: e for e in select_scalars(s, select(Entity), Entity.id, [i for i, _ in changed])}
        updates = []
        for eid, r in changed:
            e = current[eid]
            desc = r.description if r.description is not None else e.description
            typ = r.type if r.type is not None else e.type
            if (e.name, e.type, e.description) != (r.name, typ, desc):
                updates.append({"id": eid, "name": r.name, "type": typ, "description": desc, "updated_at": utcnow()})
        if updates:
            s.execute(update(Entity), updates)
            summary.entities_updated += len(updates)
    # Aliases: the name (prior 1.0) and listed aliases (0.5); existing ones are kept, so an
    # old name still links after a rename.
    wanted: dict[tuple[int, str], dict[str, Any]] = {}
    for k, r in latest.items():
        for surface, prior in [(r.name, 1.0)] + [(a, 0.5) for a in r.aliases]:
            norm = normalise_alias(surface)
            if norm and (ids[k], norm) not in wanted:
                wanted[(ids[k], norm)] = {
                    "entity_id": ids[k],
                    "surface": surface,
                    "normalised": norm,
                    "prior": prior,
                }
    have = {
        (a.entity_id, a.normalised)
        for a in select_scalars(s, select(Alias), Alias.entity_id, sorted({eid for eid, _ in wanted}))
    }
    alias_rows = [row for key, row in wanted.items() if key not in have]
    if alias_rows:
        s.execute(insert(Alias), alias_rows)
    s.flush()


def add_facts(s: Session, records: Sequence[FactRecord], summary: IngestSummary) -> None:
    """Add facts; a new object for a functional relation closes the current fact.

    Records naming an unknown relation or entity, or relating an entity to itself, are reported in
    ``summary.issues`` and skipped. A fact already stored (current, or closed with the same
    ``valid_from``) counts as unchanged. A fact dated after today is kept aside until its day
    (:mod:`knowledge.schedule`); scheduled facts whose day has come are added first.
    """
    today = dt.date.today()
    records = [*schedule.take_due(s, today), *records]
    if not records:
        return
    relations = {r.id: r for r in s.scalars(select(Relation))}
    keys = {r.subject for r in records} | {r.object for r in records if r.object}
    ids = entity_ids(s, keys)
    sources = _source_ids(s, {r.source for r in records if r.source}, kind="feed")
    valid: list[tuple[FactRecord, int, int | None]] = []
    for r in records:
        where = r.origin or "fact"
        if r.relation not in relations:
            summary.issues.append(
                _issue(where, f"unknown relation {r.relation!r}: define it in a relation record first")
            )
        elif r.subject not in ids:
            summary.issues.append(_issue(where, f"unknown subject entity {r.subject!r}"))
        elif r.object is not None and r.object not in ids:
            summary.issues.append(_issue(where, f"unknown object entity {r.object!r} (use object_literal for a value)"))
        elif r.object is not None and ids[r.object] == ids[r.subject]:
            summary.issues.append(
                _issue(where, f"{r.subject!r} {r.relation} {r.object!r} relates an entity to itself; check the object")
            )
        else:
            valid.append((r, ids[r.subject], ids.get(r.object) if r.object else None))
    future = [r for r, _, _ in valid if r.valid_from is not None and r.valid_from > today]
    if future:
        schedule.schedule(s, future, summary)
        valid = [v for v in valid if v[0].valid_from is None or v[0].valid_from <= today]
    if not valid:
        return
    # Everything already known about these subjects, closed facts included (for idempotency).
    known: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    known_rows = select_rows(
        s,
        select(
            Fact.id,
            Fact.subject_id,
            Fact.relation_id,
            Fact.object_id,
            Fact.object_literal,
            Fact.valid_from,
            Fact.valid_to,
        ).where(Fact.retracted_at.is_(None)),  # a retracted fact was never stated: it can be stated again
        Fact.subject_id,
        sorted({sid for _, sid, _ in valid}),
    )
    for fid, sid, rid, oid, lit, vf, vt in known_rows:
        known[(sid, rid)].append({"id": fid, "object_id": oid, "object_literal": lit, "valid_from": vf, "valid_to": vt})
    pending: list[dict[str, Any]] = []
    closes: dict[int, dt.date] = {}
    for r, sid, oid in valid:
        facts = known[(sid, r.relation)]
        same = [f for f in facts if f["object_id"] == oid and f["object_literal"] == r.object_literal]
        current = [f for f in facts if f["valid_to"] is None]
        if any(f["valid_to"] is None for f in same):
            summary.facts_unchanged += 1
            continue
        if same and any(f["valid_from"] == r.valid_from for f in same):
            summary.facts_unchanged += 1  # this closed fact is already in the history
            continue
        row = {
            "subject_id": sid,
            "relation_id": r.relation,
            "object_id": oid,
            "object_literal": r.object_literal,
            "valid_from": r.valid_from,
            "valid_to": None,
            "source_id": sources.get(r.source) if r.source else None,
            "confidence": r.confidence,
            "closed_at": None,
        }
        if relations[r.relation].functional and current:
            cur = current[0]
            if r.valid_from and cur["valid_from"] and r.valid_from < cur["valid_from"]:
                # An older statement arriving late: it joins the history, already closed.
                row["valid_to"] = cur["valid_from"]
            else:
                cur["valid_to"] = r.valid_from or today
                cur["closed_at"] = utcnow()
                if "id" in cur:  # in SQL already; a row of this batch is closed in place
                    closes[cur["id"]] = cur["valid_to"]
        pending.append(row)
        facts.append(row)  # later records of the batch see it (same dict is inserted)
    if closes:
        now = utcnow()
        s.execute(update(Fact), [{"id": i, "valid_to": d, "closed_at": now} for i, d in closes.items()])
        summary.facts_closed += len(closes)
        summary.closed_fact_ids += list(closes)
    if pending:
        # Core insert, RETURNING without ordering: only the set of new ids is needed, and
        # asking SQLite for parameter order makes SQLAlchemy send one row per statement.
        # DeclarativeBase annotates __table__ as any FromClause (a class may map a join); Fact maps a Table
        fact_table = cast(Table, Fact.__table__)
        result = s.execute(insert(fact_table).returning(fact_table.c.id), pending)
        new_ids = sorted(result.scalars())
        summary.facts_added += len(new_ids)
        summary.new_fact_ids += new_ids
    s.flush()


@dataclass(frozen=True)
class PassageVectors:
    """Vectors one embedder made for chunk texts (text → little-endian float32 bytes)."""

    embedder: str
    by_text: Mapping[str, bytes]


def content_hash(text: str) -> str:
    """The hash a document is deduplicated by (its text without surrounding whitespace)."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


def known_content_hashes(s: Session, hashes: Sequence[str]) -> set[str]:
    """Those of ``hashes`` that a stored document already has."""
    return set(select_scalars(s, select(Document.content_hash), Document.content_hash, list(hashes)))


@dataclass(frozen=True)
class NewDocument:
    """A document about to be stored, with its content hash and passages worked out once: a write
    reads the store before its transaction (to embed only what is new) and again inside it."""

    content_hash: str
    record: DocumentRecord
    chunks: list[Chunk]


def prepare_documents(
    records: Sequence[DocumentRecord],
    summary: IngestSummary,
    max_passage_tokens: int,
    count_tokens: Callable[[str], int],
) -> list[NewDocument]:
    """The distinct documents of ``records`` (by content hash, first one kept), chunked.

    A document with no text but whitespace is reported in ``summary.issues`` and left out; a
    repeat of an earlier record counts as unchanged. Reads no SQL.
    """
    by_hash: dict[str, DocumentRecord] = {}
    for r in records:
        if not r.text.strip():
            summary.issues.append(_issue(r.origin or "document", "the document has no text (only whitespace)"))
            continue
        by_hash.setdefault(content_hash(r.text), r)
    summary.documents_unchanged += sum(1 for r in records if r.text.strip()) - len(by_hash)
    return [NewDocument(h, r, chunk_text(r.text, max_passage_tokens, count_tokens)) for h, r in by_hash.items()]


def new_chunk_texts(s: Session, docs: Sequence[NewDocument]) -> list[str]:
    """The distinct passage texts that :func:`add_documents` would add for ``docs`` now (documents
    already stored left out), in first-seen order."""
    known = known_content_hashes(s, [d.content_hash for d in docs])
    return list(dict.fromkeys(c.text for d in docs if d.content_hash not in known for c in d.chunks))


def add_documents(
    s: Session,
    docs: Sequence[NewDocument],
    summary: IngestSummary,
    linker: EntityLinker,
    vectors: PassageVectors | None = None,
) -> list[int]:
    """Store documents (those whose content no stored document has), their passages and the
    linker's mentions in them.

    Returns the ids of the new passages in insertion order (already-known documents add none).
    ``vectors``: made for the chunks before this transaction; each new passage whose text has one
    gets it stored beside it. The inserts go through the session's connection as Core statements:
    a request that adds one document pays for each statement, and the ORM's bulk path costs about
    as much again as the SQL for rows that need no ORM objects.
    """
    existing = known_content_hashes(s, [d.content_hash for d in docs])
    todo = [d for d in docs if d.content_hash not in existing]
    summary.documents_unchanged += len(docs) - len(todo)
    if not todo:
        return []
    conn = s.connection()
    sources = _source_ids(s, {d.record.source for d in todo if d.record.source}, kind="corpus")
    doc_rows = [
        {
            "content_hash": d.content_hash,
            "text": d.record.text,
            "title": d.record.title,
            "external_id": d.record.external_id,
            "published_at": d.record.published_at,
            "source_id": sources.get(d.record.source) if d.record.source else None,
        }
        for d in todo
    ]
    doc_ids = list(
        conn.execute(insert(_DOCUMENT).returning(_DOCUMENT.c.id, sort_by_parameter_order=True), doc_rows).scalars()
    )
    passage_rows: list[_PassageRow] = [
        {
            "document_id": doc_id,
            "ordinal": ordinal,
            "text": chunk.text,
            "char_start": chunk.start,
            "char_end": chunk.end,
            "token_count": chunk.token_count,
        }
        for doc_id, d in zip(doc_ids, todo, strict=True)
        for ordinal, chunk in enumerate(d.chunks)
    ]
    new_passages: list[int] = []
    if passage_rows:
        new_passages = list(
            conn.execute(
                insert(_PASSAGE).returning(_PASSAGE.c.id, sort_by_parameter_order=True), passage_rows
            ).scalars()
        )
    mention_rows = [
        {"passage_id": pid, "entity_id": m.entity_id, "start": m.start, "end": m.end, "surface": m.surface}
        for pid, row in zip(new_passages, passage_rows)
        for m in linker.link(row["text"])
    ]
    if mention_rows:
        conn.execute(insert(_MENTION), mention_rows)
    if vectors is not None:
        stored = [
            (pid, vectors.by_text[row["text"]])
            for pid, row in zip(new_passages, passage_rows)
            if row["text"] in vectors.by_text
        ]
        if stored:
            vector_rows = [{"passage_id": pid, "embedder": vectors.embedder, "vector": v} for pid, v in stored]
            conn.execute(insert(_PASSAGE_VECTOR), vector_rows)
            summary.stored_vectors += [(pid, vectors.embedder, vector) for pid, vector in stored]
    summary.documents_added += len(doc_ids)
    summary.passages_added += len(new_passages)
    summary.mentions_added += len(mention_rows)
    summary.new_passage_ids += new_passages
    return new_passages


def relink_passages(s: Session, linker: EntityLinker, passage_ids: Sequence[int] | None = None) -> int:
    """Replace the mentions of the given passages (all by default) with ``linker``'s links.

    Unknown ids are ignored. Returns the number of mentions written.
    """
    q = select(Passage.id, Passage.text).order_by(Passage.id)
    # Sorted distinct ids: each chunk comes back in id order, so the chunks together do too.
    rows = s.execute(q).all() if passage_ids is None else select_rows(s, q, Passage.id, sorted(set(passage_ids)))
    execute_in(s, delete(Mention), Mention.passage_id, [r[0] for r in rows])
    mention_rows = [
        {"passage_id": pid, "entity_id": m.entity_id, "start": m.start, "end": m.end, "surface": m.surface}
        for pid, t in rows
        for m in linker.link(t)
    ]
    if mention_rows:
        s.execute(insert(Mention), mention_rows)
    return len(mention_rows)


def delete_document(s: Session, document_id: int) -> list[int]:
    """Delete a document with its passages and mentions, detaching facts that cite it.

    Returns the removed passage ids (empty for an unknown document, which is not an error).
    """
    pids = list(s.scalars(select(Passage.id).where(Passage.document_id == document_id)))
    execute_in(s, delete(Mention), Mention.passage_id, pids)
    execute_in(s, delete(PassageVector), PassageVector.passage_id, pids)
    execute_in(s, delete(Passage), Passage.id, pids)
    s.execute(update(Fact).where(Fact.document_id == document_id).values(document_id=None))
    s.execute(delete(Document).where(Document.id == document_id))
    return pids


def entity_ids(s: Session, keys: Iterable[str]) -> dict[str, int]:
    """Internal ids by external id, for those of ``keys`` that are stored (unknown keys are left out)."""
    return dict(select_rows(s, select(Entity.external_id, Entity.id), Entity.external_id, sorted(set(keys))))


def _source_ids(s: Session, names: set[str], kind: str) -> dict[str, int]:
    if not names:
        return {}
    have: dict[str, int] = dict(select_rows(s, select(Source.name, Source.id), Source.name, sorted(names)))
    missing = sorted(names - set(have))
    if missing:
        result = s.execute(
            insert(Source).returning(Source.id, sort_by_parameter_order=True),
            [{"name": n, "kind": kind} for n in missing],
        )
        have.update(zip(missing, result.scalars()))
    return have


def _issue(origin: str, reason: str) -> IngestIssue:
    path, _, line = origin.rpartition(":")
    if path and line.isdigit():
        return IngestIssue(path, int(line), reason)
    return IngestIssue(origin, None, reason)
