"""The IVF-PQ kind: compressed vectors, for stores past memory.

IVF stores passage ids itself and supports ``remove_ids``. Its quantizers are trained on a sample
once ``ivf_train_min`` vectors have arrived; until then the vectors wait in a small exact
(flat) index that answers searches. ``needs_retrain`` turns true once the data has grown past
``retrain_factor`` times what it was trained on; retraining is a rebuild from SQL, because the
raw vectors are not kept (PQ codes cannot give them back).
"""

from __future__ import annotations

import logging
import math
from typing import Any, cast

import faiss
import numpy as np

from retrieval.config import IndexConfig
from retrieval.kinds.base import GpuMirror
from retrieval.kinds.flat import FlatIndex

log = logging.getLogger(__name__)


def _pending_index(dim: int, faiss_index: faiss.Index | None = None) -> FlatIndex:
    # Its own default config: the waiting vectors are few and never searched on a GPU.
    return FlatIndex(dim, IndexConfig(use_gpu=False), faiss_index)


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, cap + 1) if n % d == 0)


class IvfPqIndex:
    """IVF-PQ, trained on a sample once enough vectors are there (see the module docstring)."""

    def __init__(self, dim: int, config: IndexConfig) -> None:
        self.dim = dim
        self.config = config
        # The waiting vectors (a FlatIndex) until training, the trained IVF-PQ index after.
        self._index: FlatIndex | faiss.IndexIVFPQ = _pending_index(dim)
        self._trained_count = 0
        self._warned_retrain = False
        self._gpu = GpuMirror(config.use_gpu)

    @classmethod
    def from_parts(
        cls,
        dim: int,
        config: IndexConfig,
        faiss_index: faiss.Index,
        extras: dict[str, np.ndarray],
        meta: dict[str, Any],
    ) -> IvfPqIndex:
        """An IVF-PQ index around a loaded faiss index: the trained ``IndexIVFPQ``, or while
        ``meta["pending"]`` the flat index of the vectors waiting for training."""
        index = cls(dim, config)
        index._trained_count = int(meta.get("trained_count", 0))
        if meta.get("pending"):
            index._index = _pending_index(dim, faiss_index)
        else:
            index._index = cast(faiss.IndexIVFPQ, faiss_index)  # faiss.read_index returns the subclass
        return index

    @property
    def pending(self) -> bool:
        """True while the vectors wait for training in a flat index."""
        return isinstance(self._index, FlatIndex)

    def __len__(self) -> int:
        if isinstance(self._index, FlatIndex):
            return len(self._index)
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        if isinstance(self._index, FlatIndex):
            return self._index.ids()
        invlists = self._index.invlists
        if invlists is None:  # faiss's constructor and read_index always attach the lists
            raise RuntimeError("ivfpq index has no inverted lists")
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
            for i in range(invlists.nlist)
            if invlists.list_size(i)
        ]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._gpu.invalidate()
        if isinstance(self._index, FlatIndex):
            self._index.add(ids, vectors)
            if len(self._index) >= self.config.ivf_train_min:
                self._train(self._index)
            return
        self._index.add_with_ids(vectors, ids)
        if self.needs_retrain and not self._warned_retrain:
            self._warned_retrain = True  # once per index, not per batch
            log.warning(
                "IVF-PQ index holds %d vectors, trained on %d: rebuild it (kecl index build)",
                len(self),
                self._trained_count,
            )

    def remove(self, ids: np.ndarray) -> int:
        self._gpu.invalidate()
        if isinstance(self._index, FlatIndex):
            return self._index.remove(ids)
        return int(self._index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))))

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(self._index, FlatIndex):
            return self._index.search(queries, k, allowed)
        params = faiss.SearchParametersIVF()
        params.nprobe = min(self.config.ivf_nprobe, self._index.nlist)
        if allowed is None:
            if self._gpu.enabled:
                return self._gpu.index_for(self._index).search(queries, k)  # GPU copy: selectors stay on the CPU
            return self._index.search(queries, k, params=params)
        # Always through the selector: PQ codes cannot give back the vectors an exact search needs.
        selector = faiss.IDSelectorBatch(len(allowed), faiss.swig_ptr(allowed))
        params.sel = selector
        return self._index.search(queries, k, params=params)

    @property
    def tombstones(self) -> int:
        return 0

    @property
    def needs_compaction(self) -> bool:
        return False

    @property
    def needs_retrain(self) -> bool:
        return not self.pending and len(self) > self.config.retrain_factor * max(1, self._trained_count)

    @property
    def trained_count(self) -> int:
        return self._trained_count

    def compact(self) -> None:
        """Nothing to drop: IVF removes vectors at once."""

    def faiss_index(self) -> faiss.Index:
        return self._index.faiss_index() if isinstance(self._index, FlatIndex) else self._index

    def extras(self) -> dict[str, np.ndarray]:
        return {}

    def meta(self) -> dict[str, Any]:
        return {"trained_count": self._trained_count, "pending": self.pending}

    def _train(self, pending: FlatIndex) -> None:
        """Train the quantizers on (a sample of) the waiting vectors, then index them all."""
        ids = pending.ids()
        vectors = pending.vectors(ids)
        n = len(ids)
        cfg = self.config
        nlist = cfg.ivf_nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        pq_m = cfg.pq_m or _largest_divisor_at_most(self.dim, max(1, self.dim // 8))
        # k-means wants ~39 training points per centroid: fewer bits while the sample is small.
        nbits = cfg.pq_nbits if n >= 39 * 2**cfg.pq_nbits else max(1, int(math.log2(max(2, n // 39))))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, pq_m, nbits, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        # the IVF index owns (and frees) its coarse quantizer now; faiss's stubs leave out SWIG's ownership handle
        quantizer.this.disown()  # type: ignore[attr-defined]
        rng = np.random.default_rng(0)
        sample = vectors if n <= cfg.ivf_train_sample else vectors[rng.choice(n, cfg.ivf_train_sample, replace=False)]
        log.info("training IVF-PQ (nlist=%d, m=%d, nbits=%d) on %d of %d vectors", nlist, pq_m, nbits, len(sample), n)
        index.train(sample)
        index.add_with_ids(vectors, ids)
        self._index = index
        self._trained_count = n
