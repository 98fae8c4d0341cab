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
            log.warning("no active checkpoint in %s: serving the base model %s (run `kecl init` to adapt it)",
                        self.settings.checkpoints_dir, self.settings.model.name_or_path)
            bundle = load_mlm(self.settings.model.name_or_path, device=self.settings.model.device)
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
            out["index"] = {"kind": idx.kind, "embedder": idx.embedder_version, "vectors": len(idx),
                            "generation": self._index.generation}
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
        from retrieval.reconcile import embed_and_add

        handle = self.index
        texts = self.store.passage_texts(passage_ids)
        with handle._lock:  # the embedder and index that serve searches, read together
            embed_and_add(handle.index, handle.embedder, sorted(texts.items()))
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
        return hybrid_search(query, k, store=self.store, index_handle=self.index,
                             weights=self.settings.retrieval, allowed_ids=allowed)

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
        self.flush()
        if "store" in self.__dict__:
            self.store.close()
