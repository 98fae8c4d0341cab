"""The running system: one object that owns the store, the index and the encoder for a process.

The API server, the scheduler job and the CLI each build one :class:`Kecl` from settings.
Components are built on first use by :mod:`kecl.wiring` (a process that only reads the store never
loads a model), and an ingest goes to SQL first, then to the index, so a document is searchable the
moment it is stored (read-your-writes).

A long-running process also *follows* SQL (:meth:`Kecl.follow`): passages other processes add or
remove reach its index through the event log (:mod:`kecl.follow`), a newly active checkpoint or a
rebuilt index generation is loaded in the background and swapped in, and the process may become
the one index publisher (:mod:`kecl.publish`). Nothing on the request path writes index files.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any

from encoder import MLMBundle
from kecl import heap, wiring
from kecl.batching import MicroBatcher
from kecl.evidence import pipeline_retrieval, pipeline_source
from kecl.follow import IndexFollower, VectorTally, embed_chunks, embed_into
from kecl.home import open_store
from kecl.pipeline import Answer, QueryOptions, answer_modes, answer_queries
from kecl.publish import IndexPublisher, publish_once
from kecl.search import SearchHit, hybrid_search
from kecl.settings import Settings
from kecl.threads import ASK_MODES, side_by_side, use_all_cores
from knowledge import (
    ChunkEmbedder,
    DocumentRecord,
    GenerationView,
    IngestSummary,
    KnowledgeStore,
    PassageVectors,
    ReadBatch,
    iter_input_files,
)
from retrieval import CoalescingEmbedder, IndexHandle, reconcile
from updater import CycleConfig, CycleContext, CycleReport, KnowledgeSource, run_cycle

log = logging.getLogger("kecl")

_SERVING: dict[str, Kecl] = {}


def serving_kecl(home: str | None) -> Kecl | None:
    """The Kecl this process serves for ``home`` (so a scheduled cycle in ``kecl serve
    --scheduler`` reloads the serving model on promotion), or None."""
    if home is None:
        return next(iter(_SERVING.values()), None)
    return _SERVING.get(str(Path(home).resolve()))


class Kecl:
    """Store + index + encoder for one process, built from :class:`Settings`."""

    def __init__(self, settings: Settings | None = None, store: KnowledgeStore | None = None) -> None:
        self.settings: Settings = settings or Settings()
        self._given_store = store
        self._lock = threading.RLock()
        self._index: IndexHandle | None = None
        self._embedder: CoalescingEmbedder | None = None
        self._index_dirty = False
        self._encoder: MLMBundle | None = None
        self._batcher: MicroBatcher | None = None
        self._modes_pool: ThreadPoolExecutor | None = None
        self._start_watermark = 0  # every passage event up to it is in the index as loaded
        self.follower: IndexFollower | None = None
        self.vector_tally = VectorTally()  # how the vectors this process indexed came (GET /metrics)
        self.publisher: IndexPublisher | None = None
        self._background: threading.Thread | None = None  # a checkpoint reload or generation swap
        self._seen_generation: int | None = None

    # ---------------------------------------------------------------- components

    @cached_property
    def store(self) -> KnowledgeStore:
        return self._given_store or open_store(self.settings)

    @property
    def embedder(self) -> CoalescingEmbedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = wiring.make_embedder(self.settings)
            return self._embedder

    @property
    def index(self) -> IndexHandle:
        """The passage index: loaded, verified and reconciled with SQL on first use."""
        with self._lock:
            if self._index is None:
                self._index, self._start_watermark = wiring.load_current_index(self.settings, self.store, self.embedder)
            return self._index

    @property
    def index_loaded(self) -> bool:
        return self._index is not None

    @property
    def encoder(self) -> MLMBundle:
        """The active checkpoint's encoder (or the configured base model before any training)."""
        with self._lock:
            if self._encoder is None:
                self._encoder = wiring.load_encoder(self.settings, self.store)
            return self._encoder

    def reload_encoder(self) -> MLMBundle:
        """Swap in the active checkpoint (after a promotion or rollback). In-flight queries finish
        on the model they started with; the next ones use the new one."""
        bundle = wiring.load_encoder(self.settings, self.store)
        with self._lock:
            self._encoder = bundle
        heap.refreeze()
        return bundle

    @property
    def batcher(self) -> MicroBatcher:
        """Batches concurrent queries into shared forward passes (used by the API)."""
        with self._lock:
            if self._batcher is None:
                self._batcher = MicroBatcher(self)
            return self._batcher

    def serving_checkpoint(self) -> str | None:
        """The checkpoint this process answers with (None before the encoder is loaded, or the
        base model's name before any checkpoint)."""
        enc = self._encoder
        return (enc.version or enc.metadata.get("name_or_path")) if enc is not None else None

    def snapshot(self) -> dict[str, Any]:
        """Which state answered: encoder version, index (embedder, size, generation), SQL watermark."""
        out: dict[str, Any] = {
            "checkpoint": self.serving_checkpoint(),
            "watermark": {
                "passage": self.store.max_passage_id(),
                "fact": self.store.max_fact_id(),
                "event": self.watermark(),
            },
        }
        if self._index is not None:
            idx = self._index.index
            out["index"] = {
                "kind": idx.kind,
                "embedder": idx.embedder_version,
                "vectors": len(idx),
                "generation": self._index.generation,
            }
        return out

    # ---------------------------------------------------------------- reads

    def answer(self, texts: Sequence[str], opts: QueryOptions | None = None) -> list[Answer]:
        """Answer cloze queries (see :func:`kecl.pipeline.answer_queries`)."""
        return answer_queries(self, list(texts), opts or QueryOptions())

    def answer_modes(self, text: str, modes: Sequence[str], opts: QueryOptions | None = None) -> dict[str, Answer]:
        """One cloze query in several modes, its knowledge selected once (see :func:`kecl.pipeline.answer_modes`);
        the modes run side by side where two fit on the cores at this thread's width (a server's)."""
        return answer_modes(self, text, list(modes), opts or QueryOptions(), self._modes_executor(len(modes)))

    def _modes_executor(self, modes: int) -> ThreadPoolExecutor | None:
        if not side_by_side(modes):
            return None
        with self._lock:
            if self._modes_pool is None:
                self._modes_pool = ThreadPoolExecutor(ASK_MODES, thread_name_prefix="kecl-mode")
            return self._modes_pool

    def query(self, text: str, **options: Any) -> Answer:
        """Answer one cloze query (``[MASK]`` marks the word to predict); ``options`` are
        :class:`kecl.pipeline.QueryOptions` fields (``mode``, ``k_passages``, ``as_of``, ``top_k``, …).

        Raises ValueError for a text without ``[MASK]`` or an unknown mode, TypeError for an unknown option.
        """
        return self.answer([text], QueryOptions(**options))[0]

    def stats(self) -> dict[str, int]:
        """Row counts of the store's tables (what ``kecl inspect stats`` shows)."""
        return self.store.stats()

    def search(
        self,
        query: str,
        k: int = 4,
        *,
        source: str | None = None,
        published_from: dt.date | None = None,
        published_to: dt.date | None = None,
    ) -> list[SearchHit]:
        """Hybrid search (dense + lexical + entity, fused); optional source / date filters."""
        allowed = None
        if source is not None or published_from is not None or published_to is not None:
            allowed = self.store.passage_ids_where(source, published_from, published_to)
            if not allowed:
                return []
        return hybrid_search(
            query, k, store=self.store, index_handle=self.index, weights=self.settings.retrieval, allowed_ids=allowed
        )

    def knowledge_source(self) -> KnowledgeSource:
        """``(texts, mode) -> (facts, passages)`` as the query pipeline retrieves them (for augmented evaluation)."""
        return pipeline_source(self)

    # ---------------------------------------------------------------- writes

    def ingest_documents(self, records: Sequence[DocumentRecord]) -> IngestSummary:
        """Store documents (SQL first), then embed their new passages into the index."""
        summary = IngestSummary()
        self.store.add_documents(records, summary=summary, embed=self._chunk_embedder())
        self._index_new_passages(summary)
        return summary

    def ingest(self, paths: Sequence[str | Path]) -> IngestSummary:
        """Ingest corpus files and fact feeds (files or folders, as ``kecl ingest`` does): stored,
        linked and searchable on return. Bad files and records are reported in ``issues`` and skipped."""
        summary = self.store.ingest_paths(iter_input_files([Path(p) for p in paths]), embed=self._chunk_embedder())
        self._index_new_passages(summary)
        self.flush()
        return summary

    def ingest_batch(self, batch: ReadBatch) -> IngestSummary:
        """Write one read batch (feeds and documents); new passages go into the index."""
        summary = self.store.ingest_batch(batch, embed=self._chunk_embedder())
        self._index_new_passages(summary)
        return summary

    def _index_new_passages(self, summary: IngestSummary) -> None:
        if not summary.new_passage_ids:
            return
        fetch_vectors = None
        if self.settings.processes.share_vectors:
            written = {(pid, embedder): vector for pid, embedder, vector in summary.stored_vectors}

            def fetch_vectors(embedder: str, ids: Sequence[int]) -> Mapping[int, bytes]:
                found = {pid: written[pid, embedder] for pid in ids if (pid, embedder) in written}
                rest = [pid for pid in ids if pid not in found]
                return {**found, **self.store.passage_vectors(embedder, rest)} if rest else found

        embed_into(self.index, summary.new_passage_ids, self.store.passage_texts, fetch_vectors, self.vector_tally)
        self._index_dirty = True

    def _chunk_embedder(self) -> ChunkEmbedder | None:
        """What embeds new passages before they are stored, so their vectors go into SQL with them
        (None when vectors are not shared: the passages are embedded after the write, as before)."""
        if not self.settings.processes.share_vectors:
            return None

        def embed(texts: list[str]) -> PassageVectors:
            embedder = self.index.embedder
            if embedder is None:
                raise RuntimeError("the passage index has no embedder to embed new passages with")
            return embed_chunks(embedder, texts)

        return embed

    def delete_document(self, document_id: int) -> list[int]:
        """Delete a document and its passages from SQL, then from the index; returns the passage ids."""
        removed = self.store.delete_document(document_id)
        if removed and self._index is not None:
            self._index.remove(removed)
            self._index_dirty = True
        return removed

    def flush(self) -> None:
        """Make the index's changes durable: a following process leaves that to the publisher's
        background thread; a one-shot command publishes a generation itself if the lease is free
        (another holder publishes otherwise). A crash before this loses nothing: SQL has it all."""
        if self.publisher is not None or self._index is None or not self._index_dirty:
            return
        if publish_once(self.settings, self.store, self._index, self.watermark):
            self._index_dirty = False

    def watermark(self) -> int:
        """The passage event this process's index is complete through."""
        return self.follower.watermark if self.follower is not None else self._start_watermark

    # ---------------------------------------------------------------- following other processes

    def follow(self, publish: bool = True) -> None:
        """Keep this process in step with SQL from now on (see :mod:`kecl.follow`); with
        ``publish``, also take the index publisher's lease whenever it is free."""
        handle = self.index
        if self.follower is None:
            p = self.settings.processes
            self.follower = IndexFollower(
                self.store,
                handle,
                self._start_watermark,
                poll_seconds=p.poll_seconds,
                snapshot_poll_seconds=p.snapshot_poll_seconds,
                gap_seconds=p.gap_seconds,
                on_tick=self.check_snapshot,
                read_vectors=p.share_vectors,
                tally=self.vector_tally,
            )
            self._seen_generation = g.id if (g := self.store.latest_generation()) is not None else None
            self.follower.start()
        if publish and self.publisher is None:
            self.publisher = IndexPublisher(self.settings, self.store, lambda: self.index, self.watermark)
            self.publisher.start()

    def check_snapshot(self) -> None:
        """Load, in the background, a checkpoint SQL made active or an index generation another
        process rebuilt (another embedder or kind) since this process loaded its own."""
        if self._background is not None and self._background.is_alive():
            return
        active = self.store.active_checkpoint()
        if self._encoder is not None and active is not None and active != self._encoder.version:
            log.info("checkpoint %s is active in SQL; loading it (serving %s meanwhile)", active, self._encoder.version)
            self._in_background(self.reload_encoder)
            return
        generation = self.store.latest_generation()
        if generation is None or generation.id == self._seen_generation or self._index is None:
            return
        self._seen_generation = generation.id
        current = self._index.index
        if (generation.embedder, generation.kind) != (current.embedder_version, current.kind):
            self._in_background(lambda: self._swap_generation(generation))

    def _in_background(self, job: Any) -> None:
        self._background = threading.Thread(target=job, name="kecl-snapshot-load", daemon=True)
        self._background.start()

    def _swap_generation(self, generation: GenerationView) -> None:
        handle = self.index
        embedder: Any = handle.embedder
        if getattr(embedder, "version", None) != generation.embedder and self.settings.index.embedder == "encoder":
            embedder = wiring.make_embedder(self.settings, encoder=self.encoder)
        if getattr(embedder, "version", None) != generation.embedder:
            log.warning(
                "index generation %d was made by %s, this process embeds with %s; not loading it",
                generation.id,
                generation.embedder,
                getattr(embedder, "version", None),
            )
            return
        new = wiring.load_generation(self.settings, self.store, generation.folder, embedder)
        assert self.follower is not None  # generations are checked by the follower's thread
        with self.follower.lock:
            # Final catch-up while no event is applied to the old index: nothing falls between.
            reconcile(
                new,
                embedder,
                self.store.passage_ids(),
                self.store.passage_texts,
                fetch_vectors=wiring.stored_vectors_of(self.settings, self.store),
            )
            handle.swap(new, embedder)
        heap.refreeze()
        log.info("serving index generation %d (%s, %d vectors)", generation.id, new.kind, len(new))

    # ---------------------------------------------------------------- the update cycle

    def register_serving(self) -> None:
        """Make this the process's serving Kecl (scheduled jobs then update it in place)."""
        _SERVING[str(self.settings.home.resolve())] = self

    def cycle_context(self, holder: str | None = None) -> CycleContext:
        """Everything an update cycle works on, wired to this process's store, index and encoder
        (``holder``: the name the cycle takes its lock under; a fresh one by default)."""

        def on_promote(version: str) -> None:
            self.reload_encoder()
            if self.settings.index.embedder == "encoder" and self._index is not None:
                self.reembed_index()

        # one retrieval per (text, mode) for the reading exercises and both evaluations of the cycle
        knowledge, candidates = pipeline_retrieval(self)
        return CycleContext(
            store=self.store,
            checkpoints_dir=self.settings.checkpoints_dir,
            load_active=lambda: wiring.load_training_copy(self.settings, self.store),
            add_to_index=self._index_new_passages,
            embed_chunks=self._chunk_embedder(),
            knowledge=knowledge,
            candidates=candidates if self.settings.answers.entities else None,
            on_promote=on_promote,
            inbox_dir=self.settings.inbox_dir,
            holder=holder,
        )

    def run_update(
        self,
        paths: Sequence[Path] | None = None,
        trigger: str = "manual",
        config: CycleConfig | None = None,
        wait_seconds: float = 0.0,
        holder: str | None = None,
    ) -> CycleReport:
        """One update cycle (inbox files by default), waiting up to ``wait_seconds`` for another
        process's cycle to finish; see :func:`updater.run_cycle`."""
        _ = self.index  # load and reconcile first, so new passages land in an index that is complete
        use_all_cores()  # training is one task: in a server it would otherwise get a request's narrow width
        report = run_cycle(
            self.cycle_context(holder),
            config or wiring.cycle_config(self.settings),
            paths=paths,
            trigger=trigger,
            wait_seconds=wait_seconds,
        )
        self.flush()
        return report

    def reembed_index(self) -> Future[Any]:
        """Rebuild the index with the (new) active encoder as embedder in the background, then swap."""
        embedder = wiring.make_embedder(self.settings, encoder=self.encoder)
        return self.index.rebuild_in_background(
            embedder,
            lambda: self.store.iter_passages(batch_size=1000),
            config=wiring.index_config(self.settings),
            sql_ids=self.store.passage_ids,
            fetch_texts=self.store.passage_texts,
        )

    def __enter__(self) -> Kecl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the batcher and the embedder's worker, save the index if it changed, close the store."""
        if self.follower is not None:
            self.follower.stop()
        if self.publisher is not None:
            self.publisher.stop(publish=True)
        if self._batcher is not None:
            self._batcher.close()
        if self._modes_pool is not None:
            self._modes_pool.shutdown(wait=True)
        self.flush()
        if self._embedder is not None:
            self._embedder.close()  # its worker thread
        if "store" in self.__dict__:
            self.store.close()
