"""A holder that serves searches from the current index and swaps in a rebuilt one atomically.

Searches share a read lock (FAISS CPU search is thread-safe); add, remove and the swap take the
write lock (after a mutation lock that searches never take), and reconcile takes it only to read the ids and to apply the changes, never while it
embeds, so searches keep flowing during a catch-up. A rebuild
(new embedder, IVF-PQ retraining, HNSW compaction) runs in a background thread on a separate
index, then catches up with SQL and replaces the reference under the lock: a search runs wholly
on the old index or wholly on the new one, never on a mix.

A copy for saving (:meth:`IndexHandle.frozen_copy`) is taken under the mutation lock only: it
holds back adds and removes for the length of a memory copy, and never a search, so writing,
hashing and syncing files happens with no lock held at all.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval.embedder import TextEmbedder
from retrieval.index import IndexConfig, IndexState, PassageIndex
from retrieval.persist import save_index
from retrieval.reconcile import FetchTexts, ReconcileReport, build_from_passages, reconcile

log = logging.getLogger(__name__)


class ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self):
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class IndexHandle:
    """The current ``PassageIndex`` (and the embedder that made it), with search, add, remove,
    reconcile and a background rebuild-and-swap. ``folder``: where ``save()`` writes; the swap
    saves the new index there before it becomes current."""

    def __init__(self, index: PassageIndex, embedder: TextEmbedder | None = None, folder: str | Path | None = None):
        self._index = index
        self._embedder = embedder
        self.folder = Path(folder) if folder is not None else None
        self._lock = ReadWriteLock()
        # Held by every mutation before the write lock, and alone by frozen_copy: a copy being
        # taken holds back writers, never readers (a writer waiting on the read-write lock would).
        self._mutate = threading.RLock()
        self._rebuild: Future | None = None
        self.generation = 0  # bumped by every swap

    @property
    def index(self) -> PassageIndex:
        return self._index

    @property
    def embedder(self) -> TextEmbedder | None:
        return self._embedder

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: Iterable[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``PassageIndex.search`` on the current index (see there)."""
        with self._lock.read():
            return self._index.search(queries, k, allowed_ids)

    def search_texts(self, texts: Sequence[str], k: int, allowed_ids=None) -> tuple[np.ndarray, np.ndarray]:
        """Embed ``texts`` with the embedder of the current index and search it. A query is never
        embedded by one embedder and searched in another's index: if a swap changed the embedder
        while the query was embedded, it is embedded again.

        The embedding runs outside the lock: it can take tens of milliseconds (the query waits for
        a coalesced batch), and an add waiting for it would hold back every new search meanwhile."""
        while True:
            with self._lock.read():
                embedder = self._embedder
            if embedder is None:
                raise RuntimeError("this IndexHandle has no embedder; pass one or embed the queries yourself")
            vectors = embedder.encode(list(texts))
            with self._lock.read():
                if self._embedder is embedder:
                    return self._index.search(vectors, k, allowed_ids)

    @contextmanager
    def _writing(self):
        with self._mutate, self._lock.write():
            yield

    def add(self, ids, vectors: np.ndarray) -> None:
        """Add (or replace) vectors under passage ids (see ``PassageIndex.add``)."""
        with self._writing():
            self._index.add(ids, vectors)

    def remove(self, ids) -> int:
        """Remove passage ids; returns how many were present."""
        with self._writing():
            return self._index.remove(ids)

    def contains(self, ids: Sequence[int]) -> np.ndarray:
        """A boolean mask: which of ``ids`` the current index holds."""
        with self._lock.read():
            present = self._index.ids()
        return np.isin(np.asarray(ids, dtype=np.int64), present)

    def frozen_copy(self, while_frozen: Callable[[], Any] | None = None) -> tuple[PassageIndex, Any]:
        """A private copy of the current index, for saving without any lock held; returns it with
        what ``while_frozen()`` returned, called while no add or remove can run (a caller reads
        the watermark the copy covers there). Searches continue throughout."""
        with self._mutate:
            state = self._index.state()
            blob = faiss.serialize_index(state.faiss_index)
            extras = {k: np.array(v, copy=True) for k, v in state.extras.items()}
            meta = copy.deepcopy(state.meta)
            marker = while_frozen() if while_frozen is not None else None
        frozen = PassageIndex.from_state(
            IndexState(meta, faiss.deserialize_index(blob), extras, state.embedder_version)
        )
        return frozen, marker

    def reconcile(self, sql_ids: Iterable[int], fetch_texts: FetchTexts) -> ReconcileReport:
        """``retrieval.reconcile`` on the current index with its embedder (embedding outside the
        write lock, so searches continue meanwhile)."""
        with self._lock.read():
            index, embedder = self._index, self._embedder
        if embedder is None:
            raise RuntimeError("reconcile needs the handle's embedder")
        return reconcile(index, embedder, sql_ids, fetch_texts, lock=self._writing)

    def save(self) -> None:
        """Write the current index to ``folder`` (no-op without a folder)."""
        if self.folder is not None:
            frozen, _ = self.frozen_copy()
            save_index(frozen, self.folder)

    def swap(self, new_index: PassageIndex, embedder: TextEmbedder | None = None) -> PassageIndex:
        """Make ``new_index`` (and its embedder) current; returns the old index."""
        with self._writing():
            old, self._index = self._index, new_index
            if embedder is not None:
                self._embedder = embedder
            self.generation += 1
        return old

    @property
    def rebuilding(self) -> bool:
        return self._rebuild is not None and not self._rebuild.done()

    def rebuild_in_background(
        self,
        embedder: TextEmbedder,
        iter_passages: Callable[[], Iterable[Sequence[tuple[int, str]]]],
        *,
        kind: str | None = None,
        config: IndexConfig | None = None,
        sql_ids: Callable[[], Iterable[int]] | None = None,
        fetch_texts: FetchTexts | None = None,
        on_swapped: Callable[[PassageIndex], Any] | None = None,
    ) -> Future:
        """Build a new index from ``iter_passages()`` with ``embedder`` in a background thread,
        then swap it in. Searches keep being served from the old index meanwhile. When
        ``sql_ids`` (a callable giving the current passage ids) and ``fetch_texts`` are given,
        the new index is reconciled with SQL before the swap (once outside the lock for the
        bulk of the drift, once inside it so nothing committed meanwhile is missed), and saved to
        ``folder`` before it becomes current. Returns a Future of the new index; raises
        RuntimeError if a rebuild is already running."""
        if self.rebuilding:
            raise RuntimeError("an index rebuild is already running")
        future: Future = Future()
        kind = kind or self._index.kind
        config = config or self._index.config

        def run() -> None:
            try:
                new = build_from_passages(embedder, iter_passages, kind=kind, config=config)
                if sql_ids is not None and fetch_texts is not None:
                    reconcile(new, embedder, sql_ids(), fetch_texts)
                # Final catch-up under the write lock: nothing added to SQL meanwhile is missed.
                # Writers (ingest) wait for it; searches wait only for this short diff.
                with self._writing():
                    if sql_ids is not None and fetch_texts is not None:
                        reconcile(new, embedder, sql_ids(), fetch_texts)
                    if self.folder is not None:
                        save_index(new, self.folder)
                    self._index, self._embedder = new, embedder
                    self.generation += 1
                log.info("swapped in a rebuilt %s index (%d vectors, %s)", new.kind, len(new), embedder.version)
                if on_swapped is not None:
                    on_swapped(new)
                future.set_result(new)
            except BaseException as e:  # reported through the future; the old index stays current
                log.exception("index rebuild failed; keeping the current index")
                future.set_exception(e)

        self._rebuild = future
        threading.Thread(target=run, name="kecl-index-rebuild", daemon=True).start()
        return future
