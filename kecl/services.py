"""The running system: one object that owns the store, the index and the encoder for a process.

The API server, the scheduler and the CLI each build one ``Kecl`` from settings. Components are
created on first use (a CLI command that only reads the store never loads torch models), and an
ingest goes to SQL first, then to the index, so a document is searchable the moment it is stored.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from kecl.settings import Settings
from kecl.wiring import open_store
from knowledge import DocumentRecord, IngestSummary, KnowledgeStore, ReadBatch

log = logging.getLogger("kecl")

_ACTIVE: dict[str, Kecl] = {}


def active_kecl(home: str | None) -> Kecl | None:
    """The Kecl this process serves for ``home`` (so a scheduled cycle in ``kecl serve
    --scheduler`` reloads the serving model on promotion), or None."""
    from pathlib import Path

    key = str(Path(home).resolve()) if home else None
    if key is None:
        return next(iter(_ACTIVE.values()), None)
    return _ACTIVE.get(key)


class Kecl:
    """Store + index (+ encoder, added by the query layer) for one process."""

    def __init__(self, settings: Settings | None = None, store: KnowledgeStore | None = None) -> None:
        self.settings = settings or Settings()
        self._store = store
        self._lock = threading.RLock()
        self._index = None
        self._embedder = None
        self._index_dirty = False
        self._encoder = None
        self._batcher = None

    # ---------------------------------------------------------------- components

    @cached_property
    def store(self) -> KnowledgeStore:
        return self._store or open_store(self.settings)

    @property
    def embedder(self) -> Any:
        with self._lock:
            if self._embedder is None:
                from kecl.search import make_embedder

                self._embedder = make_embedder(self.settings)
            return self._embedder

    @property
    def index(self) -> Any:
        """The passage index handle: loaded, verified and reconciled with SQL on first use."""
        with self._lock:
            if self._index is None:
                from kecl.search import open_index

                self._index = open_index(self.settings, self.store, self.embedder)
            return self._index

    @property
    def index_loaded(self) -> bool:
        return self._index is not None

    @property
    def encoder(self) -> Any:
        """The active checkpoint's encoder (or the configured base model before any training)."""
        with self._lock:
            if self._encoder is None:
                self._encoder = self._load_encoder()
            return self._encoder

    def _load_encoder(self) -> Any:
        from encoder.checkpoints import load_active
        from encoder.model import load_mlm

        bundle = load_active(self.settings.checkpoints_dir, device=self.settings.model.device)
        if bundle is None:
            log.warning(
                "no active checkpoint in %s: serving the base model %s (run `kecl init` to adapt it)",
                self.settings.checkpoints_dir,
                self.settings.model.name_or_path,
            )
            bundle = load_mlm(self.settings.model.name_or_path, device=self.settings.model.device)
        from encoder.trainer import bf16_supported

        bundle.inference_bf16 = self.settings.model.bf16 and bf16_supported(bundle.device)
        return bundle

    def reload_encoder(self) -> Any:
        """Swap in the active checkpoint (after a promotion or rollback). In-flight queries finish
        on the model they started with; the next ones use the new one."""
        bundle = self._load_encoder()
        with self._lock:
            self._encoder = bundle
        return bundle

    def snapshot(self) -> dict[str, Any]:
        """Which state answered: encoder version, index (embedder, size, generation), SQL watermark."""
        enc = self._encoder
        out: dict[str, Any] = {
            "checkpoint": (enc.version or enc.metadata.get("name_or_path")) if enc is not None else None,
            "watermark": {"passage": self.store.max_passage_id(), "fact": self.store.max_fact_id()},
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

    def answer(self, texts: Sequence[str], opts: Any = None) -> list[Any]:
        """Answer cloze queries (see :func:`kecl.pipeline.answer_queries`)."""
        from kecl.pipeline import QueryOptions, answer_queries

        return answer_queries(self, list(texts), opts or QueryOptions())

    @property
    def batcher(self) -> Any:
        """Batches concurrent queries into shared forward passes (used by the API)."""
        with self._lock:
            if self._batcher is None:
                from kecl.pipeline import MicroBatcher

                self._batcher = MicroBatcher(self)
            return self._batcher

    # ---------------------------------------------------------------- writes

    def ingest_documents(self, records: Sequence[DocumentRecord]) -> IngestSummary:
        """Store documents (SQL first), then embed their new passages into the index."""
        summary = IngestSummary()
        self.store.add_documents(records, summary=summary)
        self._index_new_passages(summary.new_passage_ids)
        return summary

    def ingest_batch(self, batch: ReadBatch) -> IngestSummary:
        """Write one read batch (feeds and documents); new passages go into the index."""
        summary = self.store.ingest_batch(batch)
        self._index_new_passages(summary.new_passage_ids)
        return summary

    def _index_new_passages(self, passage_ids: list[int]) -> None:
        if not passage_ids:
            return
        import numpy as np

        handle = self.index
        items = sorted(self.store.passage_texts(passage_ids).items())
        ids = np.array([pid for pid, _ in items], dtype=np.int64)
        while True:
            # Embed with the embedder of the index we add to: if a re-embedding swap happened
            # meanwhile (its reconcile already covers SQL's passages), embed again for the new one.
            generation = handle.generation
            vectors = handle.embedder.encode([text for _, text in items])
            if handle.generation == generation:
                handle.add(ids, vectors)
                break
        self._index_dirty = True

    def delete_document(self, document_id: int) -> list[int]:
        removed = self.store.delete_document(document_id)
        if removed and self._index is not None:
            self._index.remove(removed)
            self._index_dirty = True
        return removed

    def flush(self) -> None:
        """Persist the index if it changed. A crash before this is healed by start-up reconcile."""
        with self._lock:
            if self._index is not None and self._index_dirty:
                self._index.save()
                self._index_dirty = False

    # ---------------------------------------------------------------- reads

    def search(
        self,
        query: str,
        k: int = 4,
        *,
        source: str | None = None,
        published_from: dt.date | None = None,
        published_to: dt.date | None = None,
    ) -> list[Any]:
        """Hybrid search (dense + lexical + entity, fused); optional source / date filters."""
        from kecl.search import hybrid_search

        allowed = None
        if source is not None or published_from is not None or published_to is not None:
            allowed = self.store.passage_ids_where(source, published_from, published_to)
            if not allowed:
                return []
        return hybrid_search(
            query, k, store=self.store, index_handle=self.index, weights=self.settings.retrieval, allowed_ids=allowed
        )

    # ---------------------------------------------------------------- the update cycle

    def register_active(self) -> None:
        """Make this the process's serving Kecl (scheduled jobs then update it in place)."""
        _ACTIVE[str(self.settings.home.resolve())] = self

    def knowledge_source(self) -> Any:
        """``(texts, mode) -> (facts, passages)`` from the query pipeline, for augmented evaluation."""
        from kecl.pipeline import QueryOptions, retrieve

        def source(texts: Sequence[str], mode: str) -> tuple[list[list[Any]], list[list[Any]]]:
            opts = QueryOptions(mode=mode, k_passages=self.settings.retrieval.k)  # type: ignore[arg-type]
            prepared = [retrieve(self, t, opts) for t in texts]
            return [p.facts for p in prepared], [p.passages for p in prepared]

        return source

    def cycle_context(self) -> Any:
        """Everything an update cycle needs, wired from settings."""
        from encoder.checkpoints import load_active
        from encoder.model import load_mlm
        from updater.cycle import CycleContext

        def fresh_active() -> Any:
            return load_active(self.settings.checkpoints_dir, device=self.settings.model.device) or load_mlm(
                self.settings.model.name_or_path, device=self.settings.model.device
            )

        def on_promote(version: str) -> None:
            self.reload_encoder()
            if self.settings.index.embedder == "encoder" and self._index is not None:
                self.reembed_index()

        return CycleContext(
            store=self.store,
            checkpoints_dir=self.settings.checkpoints_dir,
            load_active=fresh_active,
            add_to_index=self._index_new_passages,
            knowledge=self.knowledge_source(),
            on_promote=on_promote,
            inbox_dir=self.settings.inbox_dir,
        )

    def cycle_config(self) -> Any:
        """The cycle's training and gate settings."""
        from kecl.wiring import train_config
        from updater.cycle import CycleConfig, GateConfig

        g = self.settings.gates
        train = train_config(self.settings)
        return CycleConfig(
            train=train,
            gates=GateConfig(g.max_retention_drop, g.max_loss_increase, g.min_acquisition),
            evidence_boost=self.settings.model.evidence_boost,
        )

    def run_update(self, paths: Sequence[Any] | None = None, trigger: str = "manual", config: Any = None) -> Any:
        """One update cycle (inbox files by default); see :func:`updater.cycle.run_cycle`."""
        from updater.cycle import run_cycle

        _ = self.index  # load and reconcile first, so new passages land in an index that is complete
        report = run_cycle(self.cycle_context(), config or self.cycle_config(), paths=paths, trigger=trigger)
        self.flush()
        return report

    def reembed_index(self) -> Any:
        """Rebuild the index with the (new) active encoder as embedder in the background, then swap."""
        from kecl.search import make_embedder
        from retrieval import IndexConfig

        bundle = self.encoder
        embedder = make_embedder(self.settings, encoder=(bundle.model.bert, bundle.tokenizer, bundle.version or "base"))
        return self.index.rebuild_in_background(
            embedder,
            lambda: self.store.iter_passages(batch_size=1000),
            config=IndexConfig.from_settings(self.settings.index),
            sql_ids=self.store.passage_ids,
            fetch_texts=self.store.passage_texts,
        )

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
        self.flush()
        if self._embedder is not None and hasattr(self._embedder, "close"):
            self._embedder.close()  # its worker thread (CoalescingEmbedder)
        if "store" in self.__dict__:
            self.store.close()
