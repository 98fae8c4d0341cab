"""The flat kind: exact inner-product search.

``IndexIDMap2(IndexFlatIP)``: a plain flat index shifts the positions of later vectors on
``remove_ids``; the id map keeps passage ids stable (and, unlike ``IndexIDMap``, can reconstruct
a vector by id, which the exact search over a small allowed set needs).
"""

from __future__ import annotations

from typing import Any, cast

import faiss
import numpy as np

from retrieval.config import IndexConfig
from retrieval.kinds.base import GpuMirror, exact_top_k


class FlatIndex:
    """Exact search over every stored vector (see the module docstring)."""

    def __init__(self, dim: int, config: IndexConfig, faiss_index: faiss.Index | None = None) -> None:
        self.dim = dim
        self.config = config
        # faiss.read_index returns the IndexIDMap2 subclass of a saved one
        self._index = cast(
            faiss.IndexIDMap2, faiss_index if faiss_index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        )
        self._gpu = GpuMirror(config.use_gpu)

    @classmethod
    def from_parts(
        cls,
        dim: int,
        config: IndexConfig,
        faiss_index: faiss.Index,
        extras: dict[str, np.ndarray],
        meta: dict[str, Any],
    ) -> FlatIndex:
        """A flat index around a loaded ``IndexIDMap2`` (no extras, no meta of its own)."""
        return cls(dim, config, faiss_index)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        n = self._index.ntotal
        if not n:
            return np.zeros(0, dtype=np.int64)
        return np.sort(faiss.rev_swig_ptr(self._index.id_map.data(), n).copy())

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._index.add_with_ids(vectors, ids)
        self._gpu.invalidate()

    def remove(self, ids: np.ndarray) -> int:
        self._gpu.invalidate()
        return int(self._index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))))

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if allowed is None:
            return self._gpu.index_for(self._index).search(queries, k)
        if len(allowed) <= self.config.exact_filter_max:
            present = allowed[np.isin(allowed, self.ids())]
            vectors = self._index.reconstruct_batch(present) if len(present) else np.zeros((0, self.dim), np.float32)
            return exact_top_k(queries, present, vectors, k)
        selector = faiss.IDSelectorBatch(len(allowed), faiss.swig_ptr(allowed))
        # the selector must outlive the search; faiss's stubs leave out the keyword arguments its wrapper adds
        params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
        return self._index.search(queries, k, params=params)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (all present), in that order."""
        return self._index.reconstruct_batch(ids)

    @property
    def tombstones(self) -> int:
        return 0

    @property
    def needs_compaction(self) -> bool:
        return False

    @property
    def needs_retrain(self) -> bool:
        return False

    @property
    def trained_count(self) -> int:
        return 0

    def compact(self) -> None:
        """Nothing to drop: removed vectors are gone at once."""

    def faiss_index(self) -> faiss.Index:
        return self._index

    def extras(self) -> dict[str, np.ndarray]:
        return {}

    def meta(self) -> dict[str, Any]:
        return {}
