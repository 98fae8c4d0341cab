"""What every index kind implements (``KindIndex``) and the pieces the kinds share.

A kind receives batches that ``PassageIndex`` has already checked: ids are unique int64, vectors
float32 ``[n, dim]`` (L2-normalised: the caller's promise), no id of an ``add`` batch is present
any more (the upsert removed it first), allowed-id sets are sorted, unique and non-empty, ``k`` and the number of
queries are positive and the index is not empty when searched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import faiss
import numpy as np

from retrieval.config import IndexConfig


class KindIndex(Protocol):
    """One index kind: storage, removal and search of vectors keyed by passage id."""

    config: IndexConfig

    def __init__(self, dim: int, config: IndexConfig) -> None:
        """An empty index of ``dim``-sized vectors."""
        ...

    @classmethod
    def from_parts(
        cls,
        dim: int,
        config: IndexConfig,
        faiss_index: faiss.Index,
        extras: dict[str, np.ndarray],
        meta: dict[str, Any],
    ) -> KindIndex:
        """The index ``faiss_index``, ``extras`` and ``meta`` (as ``faiss_index()``, ``extras()`` and
        ``meta()`` gave them) describe; takes over ``faiss_index``."""
        ...

    def __len__(self) -> int:
        """Live vectors (tombstones excluded)."""
        ...

    def ids(self) -> np.ndarray:
        """The live passage ids, sorted (int64)."""
        ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Store ``vectors`` under ``ids`` (none of which is present)."""
        ...

    def remove(self, ids: np.ndarray) -> int:
        """Remove the present ones of ``ids``; returns how many were removed."""
        ...

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` [nq, k], best first, id -1 where there is no result (its score is
        set to -inf by the caller); only ``allowed`` ids when given."""
        ...

    @property
    def tombstones(self) -> int:
        """Removed vectors still stored (only a kind that cannot remove has any)."""
        ...

    @property
    def needs_compaction(self) -> bool:
        """True when ``compact()`` is due."""
        ...

    @property
    def needs_retrain(self) -> bool:
        """True when the data has outgrown what the kind was trained on."""
        ...

    @property
    def trained_count(self) -> int:
        """Vectors the kind was trained on (0 for kinds without training)."""
        ...

    def compact(self) -> None:
        """Drop tombstones (a no-op for kinds without any)."""
        ...

    def faiss_index(self) -> faiss.Index:
        """The faiss index to save (live, not a copy)."""
        ...

    def extras(self) -> dict[str, np.ndarray]:
        """Arrays saved next to the faiss index (live, not copies); empty when none."""
        ...

    def meta(self) -> dict[str, Any]:
        """The kind's own manifest fields (JSON values); empty when none."""
        ...


def as_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    """``ids`` as a contiguous 1-d int64 array (a copy only where needed)."""
    return np.ascontiguousarray(
        np.fromiter(ids, dtype=np.int64)
        if not isinstance(ids, np.ndarray)
        else ids.astype(np.int64, copy=False).ravel()
    )


def gpu_available() -> bool:
    """True when this faiss build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def exact_top_k(queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` of ``queries`` over ``vectors`` (rows keyed by ``ids``).
    Returns ``(scores, ids)`` [nq, k], best first, padded with -inf / -1."""
    scores_all = queries @ vectors.T
    kk = min(k, len(ids))
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    if kk:
        top = np.argpartition(-scores_all, kk - 1, axis=1)[:, :kk]
        top_scores = np.take_along_axis(scores_all, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        scores[:, :kk] = np.take_along_axis(top_scores, order, axis=1)
        out[:, :kk] = ids[np.take_along_axis(top, order, axis=1)]
    return scores, out


class GpuMirror:
    """A GPU copy of a CPU faiss index for unfiltered searches (selectors only work on the CPU
    index), made on first use and dropped on every mutation. ``use_gpu`` None: use one when
    ``gpu_available()``."""

    def __init__(self, use_gpu: bool | None) -> None:
        self.enabled = gpu_available() if use_gpu is None else bool(use_gpu)
        self._resources: Any = None
        self._copy: faiss.Index | None = None

    def invalidate(self) -> None:
        """Forget the copy: the CPU index changed."""
        self._copy = None

    def index_for(self, cpu_index: faiss.Index) -> faiss.Index:
        """The index to run an unfiltered search on: ``cpu_index`` itself when disabled, else
        its GPU copy (made now if the last mutation dropped it)."""
        if not self.enabled:
            return cpu_index
        if self._copy is None:
            # Not exercised in CI (no GPU there): faiss-gpu clones flat and IVF-PQ indexes.
            self._resources = self._resources or faiss.StandardGpuResources()
            self._copy = faiss.index_cpu_to_gpu(self._resources, 0, cpu_index)
        return self._copy
