"""The knowledge store: SQL (source of truth) with an in-memory graph view and alias gazetteer.

``KnowledgeStore.open(url)`` migrates the database to the newest schema. The store is a façade:
it owns the engine, the sessions and the two in-memory views, and hands each call to the module
that does that job, inside one session (and one transaction for writes):

- :mod:`knowledge.db`: engine, migrations, sessions, chunked ``IN (...)`` statements
- :mod:`knowledge.ingest`: relation, entity, fact and document writes; relinking; deletion
- :mod:`knowledge.queries`: entities, facts (current, as of a date, history), neighbourhoods
- :mod:`knowledge.passages`: passages, documents, mentions, full-text search, sampling
- :mod:`knowledge.registry`: update runs and checkpoints
- :mod:`knowledge.browse`: an entity's page (as of a date, its timeline), documents by title
- :mod:`knowledge.lease`: the cross-process lease lock

The graph view (:class:`~knowledge.graph.FactGraph`) and the linker
(:class:`~knowledge.linker.EntityLinker`) are caught up incrementally from SQL watermarks (new fact
and alias ids, newly closed facts), so they stay in step with writes made by this process or any
other.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from knowledge import (
    browse,
    candidates,
    edits,
    ingest,
    lease,
    passages,
    queries,
    registry,
    schedule,
    snapshots,
    watermark,
)
from knowledge.browse import DocumentHit, EntityPage
from knowledge.candidates import Candidate
from knowledge.chunking import approximate_token_count
from knowledge.db import make_engine, migrate, session_factory
from knowledge.graph import FactGraph
from knowledge.ingest import PassageVectors
from knowledge.linker import EntityLinker, LinkedMention
from knowledge.models import Base
from knowledge.readers import DocumentRecord, EntityRecord, FactRecord, ReadBatch, RelationRecord
from knowledge.snapshots import GenerationView, PassageEventView
from knowledge.views import EntityView, FactView, IngestSummary, PassageInfo
from knowledge.watermark import Watermark

P = ParamSpec("P")
ChunkEmbedder = Callable[[list[str]], PassageVectors]  # chunk texts -> their vectors
T = TypeVar("T")


class KnowledgeStore:
    """Entities, relations, facts (with time and provenance), documents, passages and mentions."""

    def __init__(
        self,
        engine: Engine,
        count_tokens: Callable[[str], int] | None = None,
        max_passage_tokens: int = 96,
    ) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        self.count_tokens = count_tokens or approximate_token_count
        self.max_passage_tokens = max_passage_tokens
        self._lock = threading.RLock()  # guards the in-memory views' catch-up
        self._graph: FactGraph | None = None
        self._graph_fact_watermark = 0
        self._graph_closed_watermark: dt.datetime | None = None
        self._linker: EntityLinker | None = None
        self._linker_watermark = 0
        self._ranges = candidates.RangeCounts()  # each relation's objects ranked, for answer candidates

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
        """A store on ``url`` (any SQLAlchemy URL), migrated to the newest schema unless told not to.

        Raises :class:`sqlalchemy.exc.ArgumentError` for a malformed URL and the driver's error
        when the database cannot be reached.
        """
        engine = make_engine(url, echo=echo)
        if run_migrations:
            migrate(engine)
        return cls(engine, count_tokens=count_tokens, max_passage_tokens=max_passage_tokens)

    def close(self) -> None:
        """Close the engine's pooled connections; the store is not used afterwards."""
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        """The database's SQLAlchemy dialect name ("sqlite", "postgresql", ...)."""
        return self.engine.dialect.name

    def session(self) -> Session:
        """A new session on the store's engine (the caller closes it)."""
        return self.sessions()

    def _read(self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self.session() as s:
            return fn(s, *args, **kwargs)

    def _write(self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self.session() as s, s.begin():
            return fn(s, *args, **kwargs)

    # ------------------------------------------------------------------ ingest

    def ingest_paths(
        self,
        paths: Iterable[Path],
        on_file: Callable[[Path, IngestSummary], None] | None = None,
        embed: ChunkEmbedder | None = None,
    ) -> IngestSummary:
        """Read and write every file under ``paths``, one file per transaction; returns the total.

        Feeds are written before corpora so documents link against entities of the same batch.
        A bad file or record is reported in ``issues`` and skipped; everything else goes in.
        ``on_file`` is called with each file and its own summary after it is written; ``embed`` as
        in :meth:`add_documents`.
        """
        total = IngestSummary()
        for path, batch in ingest.read_in_order(paths):
            summary = self.ingest_batch(batch, embed=embed)
            summary.files = 1
            total.merge(summary)
            if on_file is not None:
                on_file(path, summary)
        return total

    def ingest_batch(self, batch: ReadBatch, embed: ChunkEmbedder | None = None) -> IngestSummary:
        """Write one read batch (relations → entities → facts, then documents); returns what it did.

        Documents go in a second transaction, linked with the gazetteer that includes the batch's
        own entities. ``embed`` as in :meth:`add_documents`.
        """
        summary = IngestSummary(issues=list(batch.issues))
        with self.session() as s, s.begin():
            ingest.upsert_relations(s, batch.relations, summary)
            ingest.upsert_entities(s, batch.entities, summary)
            ingest.add_facts(s, batch.facts, summary)
        if batch.documents:
            self.add_documents(batch.documents, summary=summary, embed=embed)
        return summary

    def upsert_relations(self, records: Sequence[RelationRecord]) -> IngestSummary:
        """Insert new relations and update changed ones; returns the counts."""
        summary = IngestSummary()
        self._write(ingest.upsert_relations, records, summary)
        return summary

    def upsert_entities(self, records: Sequence[EntityRecord]) -> IngestSummary:
        """Insert new entities, update changed ones and add their aliases; returns the counts."""
        summary = IngestSummary()
        self._write(ingest.upsert_entities, records, summary)
        return summary

    def add_facts(self, records: Sequence[FactRecord]) -> IngestSummary:
        """Add facts; a new object for a functional relation closes the current fact.

        Returns the counts and new/closed fact ids; records naming an unknown relation or entity
        are reported in its ``issues`` and skipped.
        """
        summary = IngestSummary()
        self._write(ingest.add_facts, records, summary)
        return summary

    def apply_due_facts(self) -> IngestSummary:
        """Add the scheduled facts whose ``valid_from`` has come (every ingest does this first)."""
        return self.add_facts([])

    def scheduled_facts(self) -> list[FactRecord]:
        """Facts dated in the future, waiting for their day (soonest first)."""
        return self._read(schedule.scheduled)

    def add_documents(
        self,
        records: Sequence[DocumentRecord],
        summary: IngestSummary | None = None,
        embed: ChunkEmbedder | None = None,
    ) -> list[int]:
        """Store documents (deduplicated by content hash), chunk them, link mentions.

        Returns the ids of the new passages (already-known documents add none); counts go to
        ``summary`` when given. ``embed``: called with the new chunks' texts *before* the write
        transaction (embedding holds no lock), its vectors stored with the passages in the same
        transaction, so a process that sees a passage also finds its vector.
        """
        summary = summary if summary is not None else IngestSummary()
        docs = ingest.prepare_documents(records, summary, self.max_passage_tokens, self.count_tokens)
        if not docs:
            return []
        vectors = None
        if embed is not None:
            texts = self._read(ingest.new_chunk_texts, docs)
            vectors = embed(texts) if texts else None
        with self.session() as s, s.begin():
            # The linker catches up inside the write's own transaction: one session less on a
            # path that each POSTed document takes, on the serving process's interpreter lock.
            return ingest.add_documents(s, docs, summary, self._caught_up_linker(s), vectors)

    def relink_passages(self, passage_ids: Sequence[int] | None = None) -> int:
        """Re-run the linker over passages (all by default), replacing their mentions.

        Needed after new aliases arrive for text ingested earlier. Returns mentions written.
        """
        linker = self.linker()
        return self._write(ingest.relink_passages, linker, passage_ids)

    def delete_document(self, document_id: int) -> list[int]:
        """Delete a document with its passages and mentions; returns the removed passage ids."""
        return self._write(ingest.delete_document, document_id)

    # ------------------------------------------------------------------ views: linker and graph

    def linker(self) -> EntityLinker:
        """The alias gazetteer, caught up with aliases written since the last call."""
        with self.session() as s:
            return self._caught_up_linker(s)

    def _caught_up_linker(self, s: Session) -> EntityLinker:
        with self._lock:
            if self._linker is None:
                self._linker = EntityLinker()
            for aid, surface, eid, prior in queries.aliases_after(s, self._linker_watermark):
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
                self._graph_closed_watermark = queries.last_closed_at(s)
            self._graph.add_facts(queries.current_facts_after(s, self._graph_fact_watermark))
            self._graph_fact_watermark = max(self._graph_fact_watermark, queries.max_fact_id(s))
            for fid, closed_at in queries.facts_closed_since(s, self._graph_closed_watermark):
                self._graph.remove_fact(fid)
                if self._graph_closed_watermark is None or closed_at > self._graph_closed_watermark:
                    self._graph_closed_watermark = closed_at
            return self._graph

    # ------------------------------------------------------------------ queries: entities and facts

    def entity_id(self, key: str) -> int | None:
        """The internal id of the entity with external id ``key``; None if there is none."""
        return self._read(queries.entity_id, key)

    def find_entities(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        """Entities whose name or alias matches ``query`` (normalised; exact first, then prefix)."""
        return self._read(queries.find_entities, query, limit)

    def resolve_entity(self, ref: str | int) -> int | None:
        """An entity id from an internal id, an external id, or a name/alias; None if nothing matches."""
        return self._read(queries.resolve_entity, ref)

    def get_entity(self, entity_id: int, limit: int | None = None) -> EntityView | None:
        """An entity with its aliases, current facts, history and mention count; None if unknown.

        ``limit`` caps the fact and history lists (their totals are counted in full).
        """
        return self._read(queries.get_entity, entity_id, limit)

    def entity_page(
        self, entity_id: int, as_of: dt.date | None = None, fact_limit: int = 200, passage_limit: int = 10
    ) -> EntityPage | None:
        """An entity's facts as of a date, its timeline and the passages mentioning it (bounded
        lists, see :func:`knowledge.browse.entity_page`); None for an unknown id."""
        return self._read(browse.entity_page, entity_id, as_of, fact_limit, passage_limit)

    def walk_neighbourhood(
        self, entity_id: int, hops: int = 1, as_of: dt.date | None = None, fanout: int = 25, max_facts: int = 300
    ) -> list[FactView]:
        """Facts within ``hops`` of an entity as of a date, read from SQL through the subject and
        object indexes with a per-entity cap (see :func:`knowledge.browse.walk_neighbourhood`)."""
        return self._read(browse.walk_neighbourhood, entity_id, hops, as_of, fanout, max_facts)

    def find_documents(self, query: str, limit: int = 20) -> list[DocumentHit]:
        """Documents whose text matches ``query`` by full-text search, best first (see :func:`knowledge.browse.find_documents`)."""
        return self._read(browse.find_documents, query, limit)

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
        """Facts with names resolved, in id order.

        Default: current facts. ``as_of=D``: the facts believed on D (valid_from ≤ D < valid_to).
        ``include_closed``: current and closed alike (history). ``entity``: as subject or object.
        """
        return self._read(
            queries.facts,
            entity=entity,
            subject=subject,
            relation=relation,
            object=object,
            as_of=as_of,
            include_closed=include_closed,
            ids=ids,
            limit=limit,
            offset=offset,
        )

    def count_facts(self, **filters: Any) -> int:
        """How many facts :meth:`facts` lists with these filters (no ``ids``, no page)."""
        return self._read(queries.count_facts, **filters)

    def entities_named(self, ref: str) -> list[dict[str, Any]]:
        """Every entity ``ref`` names exactly (id, external id, or any number by name/alias)."""
        return self._read(queries.entities_named, ref)

    # ------------------------------------------------------------------ edits of single records
    # Each raises edits.EditError (404 unknown, 409 conflicting state) and writes nothing then.

    def end_fact(self, fact_id: int, valid_to: dt.date) -> None:
        """Close a current fact at ``valid_to``."""
        self._write(edits.end_fact, fact_id, valid_to)

    def retract_fact(self, fact_id: int, reason: str) -> None:
        """Withdraw a fact that was never true, keeping it in the history with ``reason``."""
        self._write(edits.retract_fact, fact_id, reason)

    def create_entity(
        self, key: str, name: str, type: str | None = None, description: str | None = None, aliases: Sequence[str] = ()
    ) -> int:
        """A new entity (and its aliases); returns its id."""
        return self._write(edits.create_entity, key, name, type, description, list(aliases))

    def update_entity(self, entity_id: int, changes: dict[str, Any], aliases: Sequence[str] = ()) -> None:
        """Change an entity's name/type/description and add aliases (old names keep linking)."""
        self._write(edits.update_entity, entity_id, changes, list(aliases))

    def neighbourhood(
        self, entity_id: int, hops: int = 1, as_of: dt.date | None = None, max_fanout: int = 50, max_facts: int = 200
    ) -> list[FactView]:
        """Facts within ``hops`` of an entity, closest first: from the graph view for current
        facts, from SQL (breadth-first over ``as_of`` facts) for a past date."""
        if as_of is None:
            hood = self.graph().neighbourhood(entity_id, hops=hops, max_fanout=max_fanout, max_facts=max_facts)
            return self._read(queries.facts_in_order, [f.fact_id for f in hood])
        with self.session() as s:
            ids = queries.neighbourhood_ids_as_of(s, entity_id, hops, as_of, max_fanout, max_facts)
            return queries.facts_in_order(s, ids)

    def answer_candidates(
        self,
        query: str,
        subject_ids: Sequence[int],
        subject_words: Iterable[str] = (),
        facts: Sequence[FactView] = (),
        passage_ids: Sequence[int] = (),
        limit: int = 2000,
    ) -> list[Candidate]:
        """Entities that may fill the ``[MASK]`` of ``query`` (see :mod:`knowledge.candidates`);
        ``facts`` and ``passage_ids``: the knowledge injected with it (none: closed-book)."""
        relations = self.relations()
        with self.session() as s:
            return candidates.answer_candidates(
                s, relations, query, subject_ids, subject_words, facts, passage_ids, limit, self._ranges
            )

    def relations(self) -> list[dict[str, Any]]:
        """Every relation as a dict with ``id``, ``label``, ``template`` and ``functional``, by id."""
        return self._read(queries.relations)

    def max_fact_id(self) -> int:
        """The highest fact id, 0 for no facts."""
        return self._read(queries.max_fact_id)

    def watermark(self) -> Watermark:
        """How far the store reaches now (highest passage, fact and entity ids, latest closure)."""
        return self._read(watermark.current_watermark)

    def changes_between(self, since: Watermark, until: Watermark) -> IngestSummary:
        """What entered the store above ``since`` up to ``until`` (new passages and facts, closures)."""
        return self._read(watermark.changes_between, since, until)

    def stats(self) -> dict[str, int]:
        """Row counts of every table (facts split into current and closed)."""
        return self._read(queries.stats)

    # ------------------------------------------------------------------ queries: documents and passages

    def passage_count(self) -> int:
        """The number of passages."""
        return self._read(passages.passage_count)

    def max_passage_id(self) -> int:
        """The highest passage id, 0 for no passages."""
        return self._read(passages.max_passage_id)

    def passage_ids(self) -> set[int]:
        """Every passage id."""
        return self._read(passages.passage_ids)

    def passage_texts(self, ids: Sequence[int]) -> dict[int, str]:
        """Text by passage id for those of ``ids`` that exist."""
        return self._read(passages.passage_texts, ids)

    def passage_vectors(self, embedder: str, ids: Sequence[int]) -> dict[int, bytes]:
        """Stored vectors (little-endian float32 bytes) that ``embedder`` (its version) made, by
        passage id, for those of ``ids`` that have one."""
        return self._read(passages.passage_vectors, embedder, ids)

    def iter_passages(self, batch_size: int = 1000, after_id: int = 0) -> Iterator[list[tuple[int, str]]]:
        """(passage id, text) in id order, ``batch_size`` at a time (keyset pagination).

        Each batch is read in its own session, so a slow consumer holds no transaction open.
        """
        last = after_id
        while True:
            rows = self._read(passages.passages_after, last, batch_size)
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    def passage_info(self, ids: Sequence[int]) -> dict[int, PassageInfo]:
        """Each passage of ``ids`` with its document's title, source and date (unknown ids left out)."""
        return self._read(passages.passage_info, ids)

    def passage_ids_where(
        self, source: str | None = None, published_from: dt.date | None = None, published_to: dt.date | None = None
    ) -> set[int]:
        """Passage ids matching a source name and/or publication date range (for index filters)."""
        return self._read(passages.passage_ids_where, source, published_from, published_to)

    def lexical_search(self, query: str, k: int = 10) -> list[tuple[int, float]]:
        """Full-text search with the database's own engine, best first (higher score = better).

        SQLite: FTS5 with BM25; PostgreSQL: ``tsvector`` with ``ts_rank_cd``. Query words are
        OR-ed (any word may match; rarer words weigh more; see :func:`knowledge.passages.lexical_search`
        for the common words on PostgreSQL). Raises NotImplementedError on any other database.
        """
        return self._read(passages.lexical_search, query, k)

    def passages_mentioning(self, entity_ids: Sequence[int], k: int = 10) -> list[tuple[int, float]]:
        """Passages that mention any of ``entity_ids``, most distinct entities first."""
        return self._read(passages.passages_mentioning, entity_ids, k)

    def mentions(self, entity_id: int, limit: int = 20) -> list[dict[str, Any]]:
        """The first ``limit`` mentions of an entity (passage, span, surface, document)."""
        return self._read(passages.mentions, entity_id, limit)

    def get_document(self, document_id: int) -> dict[str, Any] | None:
        """A document with its text, metadata and passages; None for an unknown id."""
        return self._read(passages.get_document, document_id)

    def documents(
        self,
        limit: int = 50,
        offset: int = 0,
        source: str | None = None,
        published_from: dt.date | None = None,
        published_to: dt.date | None = None,
    ) -> list[dict[str, Any]]:
        """A page of documents by id (filtered by source and publication dates), with passage counts."""
        return self._read(passages.documents, limit, offset, source, published_from, published_to)

    def count_documents(
        self, source: str | None = None, published_from: dt.date | None = None, published_to: dt.date | None = None
    ) -> int:
        """How many documents match the filters of :meth:`documents`."""
        return self._read(passages.count_documents, source, published_from, published_to)

    def passage_mentions(self, passage_ids: Sequence[int]) -> dict[int, list[tuple[int, int, int]]]:
        """``(start, end, entity_id)`` of the mentions in each passage (for salient-span masking)."""
        return self._read(passages.passage_mentions, passage_ids)

    def sample_passages(
        self, n: int, max_id: int | None = None, exclude_modulo: int | None = None, seed: int | None = None
    ) -> list[tuple[int, str]]:
        """Up to ``n`` random passages with id ≤ ``max_id`` (replay for continual training).

        ``exclude_modulo=m`` leaves out ids divisible by m (kept aside as a held-out set).
        """
        return self._read(passages.sample_passages, n, max_id, exclude_modulo, seed)

    def heldout_passages(self, n: int, modulo: int, max_id: int | None = None) -> list[tuple[int, str]]:
        """The first ``n`` passages whose id is divisible by ``modulo``: a fixed held-out set."""
        return self._read(passages.heldout_passages, n, modulo, max_id)

    # ------------------------------------------------------------------ update runs and checkpoints

    def start_run(self, trigger: str) -> int:
        """A new ``update_run`` row in status "running"; returns its id."""
        return self._write(registry.start_run, trigger)

    def finish_run(self, run_id: int, **fields: Any) -> None:
        """Update a run's row (status, finished_at, timings, counts, metrics, decision, reasons, error, checkpoint_version).

        Raises ValueError, writing nothing, for any other field.
        """
        self._write(registry.finish_run, run_id, **fields)

    def abandon_running_runs(self, error: str) -> list[dict[str, Any]]:
        """Mark runs left "running" as failed with ``error`` (call only under the update lock); returns them."""
        return self._write(registry.abandon_running, error)

    def changed_since(self, since: dt.datetime) -> tuple[list[int], list[int], list[int]]:
        """Ids of the current facts created, facts closed and passages ingested from ``since`` on."""
        return self._read(registry.changed_since, since)

    def runs(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Update runs, newest first."""
        return self._read(registry.runs, limit, offset)

    def count_runs(self) -> int:
        """How many update runs there are."""
        return self._read(registry.count_runs)

    def get_run(self, run_id: int) -> dict[str, Any] | None:
        """One update run as a dict; None for an unknown id."""
        return self._read(registry.get_run, run_id)

    def record_checkpoint(
        self, version: str, parent: str | None, status: str, metrics: dict[str, Any], path: str | None = None
    ) -> None:
        """Insert or update a checkpoint's row (status: candidate / active / rejected / retired)."""
        self._write(registry.record_checkpoint, version, parent, status, metrics, path)

    def set_checkpoint_status(self, version: str, status: str) -> None:
        """Set one checkpoint's status; making one "active" retires the previous active one."""
        self._write(registry.set_checkpoint_status, version, status)

    def active_checkpoint(self) -> str | None:
        """The active checkpoint's version as SQL records it (files on disk never outvote it)."""
        return self._read(registry.active_checkpoint)

    def checkpoints(self) -> list[dict[str, Any]]:
        """Checkpoint rows, oldest first."""
        return self._read(registry.checkpoints)

    # ------------------------------------------------------------------ snapshots other processes follow

    def passage_events_after(
        self, after_id: int, limit: int = 5000, before_id: int | None = None
    ) -> list[PassageEventView]:
        """Passages added and removed above event ``after_id`` (below ``before_id``), oldest first."""
        return self._read(snapshots.events_after, after_id, limit, before_id)

    def max_passage_event_id(self) -> int:
        """The newest passage event's id (0 before any)."""
        return self._read(snapshots.max_event_id)

    def settled_passage_event_id(self, seconds: float) -> int:
        """The newest event id older than ``seconds``: a point every open transaction has passed."""
        return self._read(snapshots.settled_event_id, seconds)

    def first_event_time_after(self, after_id: int) -> dt.datetime | None:
        """When the oldest event above ``after_id`` was written (UTC), None if there is none."""
        return self._read(snapshots.first_event_time_after, after_id)

    def publish_generation(
        self, folder: str, events_through: int, vectors: int, kind: str, embedder: str | None, publisher: str
    ) -> int:
        """Record an index generation whose files are written (the commit point); returns its id."""
        return self._write(snapshots.record_generation, folder, events_through, vectors, kind, embedder, publisher)

    def latest_generation(self) -> GenerationView | None:
        """The newest published index generation, or None."""
        return self._read(snapshots.latest_generation)

    def generations(self) -> list[GenerationView]:
        """Every published generation still recorded, newest first."""
        return self._read(snapshots.generations)

    def forget_generations(self, keep: int) -> list[str]:
        """Drop all but the newest ``keep`` generation rows; returns their folders (to delete)."""
        return self._write(snapshots.forget_generations, keep)

    def check_writable(self) -> None:
        """Write and delete a row in one transaction; raises the driver's error when the database
        cannot be written (read-only file, full disk, lost connection)."""
        probe = f"write-probe-{uuid.uuid4().hex}"
        with self.session() as s, s.begin():
            lease.acquire(s, probe, probe, 1.0)
            lease.release(s, probe, probe)

    # ------------------------------------------------------------------ the cross-process lock

    def try_lock(self, name: str, holder: str, lease_seconds: float) -> bool:
        """Take the named lock for ``lease_seconds`` unless another live holder has it.

        Works the same on every database: the lock is a row, its primary key rejects a second
        holder, and an expired lease (a crashed holder) is cleared first. Returns True if taken.
        """
        try:
            self._write(lease.acquire, name, holder, lease_seconds)
        except IntegrityError:
            return False
        return True

    def renew_lock(self, name: str, holder: str, lease_seconds: float) -> bool:
        """Extend a lock this holder has; False if it was lost (expired and taken over)."""
        return self._write(lease.renew, name, holder, lease_seconds)

    def release_lock(self, name: str, holder: str) -> None:
        """Release a lock this holder has; no effect if someone else holds it."""
        self._write(lease.release, name, holder)

    def lock_holder(self, name: str) -> str | None:
        """Who holds the named lock now; None if nobody or the lease has expired."""
        return self._read(lease.current_holder, name)


# The names this module exported before the split stay importable from it.
__all__ = ["KnowledgeStore", "IngestSummary", "FactView", "EntityView", "PassageInfo", "make_engine", "migrate", "Base"]
