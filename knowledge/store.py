"""The knowledge store: SQL (source of truth) with an in-memory graph view and alias gazetteer.

``KnowledgeStore.open(url)`` migrates the database to the newest schema, then every write goes
through a few batch methods (``ingest_batch``, ``upsert_entities``, ``add_facts``,
``add_documents``) that use bulk Core inserts rather than one ORM object at a time. The graph view
(:class:`~knowledge.graph.FactGraph`) and the linker (:class:`~knowledge.linker.EntityLinker`) are
caught up incrementally from SQL watermarks (new fact and alias ids, newly closed facts), so they
stay in step with writes made by this process or any other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, insert, or_, select, text, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from knowledge.chunking import approximate_token_count, chunk_text
from knowledge.graph import FactGraph, GraphFact, verbalise
from knowledge.linker import EntityLinker, LinkedMention, normalise_alias
from knowledge.models import (
    Alias,
    Base,
    Checkpoint,
    Document,
    Entity,
    Fact,
    Mention,
    Passage,
    Relation,
    Source,
    UpdateLock,
    UpdateRun,
)
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

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
_SQLITE_VARS = 900  # stay well under SQLite's bound-parameter limit in IN (...) lists
_STOPWORDS = frozenset(
    "a an and are as at be by for from has have he her his in is it its of on or she that the their "
    "this to was were which who will with mask".split()
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


# ----------------------------------------------------------------------------- results


@dataclass
class IngestSummary:
    """What one ingest did: counts of what went in, what was already there, and what was skipped."""

    files: int = 0
    documents_added: int = 0
    documents_unchanged: int = 0
    passages_added: int = 0
    mentions_added: int = 0
    entities_added: int = 0
    entities_updated: int = 0
    relations_added: int = 0
    relations_updated: int = 0
    facts_added: int = 0
    facts_closed: int = 0
    facts_unchanged: int = 0
    new_passage_ids: list[int] = field(default_factory=list)
    new_fact_ids: list[int] = field(default_factory=list)
    closed_fact_ids: list[int] = field(default_factory=list)
    issues: list[IngestIssue] = field(default_factory=list)

    def merge(self, other: IngestSummary) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


@dataclass(frozen=True)
class FactView:
    """A fact with its names resolved, as the CLI, API and query pipeline show it."""

    id: int
    subject_id: int
    subject_key: str
    subject: str
    relation_id: str
    relation: str
    template: str | None
    object_id: int | None
    object_key: str | None
    object: str
    valid_from: dt.date | None
    valid_to: dt.date | None
    source: str | None
    document_id: int | None
    confidence: float

    @property
    def is_current(self) -> bool:
        return self.valid_to is None

    def verbalise(self) -> str:
        """The fact as a sentence through its relation's cloze template."""
        template = self.template or f"[X] {self.relation} [Y] ."
        return verbalise(template, self.subject, self.object)

    def to_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["valid_from"] = self.valid_from.isoformat() if self.valid_from else None
        d["valid_to"] = self.valid_to.isoformat() if self.valid_to else None
        d["text"] = self.verbalise()
        return d


@dataclass(frozen=True)
class EntityView:
    id: int
    key: str
    name: str
    type: str | None
    description: str | None
    aliases: list[str]
    facts: list[FactView]  # current facts where the entity is subject or object
    history: list[FactView]  # closed facts, newest first
    mention_count: int

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in vars(self).items() if k not in {"facts", "history"}}
        d["facts"] = [f.to_dict() for f in self.facts]
        d["history"] = [f.to_dict() for f in self.history]
        return d


@dataclass(frozen=True)
class PassageInfo:
    id: int
    document_id: int
    text: str
    title: str | None
    source: str | None
    published_at: dt.date | None
    document_key: str | None = None


# ----------------------------------------------------------------------------- engine + migrations


def make_engine(url: str, echo: bool = False) -> Engine:
    """A SQLAlchemy engine; SQLite gets WAL, foreign keys and a busy timeout (API + scheduler share it)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (users keep their store across upgrades)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


# ----------------------------------------------------------------------------- the store


class KnowledgeStore:
    """Entities, relations, facts (with time and provenance), documents, passages and mentions."""

    def __init__(
        self,
        engine: Engine,
        count_tokens: Callable[[str], int] | None = None,
        max_passage_tokens: int = 96,
    ) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.count_tokens = count_tokens or approximate_token_count
        self.max_passage_tokens = max_passage_tokens
        self._lock = threading.RLock()  # guards the in-memory views' catch-up
        self._graph: FactGraph | None = None
        self._graph_fact_watermark = 0
        self._graph_closed_watermark: dt.datetime | None = None
        self._linker: EntityLinker | None = None
        self._linker_watermark = 0

    @classmethod
    def open(
        cls,
        url: str,
        *,
        run_migrations: bool = True,
        count_tokens: Callable[[str], int] | None = None,
        max_passage_tokens: int = 96,
        echo: bool = False,
    ) -> KnowledgeStore:
        """Connect to ``url`` (any SQLAlchemy URL) and migrate it to the newest schema."""
        engine = make_engine(url, echo=echo)
        if run_migrations:
            migrate(engine)
        return cls(engine, count_tokens=count_tokens, max_passage_tokens=max_passage_tokens)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Session:
        return self.sessions()

    # ------------------------------------------------------------------ ingest

    def ingest_paths(
        self, paths: Iterable[Path], on_file: Callable[[Path, IngestSummary], None] | None = None
    ) -> IngestSummary:
        """Read and write every file under ``paths``, one file per transaction.

        Feeds are written before corpora so documents link against entities of the same batch.
        A bad file or record is reported in ``issues`` and skipped; everything else goes in.
        """
        files = list(iter_input_files([Path(p) for p in paths]))
        batches = [read_file(f) for f in files]

        # Files defining relations first, then entities, then facts, then documents: feeds and
        # corpora given together resolve regardless of the order of their file names.
        def rank(b: ReadBatch) -> int:
            return 0 if b.relations else 1 if b.entities else 2 if b.facts else 3

        order = sorted(range(len(files)), key=lambda i: (rank(batches[i]), i))
        total = IngestSummary()
        for i in order:
            summary = self.ingest_batch(batches[i])
            summary.files = 1
            total.merge(summary)
            if on_file is not None:
                on_file(files[i], summary)
        return total

    def ingest_batch(self, batch: ReadBatch) -> IngestSummary:
        """Write one read batch (relations → entities → facts → documents) in one transaction."""
        summary = IngestSummary(issues=list(batch.issues))
        with self.session() as s, s.begin():
            self._upsert_relations(s, batch.relations, summary)
            self._upsert_entities(s, batch.entities, summary)
            self._add_facts(s, batch.facts, summary)
        if batch.documents:
            self.add_documents(batch.documents, summary=summary)
        return summary

    def upsert_relations(self, records: Sequence[RelationRecord]) -> IngestSummary:
        summary = IngestSummary()
        with self.session() as s, s.begin():
            self._upsert_relations(s, records, summary)
        return summary

    def upsert_entities(self, records: Sequence[EntityRecord]) -> IngestSummary:
        summary = IngestSummary()
        with self.session() as s, s.begin():
            self._upsert_entities(s, records, summary)
        return summary

    def add_facts(self, records: Sequence[FactRecord]) -> IngestSummary:
        """Add facts; a new object for a functional relation closes the current fact."""
        summary = IngestSummary()
        with self.session() as s, s.begin():
            self._add_facts(s, records, summary)
        return summary

    def _upsert_relations(self, s: Session, records: Sequence[RelationRecord], summary: IngestSummary) -> None:
        if not records:
            return
        latest = {r.id: r for r in records}  # the last definition in a batch wins
        existing = {r.id: r for r in s.scalars(select(Relation).where(Relation.id.in_(list(latest))))}
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

    def _upsert_entities(self, s: Session, records: Sequence[EntityRecord], summary: IngestSummary) -> None:
        if not records:
            return
        latest: dict[str, EntityRecord] = {}
        for r in records:
            if r.id in latest:  # merge aliases of repeated definitions
                r.aliases = latest[r.id].aliases + r.aliases
            latest[r.id] = r
        ids = self._entity_ids(s, latest)
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
            current = {e.id: e for e in self._chunked_select(s, Entity, Entity.id, [i for i, _ in changed])}
            updates = []
            for eid, r in changed:
                e = current[eid]
                desc = r.description if r.description is not None else e.description
                typ = r.type if r.type is not None else e.type
                if (e.name, e.type, e.description) != (r.name, typ, desc):
                    updates.append({"id": eid, "name": r.name, "type": typ, "description": desc, "updated_at": _now()})
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
            for a in self._chunked_select(s, Alias, Alias.entity_id, sorted({eid for eid, _ in wanted}))
        }
        alias_rows = [row for key, row in wanted.items() if key not in have]
        if alias_rows:
            s.execute(insert(Alias), alias_rows)
        s.flush()

    def _add_facts(self, s: Session, records: Sequence[FactRecord], summary: IngestSummary) -> None:
        if not records:
            return
        relations = {r.id: r for r in s.scalars(select(Relation))}
        keys = {r.subject for r in records} | {r.object for r in records if r.object}
        entity_ids = self._entity_ids(s, keys)
        sources = self._source_ids(s, {r.source for r in records if r.source}, kind="feed")
        valid: list[tuple[FactRecord, int, int | None]] = []
        for r in records:
            where = r.origin or "fact"
            if r.relation not in relations:
                summary.issues.append(
                    _issue(where, f"unknown relation {r.relation!r}: define it in a relation record first")
                )
            elif r.subject not in entity_ids:
                summary.issues.append(_issue(where, f"unknown subject entity {r.subject!r}"))
            elif r.object is not None and r.object not in entity_ids:
                summary.issues.append(
                    _issue(where, f"unknown object entity {r.object!r} (use object_literal for a value)")
                )
            else:
                valid.append((r, entity_ids[r.subject], entity_ids.get(r.object) if r.object else None))
        if not valid:
            return
        # Everything already known about these subjects, closed facts included (for idempotency).
        known: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
        subjects = sorted({sid for _, sid, _ in valid})
        for i in range(0, len(subjects), _SQLITE_VARS):
            rows = s.execute(
                select(
                    Fact.id,
                    Fact.subject_id,
                    Fact.relation_id,
                    Fact.object_id,
                    Fact.object_literal,
                    Fact.valid_from,
                    Fact.valid_to,
                ).where(Fact.subject_id.in_(subjects[i : i + _SQLITE_VARS]))
            ).all()
            for fid, sid, rid, oid, lit, vf, vt in rows:
                known[(sid, rid)].append(
                    {"id": fid, "object_id": oid, "object_literal": lit, "valid_from": vf, "valid_to": vt}
                )
        pending: list[dict[str, Any]] = []
        closes: dict[int, dt.date] = {}
        today = dt.date.today()
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
                "source_id": sources.get(r.source),
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
                    cur["closed_at"] = _now()
                    if "id" in cur:  # in SQL already; a row of this batch is closed in place
                        closes[cur["id"]] = cur["valid_to"]
            pending.append(row)
            facts.append(row)  # later records of the batch see it (same dict is inserted)
        if closes:
            now = _now()
            s.execute(update(Fact), [{"id": i, "valid_to": d, "closed_at": now} for i, d in closes.items()])
            summary.facts_closed += len(closes)
            summary.closed_fact_ids += list(closes)
        if pending:
            # Core insert, RETURNING without ordering: only the set of new ids is needed, and
            # asking SQLite for parameter order makes SQLAlchemy send one row per statement.
            result = s.execute(insert(Fact.__table__).returning(Fact.__table__.c.id), pending)
            new_ids = sorted(result.scalars())
            summary.facts_added += len(new_ids)
            summary.new_fact_ids += new_ids
        s.flush()

    def add_documents(self, records: Sequence[DocumentRecord], summary: IngestSummary | None = None) -> list[int]:
        """Store documents (deduplicated by content hash), chunk them, link mentions.

        Returns the ids of the new passages (already-known documents add none).
        """
        summary = summary if summary is not None else IngestSummary()
        if not records:
            return []
        linker = self.linker()
        by_hash: dict[str, DocumentRecord] = {}
        for r in records:
            by_hash.setdefault(hashlib.sha256(r.text.strip().encode("utf-8")).hexdigest(), r)
        summary.documents_unchanged += len(records) - len(by_hash)
        new_passages: list[int] = []
        with self.session() as s, s.begin():
            existing = set()
            hashes = list(by_hash)
            for i in range(0, len(hashes), _SQLITE_VARS):
                existing.update(
                    s.scalars(
                        select(Document.content_hash).where(Document.content_hash.in_(hashes[i : i + _SQLITE_VARS]))
                    )
                )
            todo = [(h, r) for h, r in by_hash.items() if h not in existing]
            summary.documents_unchanged += len(existing)
            if not todo:
                return []
            sources = self._source_ids(s, {r.source for _, r in todo if r.source}, kind="corpus")
            doc_rows = [
                {
                    "content_hash": h,
                    "text": r.text,
                    "title": r.title,
                    "external_id": r.external_id,
                    "published_at": r.published_at,
                    "source_id": sources.get(r.source),
                }
                for h, r in todo
            ]
            doc_ids = list(
                s.execute(insert(Document).returning(Document.id, sort_by_parameter_order=True), doc_rows).scalars()
            )
            passage_rows = []
            for doc_id, (_, r) in zip(doc_ids, todo):
                for ordinal, chunk in enumerate(chunk_text(r.text, self.max_passage_tokens, self.count_tokens)):
                    passage_rows.append(
                        {
                            "document_id": doc_id,
                            "ordinal": ordinal,
                            "text": chunk.text,
                            "char_start": chunk.start,
                            "char_end": chunk.end,
                            "token_count": chunk.token_count,
                        }
                    )
            if passage_rows:
                new_passages = list(
                    s.execute(
                        insert(Passage).returning(Passage.id, sort_by_parameter_order=True), passage_rows
                    ).scalars()
                )
            mention_rows = [
                {"passage_id": pid, "entity_id": m.entity_id, "start": m.start, "end": m.end, "surface": m.surface}
                for pid, row in zip(new_passages, passage_rows)
                for m in linker.link(row["text"])
            ]
            if mention_rows:
                s.execute(insert(Mention), mention_rows)
        summary.documents_added += len(doc_ids)
        summary.passages_added += len(new_passages)
        summary.mentions_added += len(mention_rows)
        summary.new_passage_ids += new_passages
        return new_passages

    def relink_passages(self, passage_ids: Sequence[int] | None = None) -> int:
        """Re-run the linker over passages (all by default), replacing their mentions.

        Needed after new aliases arrive for text ingested earlier. Returns mentions written.
        """
        linker = self.linker()
        written = 0
        with self.session() as s, s.begin():
            q = select(Passage.id, Passage.text).order_by(Passage.id)
            if passage_ids is not None:
                q = q.where(Passage.id.in_(list(passage_ids)))
            rows = s.execute(q).all()
            ids = [r[0] for r in rows]
            for i in range(0, len(ids), _SQLITE_VARS):
                s.execute(delete(Mention).where(Mention.passage_id.in_(ids[i : i + _SQLITE_VARS])))
            mention_rows = [
                {"passage_id": pid, "entity_id": m.entity_id, "start": m.start, "end": m.end, "surface": m.surface}
                for pid, t in rows
                for m in linker.link(t)
            ]
            if mention_rows:
                s.execute(insert(Mention), mention_rows)
                written = len(mention_rows)
        return written

    def delete_document(self, document_id: int) -> list[int]:
        """Delete a document with its passages and mentions; returns the removed passage ids."""
        with self.session() as s, s.begin():
            pids = list(s.scalars(select(Passage.id).where(Passage.document_id == document_id)))
            for i in range(0, len(pids), _SQLITE_VARS):
                chunk = pids[i : i + _SQLITE_VARS]
                s.execute(delete(Mention).where(Mention.passage_id.in_(chunk)))
                s.execute(delete(Passage).where(Passage.id.in_(chunk)))
            s.execute(update(Fact).where(Fact.document_id == document_id).values(document_id=None))
            s.execute(delete(Document).where(Document.id == document_id))
        return pids

    # ------------------------------------------------------------------ helpers

    def _entity_ids(self, s: Session, keys: Iterable[str]) -> dict[str, int]:
        keys = sorted(set(keys))
        out: dict[str, int] = {}
        for i in range(0, len(keys), _SQLITE_VARS):
            out.update(
                s.execute(
                    select(Entity.external_id, Entity.id).where(Entity.external_id.in_(keys[i : i + _SQLITE_VARS]))
                ).all()
            )
        return out

    def _source_ids(self, s: Session, names: set[str], kind: str) -> dict[str, int]:
        if not names:
            return {}
        have = dict(s.execute(select(Source.name, Source.id).where(Source.name.in_(sorted(names)))).all())
        missing = sorted(names - set(have))
        if missing:
            result = s.execute(
                insert(Source).returning(Source.id, sort_by_parameter_order=True),
                [{"name": n, "kind": kind} for n in missing],
            )
            have.update(zip(missing, result.scalars()))
        return have

    @staticmethod
    def _chunked_select(s: Session, model: Any, column: Any, values: Sequence[Any]) -> Iterator[Any]:
        for i in range(0, len(values), _SQLITE_VARS):
            yield from s.scalars(select(model).where(column.in_(values[i : i + _SQLITE_VARS])))

    # ------------------------------------------------------------------ views: linker and graph

    def linker(self) -> EntityLinker:
        """The alias gazetteer, caught up with aliases written since the last call."""
        with self._lock:
            if self._linker is None:
                self._linker = EntityLinker()
            with self.session() as s:
                rows = s.execute(
                    select(Alias.id, Alias.surface, Alias.entity_id, Alias.prior)
                    .where(Alias.id > self._linker_watermark)
                    .order_by(Alias.id)
                ).all()
            for aid, surface, eid, prior in rows:
                self._linker.add_alias(surface, eid, prior)
                self._linker_watermark = aid
            return self._linker

    def link(self, text: str) -> list[LinkedMention]:
        """Entity mentions in ``text`` (character spans), by the alias gazetteer."""
        return self.linker().link(text)

    def graph(self) -> FactGraph:
        """The networkx view of the current facts, caught up incrementally from SQL."""
        with self._lock, self.session() as s:
            if self._graph is None:
                self._graph = FactGraph()
                self._graph_closed_watermark = s.scalar(select(func.max(Fact.closed_at)))
            new = s.execute(
                select(Fact.id, Fact.subject_id, Fact.relation_id, Fact.object_id, Fact.object_literal)
                .where(Fact.id > self._graph_fact_watermark, Fact.valid_to.is_(None))
                .order_by(Fact.id)
            ).all()
            self._graph.add_facts(GraphFact(*row) for row in new)
            top = s.scalar(select(func.max(Fact.id)))
            if top:
                self._graph_fact_watermark = max(self._graph_fact_watermark, top)
            if self._graph_closed_watermark is not None:
                closed = s.execute(
                    select(Fact.id, Fact.closed_at).where(Fact.closed_at >= self._graph_closed_watermark)
                ).all()
            else:
                closed = s.execute(select(Fact.id, Fact.closed_at).where(Fact.closed_at.is_not(None))).all()
            for fid, closed_at in closed:
                self._graph.remove_fact(fid)
                if self._graph_closed_watermark is None or closed_at > self._graph_closed_watermark:
                    self._graph_closed_watermark = closed_at
            return self._graph

    # ------------------------------------------------------------------ queries: entities and facts

    def entity_id(self, key: str) -> int | None:
        """The internal id of the entity with external id ``key``."""
        with self.session() as s:
            return s.scalar(select(Entity.id).where(Entity.external_id == key))

    def find_entities(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        """Entities whose name or alias matches ``query`` (normalised; exact first, then prefix)."""
        norm = normalise_alias(query)
        if not norm:
            return []
        with self.session() as s:
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

    def resolve_entity(self, ref: str | int) -> int | None:
        """An entity id from an internal id, an external id, or a name/alias."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            with self.session() as s:
                if s.get(Entity, int(ref)) is not None:
                    return int(ref)
        eid = self.entity_id(str(ref))
        if eid is not None:
            return eid
        found = self.find_entities(str(ref), limit=1)
        return found[0]["id"] if found else None

    def get_entity(self, entity_id: int, mention_limit: int = 0) -> EntityView | None:
        """An entity with its aliases, current facts, history and mention count; None if unknown."""
        with self.session() as s:
            e = s.get(Entity, entity_id)
            if e is None:
                return None
            aliases = [
                a.surface for a in s.scalars(select(Alias).where(Alias.entity_id == entity_id).order_by(Alias.id))
            ]
            mention_count = (
                s.scalar(select(func.count()).select_from(Mention).where(Mention.entity_id == entity_id)) or 0
            )
        facts = self.facts(entity=entity_id, include_closed=True, limit=None)
        return EntityView(
            id=e.id,
            key=e.external_id,
            name=e.name,
            type=e.type,
            description=e.description,
            aliases=aliases,
            facts=[f for f in facts if f.is_current],
            history=sorted(
                (f for f in facts if not f.is_current), key=lambda f: f.valid_to or dt.date.min, reverse=True
            ),
            mention_count=mention_count,
        )

    def facts(
        self,
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
        """Facts with names resolved.

        Default: current facts. ``as_of=D``: the facts believed on D (valid_from ≤ D < valid_to).
        ``include_closed``: current and closed alike (history). ``entity``: as subject or object.
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
        )
        if entity is not None:
            q = q.where(or_(Fact.subject_id == entity, Fact.object_id == entity))
        if subject is not None:
            q = q.where(Fact.subject_id == subject)
        if object is not None:
            q = q.where(Fact.object_id == object)
        if relation is not None:
            q = q.where(Fact.relation_id == relation)
        if ids is not None:
            q = q.where(Fact.id.in_(list(ids)))
        if as_of is not None:
            q = q.where(
                or_(Fact.valid_from.is_(None), Fact.valid_from <= as_of),
                or_(Fact.valid_to.is_(None), Fact.valid_to > as_of),
            )
        elif not include_closed:
            q = q.where(Fact.valid_to.is_(None))
        q = q.order_by(Fact.id).offset(offset)
        if limit is not None:
            q = q.limit(limit)
        with self.session() as s:
            rows = s.execute(q).all()
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
            )
            for f, skey, sname, label, template, okey, oname, source in rows
        ]

    def neighbourhood(
        self, entity_id: int, hops: int = 1, as_of: dt.date | None = None, max_fanout: int = 50, max_facts: int = 200
    ) -> list[FactView]:
        """Facts within ``hops`` of an entity, closest first: from the graph view for current
        facts, from SQL (breadth-first over ``as_of`` facts) for a past date."""
        if as_of is None:
            ids = [
                f.fact_id
                for f in self.graph().neighbourhood(entity_id, hops=hops, max_fanout=max_fanout, max_facts=max_facts)
            ]
        else:
            ids, frontier, seen = [], {entity_id}, {entity_id}
            for _ in range(hops):
                nxt: set[int] = set()
                for eid in sorted(frontier):
                    for f in self.facts(entity=eid, as_of=as_of, limit=max_fanout):
                        if f.id not in ids:
                            ids.append(f.id)
                        for other in (f.subject_id, f.object_id):
                            if other is not None and other not in seen:
                                seen.add(other)
                                nxt.add(other)
                frontier = nxt
            ids = ids[:max_facts]
        by_id = {f.id: f for f in self.facts(ids=ids, include_closed=True, limit=None)} if ids else {}
        return [by_id[i] for i in ids if i in by_id]

    def relations(self) -> list[dict[str, Any]]:
        with self.session() as s:
            return [
                {"id": r.id, "label": r.label, "template": r.template, "functional": r.functional}
                for r in s.scalars(select(Relation).order_by(Relation.id))
            ]

    # ------------------------------------------------------------------ queries: documents and passages

    def passage_count(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Passage)) or 0

    def max_passage_id(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.max(Passage.id))) or 0

    def max_fact_id(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.max(Fact.id))) or 0

    def passage_ids(self) -> set[int]:
        with self.session() as s:
            return set(s.scalars(select(Passage.id)))

    def passage_texts(self, ids: Sequence[int]) -> dict[int, str]:
        ids = list(ids)
        out: dict[int, str] = {}
        with self.session() as s:
            for i in range(0, len(ids), _SQLITE_VARS):
                out.update(
                    s.execute(select(Passage.id, Passage.text).where(Passage.id.in_(ids[i : i + _SQLITE_VARS]))).all()
                )
        return out

    def iter_passages(self, batch_size: int = 1000, after_id: int = 0) -> Iterator[list[tuple[int, str]]]:
        """(passage id, text) in id order, ``batch_size`` at a time (keyset pagination)."""
        last = after_id
        while True:
            with self.session() as s:
                rows = list(
                    s.execute(
                        select(Passage.id, Passage.text).where(Passage.id > last).order_by(Passage.id).limit(batch_size)
                    ).all()
                )
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    def passage_info(self, ids: Sequence[int]) -> dict[int, PassageInfo]:
        ids = list(ids)
        out: dict[int, PassageInfo] = {}
        with self.session() as s:
            for i in range(0, len(ids), _SQLITE_VARS):
                rows = s.execute(
                    select(
                        Passage.id,
                        Passage.document_id,
                        Passage.text,
                        Document.title,
                        Source.name,
                        Document.published_at,
                        Document.external_id,
                    )
                    .join(Document, Passage.document_id == Document.id)
                    .outerjoin(Source, Document.source_id == Source.id)
                    .where(Passage.id.in_(ids[i : i + _SQLITE_VARS]))
                ).all()
                out.update({r[0]: PassageInfo(*r) for r in rows})
        return out

    def passage_ids_where(
        self, source: str | None = None, published_from: dt.date | None = None, published_to: dt.date | None = None
    ) -> set[int]:
        """Passage ids matching a source name and/or publication date range (for index filters)."""
        q = select(Passage.id).join(Document, Passage.document_id == Document.id)
        if source is not None:
            q = q.join(Source, Document.source_id == Source.id).where(Source.name == source)
        if published_from is not None:
            q = q.where(Document.published_at >= published_from)
        if published_to is not None:
            q = q.where(Document.published_at <= published_to)
        with self.session() as s:
            return set(s.scalars(q))

    def lexical_search(self, query: str, k: int = 10) -> list[tuple[int, float]]:
        """Full-text search with the database's own engine, best first (higher score = better).

        SQLite: FTS5 with BM25; PostgreSQL: ``tsvector`` with ``ts_rank_cd``. Query words are
        OR-ed (any word may match; rarer words weigh more).
        """
        words = [w for w in dict.fromkeys(re.findall(r"\w+", query.lower())) if w not in _STOPWORDS]
        if not words or k <= 0:
            return []
        with self.session() as s:
            if self.dialect == "sqlite":
                match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
                rows = s.execute(
                    text(
                        "SELECT rowid, bm25(passage_fts) AS r FROM passage_fts WHERE passage_fts MATCH :q "
                        "ORDER BY r LIMIT :k"
                    ),
                    {"q": match, "k": k},
                ).all()
                return [(int(pid), -float(score)) for pid, score in rows]
            if self.dialect == "postgresql":
                rows = s.execute(
                    text(
                        "SELECT id, ts_rank_cd(tsv, q) AS r FROM passage, to_tsquery('english', :q) q "
                        "WHERE tsv @@ q ORDER BY r DESC, id LIMIT :k"
                    ),
                    {"q": " | ".join(words), "k": k},
                ).all()
                return [(int(pid), float(score)) for pid, score in rows]
        raise NotImplementedError(f"full-text search is not implemented for {self.dialect}")

    def passages_mentioning(self, entity_ids: Sequence[int], k: int = 10) -> list[tuple[int, float]]:
        """Passages that mention any of ``entity_ids``, most distinct entities first."""
        ids = sorted(set(entity_ids))
        if not ids or k <= 0:
            return []
        with self.session() as s:
            n = func.count(func.distinct(Mention.entity_id)).label("n")
            rows = s.execute(
                select(Mention.passage_id, n)
                .where(Mention.entity_id.in_(ids))
                .group_by(Mention.passage_id)
                .order_by(n.desc(), Mention.passage_id)
                .limit(k)
            ).all()
        return [(int(pid), float(c)) for pid, c in rows]

    def mentions(self, entity_id: int, limit: int = 20) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.execute(
                select(Mention.passage_id, Mention.start, Mention.end, Mention.surface, Passage.document_id)
                .join(Passage, Mention.passage_id == Passage.id)
                .where(Mention.entity_id == entity_id)
                .order_by(Mention.id)
                .limit(limit)
            ).all()
        return [dict(passage_id=p, start=a, end=b, surface=sf, document_id=d) for p, a, b, sf, d in rows]

    def get_document(self, document_id: int) -> dict[str, Any] | None:
        with self.session() as s:
            d = s.get(Document, document_id)
            if d is None:
                return None
            return {
                "id": d.id,
                "external_id": d.external_id,
                "title": d.title,
                "text": d.text,
                "published_at": d.published_at.isoformat() if d.published_at else None,
                "source": d.source.name if d.source else None,
                "content_hash": d.content_hash,
                "passages": [{"id": p.id, "ordinal": p.ordinal, "text": p.text} for p in d.passages],
            }

    def documents(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        with self.session() as s:
            n = select(func.count()).select_from(Passage).where(Passage.document_id == Document.id).scalar_subquery()
            rows = s.execute(
                select(Document.id, Document.external_id, Document.title, Document.published_at, Source.name, n)
                .outerjoin(Source, Document.source_id == Source.id)
                .order_by(Document.id)
                .offset(offset)
                .limit(limit)
            ).all()
        return [
            {
                "id": i,
                "external_id": e,
                "title": t,
                "published_at": p.isoformat() if p else None,
                "source": src,
                "passages": c,
            }
            for i, e, t, p, src, c in rows
        ]

    def passage_mentions(self, passage_ids: Sequence[int]) -> dict[int, list[tuple[int, int, int]]]:
        """``(start, end, entity_id)`` of the mentions in each passage (for salient-span masking)."""
        ids = list(passage_ids)
        out: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        with self.session() as s:
            for i in range(0, len(ids), _SQLITE_VARS):
                rows = s.execute(
                    select(Mention.passage_id, Mention.start, Mention.end, Mention.entity_id)
                    .where(Mention.passage_id.in_(ids[i : i + _SQLITE_VARS]))
                    .order_by(Mention.start)
                ).all()
                for pid, a, b, eid in rows:
                    out[pid].append((a, b, eid))
        return dict(out)

    def sample_passages(
        self, n: int, max_id: int | None = None, exclude_modulo: int | None = None, seed: int | None = None
    ) -> list[tuple[int, str]]:
        """Up to ``n`` random passages with id ≤ ``max_id`` (replay for continual training).

        ``exclude_modulo=m`` leaves out ids divisible by m (kept aside as a held-out set).
        """
        q = select(Passage.id, Passage.text)
        if max_id is not None:
            q = q.where(Passage.id <= max_id)
        if exclude_modulo:
            q = q.where(Passage.id % exclude_modulo != 0)
        with self.session() as s:
            if seed is not None and self.dialect == "postgresql":
                s.execute(text("SELECT setseed(:x)"), {"x": (seed % 1000) / 1000})
            rows = s.execute(q.order_by(func.random()).limit(n)).all()
        return [(int(i), t) for i, t in rows]

    def heldout_passages(self, n: int, modulo: int, max_id: int | None = None) -> list[tuple[int, str]]:
        """The first ``n`` passages whose id is divisible by ``modulo``: a fixed held-out set."""
        q = select(Passage.id, Passage.text).where(Passage.id % modulo == 0)
        if max_id is not None:
            q = q.where(Passage.id <= max_id)
        with self.session() as s:
            return [(int(i), t) for i, t in s.execute(q.order_by(Passage.id).limit(n)).all()]

    # ------------------------------------------------------------------ update runs and checkpoints

    def start_run(self, trigger: str) -> int:
        """A new ``update_run`` row in status "running"; returns its id."""
        with self.session() as s, s.begin():
            run = UpdateRun(trigger=trigger, status="running", timings={}, counts={}, metrics={}, reasons=[])
            s.add(run)
            s.flush()
            return run.id

    def finish_run(self, run_id: int, **fields: Any) -> None:
        """Update a run's row (status, finished_at, timings, counts, metrics, decision, reasons, error, checkpoint_version)."""
        allowed = {
            "status",
            "finished_at",
            "timings",
            "counts",
            "metrics",
            "decision",
            "reasons",
            "error",
            "checkpoint_version",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"finish_run: unknown fields {sorted(unknown)}")
        fields.setdefault("finished_at", _now())
        with self.session() as s, s.begin():
            s.execute(update(UpdateRun).where(UpdateRun.id == run_id).values(**fields))

    def runs(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Update runs, newest first."""
        with self.session() as s:
            rows = s.scalars(select(UpdateRun).order_by(UpdateRun.id.desc()).offset(offset).limit(limit)).all()
        return [_run_dict(r) for r in rows]

    def get_run(self, run_id: int) -> dict[str, Any] | None:
        with self.session() as s:
            r = s.get(UpdateRun, run_id)
            return _run_dict(r) if r is not None else None

    def record_checkpoint(
        self, version: str, parent: str | None, status: str, metrics: dict[str, Any], path: str | None = None
    ) -> None:
        """Insert or update a checkpoint's row (status: candidate / active / rejected / retired)."""
        with self.session() as s, s.begin():
            row = s.get(Checkpoint, version)
            if row is None:
                s.add(Checkpoint(version=version, parent_version=parent, status=status, metrics=metrics, path=path))
            else:
                row.status, row.metrics = status, metrics
                row.parent_version = parent if parent is not None else row.parent_version
                row.path = path or row.path

    def set_checkpoint_status(self, version: str, status: str) -> None:
        """Set one checkpoint's status; making one "active" retires the previous active one."""
        with self.session() as s, s.begin():
            if status == "active":
                s.execute(
                    update(Checkpoint)
                    .where(Checkpoint.status == "active", Checkpoint.version != version)
                    .values(status="retired")
                )
            n = s.execute(update(Checkpoint).where(Checkpoint.version == version).values(status=status)).rowcount
            if not n:
                s.add(Checkpoint(version=version, status=status, metrics={}))

    def checkpoints(self) -> list[dict[str, Any]]:
        """Checkpoint rows, oldest first."""
        with self.session() as s:
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

    # ------------------------------------------------------------------ the cross-process lock

    def try_lock(self, name: str, holder: str, lease_seconds: float) -> bool:
        """Take the named lock for ``lease_seconds`` unless another live holder has it.

        Works the same on every database: the lock is a row, its primary key rejects a second
        holder, and an expired lease (a crashed holder) is cleared first. Returns True if taken.
        """
        from sqlalchemy.exc import IntegrityError

        now = _now()
        try:
            with self.session() as s, s.begin():
                s.execute(delete(UpdateLock).where(UpdateLock.name == name, UpdateLock.expires_at < now))
                s.execute(
                    insert(UpdateLock).values(
                        name=name, holder=holder, acquired_at=now, expires_at=now + dt.timedelta(seconds=lease_seconds)
                    )
                )
            return True
        except IntegrityError:
            return False

    def renew_lock(self, name: str, holder: str, lease_seconds: float) -> bool:
        """Extend a lock this holder has; False if it was lost (expired and taken over)."""
        with self.session() as s, s.begin():
            n = s.execute(
                update(UpdateLock)
                .where(UpdateLock.name == name, UpdateLock.holder == holder)
                .values(expires_at=_now() + dt.timedelta(seconds=lease_seconds))
            ).rowcount
        return bool(n)

    def release_lock(self, name: str, holder: str) -> None:
        with self.session() as s, s.begin():
            s.execute(delete(UpdateLock).where(UpdateLock.name == name, UpdateLock.holder == holder))

    def lock_holder(self, name: str) -> str | None:
        with self.session() as s:
            row = s.get(UpdateLock, name)
            return row.holder if row is not None and row.expires_at >= _now() else None

    def stats(self) -> dict[str, int]:
        """Row counts of every table (facts split into current and closed)."""
        with self.session() as s:

            def count(model: Any, *where: Any) -> int:
                return s.scalar(select(func.count()).select_from(model).where(*where)) or 0

            return {
                "sources": count(Source),
                "documents": count(Document),
                "passages": count(Passage),
                "entities": count(Entity),
                "aliases": count(Alias),
                "relations": count(Relation),
                "facts_current": count(Fact, Fact.valid_to.is_(None)),
                "facts_closed": count(Fact, Fact.valid_to.is_not(None)),
                "mentions": count(Mention),
                "update_runs": count(UpdateRun),
                "checkpoints": count(Checkpoint),
            }


def _run_dict(r: UpdateRun) -> dict[str, Any]:
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


def _issue(origin: str, reason: str) -> IngestIssue:
    path, _, line = origin.rpartition(":")
    if path and line.isdigit():
        return IngestIssue(path, int(line), reason)
    return IngestIssue(origin, None, reason)


def _like_prefix(norm: str) -> str:
    return norm.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


__all__ = ["KnowledgeStore", "IngestSummary", "FactView", "EntityView", "PassageInfo", "make_engine", "migrate", "Base"]
