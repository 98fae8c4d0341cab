"""The HNSW kind: graph search for large stores.

HNSW cannot remove vectors, so removed passages become tombstones: a bitmap over graph positions
passed as an ``IDSelectorBitmap`` at search time, and ``compact()`` rebuilds the graph from the
stored vectors (``IndexHNSWFlat`` keeps them exactly) without them. The graph knows positions,
not passage ids: ``labels`` maps position -> passage id and ``alive`` marks the live positions;
both are saved next to the graph.
"""

from __future__ import annotations

from typing import Any, cast

import faiss
import numpy as np

from retrieval.config import IndexConfig
from retrieval.kinds.base import exact_top_k


def _new_graph(dim: int, config: IndexConfig) -> faiss.IndexHNSWFlat:
    graph = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = config.hnsw_ef_construction
    return graph


class HnswIndex:
    """Graph search with tombstones (see the module docstring)."""

    def __init__(self, dim: int, config: IndexConfig) -> None:
        self.dim = dim
        self.config = config
        self._index = _new_graph(dim, config)
        self._labels = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._n_alive = 0  # a count, not summed per search (a 1M-long mask)
        self._alive_bitmap: np.ndarray | None = None  # packed _alive, cached between mutations

    @classmethod
    def from_parts(
        cls,
        dim: int,
        config: IndexConfig,
        faiss_index: faiss.Index,
        extras: dict[str, np.ndarray],
        meta: dict[str, Any],
    ) -> HnswIndex:
        """An HNSW index around a loaded graph and its ``labels`` / ``alive`` arrays (copied, so
        the caller's arrays never change with this index)."""
        index = cls(dim, config)
        index._index = cast(faiss.IndexHNSWFlat, faiss_index)  # faiss.read_index returns the subclass
        index._index.hnsw.efConstruction = config.hnsw_ef_construction
        index._labels = extras["labels"].astype(np.int64)
        index._alive = extras["alive"].astype(bool)
        index._n_alive = int(index._alive.sum())
        return index

    def __len__(self) -> int:
        return self._n_alive

    def ids(self) -> np.ndarray:
        return np.sort(self._labels[self._alive])

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._index.add(vectors)
        self._labels = np.concatenate([self._labels, ids])
        self._alive = np.concatenate([self._alive, np.ones(len(ids), dtype=bool)])
        self._n_alive += len(ids)
        self._alive_bitmap = None

    def remove(self, ids: np.ndarray) -> int:
        hit = self._alive & np.isin(self._labels, ids)
        removed = int(hit.sum())
        if removed:
            self._alive[hit] = False
            self._n_alive -= removed
            self._alive_bitmap = None
        return removed

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if allowed is not None and len(allowed) <= self.config.exact_filter_max:
            # A graph walk restricted to a few nodes finds too few of them: search those exactly.
            positions = np.flatnonzero(self._alive & np.isin(self._labels, allowed))
            return exact_top_k(queries, self._labels[positions], self._reconstruct(positions), k)
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # faiss's stubs omit it
        params.efSearch = max(self.config.hnsw_ef_search, k)
        bitmap = None
        if allowed is not None:
            bitmap = np.packbits(self._alive & np.isin(self._labels, allowed), bitorder="little")
        elif self.tombstones:
            if self._alive_bitmap is None:
                self._alive_bitmap = np.packbits(self._alive, bitorder="little")
            bitmap = self._alive_bitmap
        if bitmap is not None:
            # bitmap and selector are locals so they outlive the search call
            selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
            params.sel = selector
        scores, pos = self._index.search(queries, k, params=params)
        return scores, np.where(pos >= 0, self._labels[np.maximum(pos, 0)], -1)

    @property
    def tombstones(self) -> int:
        return len(self._alive) - self._n_alive

    @property
    def needs_compaction(self) -> bool:
        return self.tombstones > self.config.compact_ratio * max(1, len(self._alive))

    @property
    def needs_retrain(self) -> bool:
        return False

    @property
    def trained_count(self) -> int:
        return 0

    def compact(self) -> None:
        """Rebuild the graph from the live vectors, dropping the tombstones."""
        if self.tombstones == 0:
            return
        keep = np.flatnonzero(self._alive)
        vectors = self._reconstruct(keep)
        labels = self._labels[keep]
        self._index = _new_graph(self.dim, self.config)
        self._labels = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._n_alive = 0
        self._alive_bitmap = None
        if len(labels):
            self.add(labels, vectors)

    def _reconstruct(self, positions: np.ndarray) -> np.ndarray:
        if len(positions) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._index.reconstruct_batch(positions.astype(np.int64))

    def faiss_index(self) -> faiss.Index:
        return self._index

    def extras(self) -> dict[str, np.ndarray]:
        return {"labels": self._labels, "alive": self._alive}

    def meta(self) -> dict[str, Any]:
        return {}
