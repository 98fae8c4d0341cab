"""The passage index: FAISS vectors whose ids are SQL passage ids (int64).

Three kinds, one interface (``add``, ``remove``, ``search``, ``ids``, ``len``):

- ``flat``  exact inner-product search. ``IndexIDMap2(IndexFlatIP)``: a plain flat index shifts the
  positions of later vectors on ``remove_ids``; the id map keeps passage ids stable.
- ``hnsw``  graph search for large stores. HNSW cannot remove vectors, so removed passages become
  tombstones (a bitmap passed as an ``IDSelectorBitmap`` at search time) and ``compact()``
  rebuilds the graph from the stored vectors without them.
- ``ivfpq`` compressed vectors past memory. IVF stores passage ids itself and supports
  ``remove_ids``. It is trained on a sample once enough vectors have arrived (until then they wait
  in a small exact index) and reports ``needs_retrain`` once the data has grown past
  ``retrain_factor`` times what it was trained on; retraining is a rebuild from SQL (the raw
  vectors are not kept).

Vectors must be L2-normalised (inner product = cosine). Adding an id that is already present
replaces its vector (an upsert never leaves a stale copy behind). Filters arrive as the allowed
passage ids; small allowed sets are searched exactly (a graph walk restricted to a few nodes
finds too few), large ones through an ``IDSelector``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import faiss
import numpy as np

log = logging.getLogger(__name__)

Kind = Literal["flat", "hnsw", "ivfpq"]
KINDS: tuple[str, ...] = ("flat", "hnsw", "ivfpq")


@dataclass
class IndexConfig:
    """Tuning knobs of the index kinds (defaults measured in benchmarks/bench_index.py)."""

    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    hnsw_ef_search: int = 128
    ivf_nlist: int | None = None  # None: 4·sqrt(n) at training time
    ivf_nprobe: int = 32
    pq_m: int | None = None  # sub-quantizers; None: dim/8 rounded to a divisor of dim
    pq_nbits: int = 8
    ivf_train_min: int = 10_000  # vectors to collect before training
    ivf_train_sample: int = 200_000
    retrain_factor: float = 4.0
    compact_ratio: float = 0.25  # tombstones / stored vectors above which compaction is due
    exact_filter_max: int = 20_000  # allowed-id sets up to this size are searched exactly
    use_gpu: bool | None = None  # None: use a GPU when faiss has GPU support and one is present

    @classmethod
    def from_settings(cls, settings: Any) -> IndexConfig:
        """Take the fields an ``IndexSettings``-like object has (hnsw_m, hnsw_ef_search, ...)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{n: getattr(settings, n) for n in names if hasattr(settings, n)})


def choose_kind(n: int, settings: Any = None) -> str:
    """The index kind for ``n`` vectors: ``settings.kind`` unless it is ``"auto"``; then flat up
    to ``settings.flat_max`` vectors, HNSW up to ``settings.hnsw_max``, IVF-PQ beyond.
    ``settings`` is anything with those attributes (``kecl.settings.IndexSettings``) or None
    for the defaults (200k / 5M). Raises ValueError for an unknown kind."""
    kind = getattr(settings, "kind", "auto")
    if kind != "auto":
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS} or 'auto'")
        return kind
    if n <= getattr(settings, "flat_max", 200_000):
        return "flat"
    if n <= getattr(settings, "hnsw_max", 5_000_000):
        return "hnsw"
    return "ivfpq"


def gpu_available() -> bool:
    """True when this faiss build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _as_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(
        np.fromiter(ids, dtype=np.int64)
        if not isinstance(ids, np.ndarray)
        else ids.astype(np.int64, copy=False).ravel()
    )


class PassageIndex:
    """Vectors keyed by passage id. See the module docstring for the kinds.

    ``kind``: "flat", "hnsw" or "ivfpq"; ``dim``: vector size; ``embedder_version``: stamped into
    the manifest on save and checked by reconcile. Raises ValueError for an unknown kind.
    """

    def __init__(self, kind: str, dim: int, config: IndexConfig | None = None, embedder_version: str | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
        self.kind = kind
        self.dim = int(dim)
        self.config = config or IndexConfig()
        self.embedder_version = embedder_version
        self.trained_count = 0  # ivfpq: vectors seen when the quantizers were trained
        self._labels = np.zeros(0, dtype=np.int64)  # hnsw: position -> passage id
        self._alive = np.zeros(0, dtype=bool)  # hnsw: False = tombstone
        self._n_alive = 0  # hnsw: kept as a count, not summed per search (1M-long mask)
        self._alive_bitmap: np.ndarray | None = None  # hnsw: packed _alive, cached between mutations
        self._pending: PassageIndex | None = None  # ivfpq before training
        # Highest id ever added: SQL hands out increasing ids, so a batch above it cannot
        # overwrite anything and skips the upsert's O(n) removal scan.
        self._max_added = -1
        self._warned_retrain = False
        self._gpu_copy = None
        self._use_gpu = gpu_available() if self.config.use_gpu is None else self.config.use_gpu
        if kind == "flat":
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        elif kind == "hnsw":
            self._index = faiss.IndexHNSWFlat(self.dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self._index.hnsw.efConstruction = self.config.hnsw_ef_construction
        else:
            self._index = None  # built at training time
            self._pending = PassageIndex("flat", self.dim, IndexConfig(use_gpu=False))

    # ---- size and contents -------------------------------------------------------------------
    def __len__(self) -> int:
        if self.kind == "hnsw":
            return self._n_alive
        if self._pending is not None:
            return len(self._pending)
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """The passage ids in the index, sorted (int64)."""
        if self.kind == "flat":
            n = self._index.ntotal
            return (
                np.sort(faiss.rev_swig_ptr(self._index.id_map.data(), n).copy()) if n else np.zeros(0, dtype=np.int64)
            )
        if self.kind == "hnsw":
            return np.sort(self._labels[self._alive])
        if self._pending is not None:
            return self._pending.ids()
        invlists = self._index.invlists
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
            for i in range(invlists.nlist)
            if invlists.list_size(i)
        ]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    @property
    def max_id(self) -> int:
        """Highest passage id present, or -1 when empty."""
        ids = self.ids()
        return int(ids[-1]) if len(ids) else -1

    @property
    def tombstones(self) -> int:
        """hnsw: removed vectors still stored in the graph (0 for other kinds)."""
        return len(self._alive) - self._n_alive if self.kind == "hnsw" else 0

    @property
    def needs_compaction(self) -> bool:
        return self.kind == "hnsw" and self.tombstones > self.config.compact_ratio * max(1, len(self._alive))

    @property
    def needs_retrain(self) -> bool:
        """ivfpq: the data has grown past ``retrain_factor`` × the training set (rebuild it)."""
        return (
            self.kind == "ivfpq"
            and self._pending is None
            and len(self) > self.config.retrain_factor * max(1, self.trained_count)
        )

    # ---- mutation ----------------------------------------------------------------------------
    def add(self, ids: Iterable[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add (or replace) vectors under passage ids. ``vectors``: float32 [n, dim], normalised.
        Raises ValueError on a shape mismatch or an id repeated within the batch."""
        ids = _as_ids(ids)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or vectors.shape[0] != len(ids):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("duplicate passage ids in one add() batch")
        if len(ids) == 0:
            return
        if self._pending is not None:
            self._pending.add(ids, vectors)
            if len(self._pending) >= self.config.ivf_train_min:
                self._train_from_pending()
            self._gpu_copy = None
            return
        if ids.min() <= self._max_added:
            self.remove(ids)  # upsert: an old vector under the same id must not survive
        self._max_added = max(self._max_added, int(ids.max()))
        if self.kind == "hnsw":
            self._index.add(vectors)
            self._labels = np.concatenate([self._labels, ids])
            self._alive = np.concatenate([self._alive, np.ones(len(ids), dtype=bool)])
            self._n_alive += len(ids)
            self._alive_bitmap = None
        else:
            self._index.add_with_ids(vectors, ids)
        self._gpu_copy = None
        if self.needs_retrain and not self._warned_retrain:
            self._warned_retrain = True  # once per index, not per batch
            log.warning(
                "IVF-PQ index holds %d vectors, trained on %d: rebuild it (kecl index build)",
                len(self),
                self.trained_count,
            )

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Remove passage ids (absent ids are ignored). Returns how many were removed."""
        ids = _as_ids(ids)
        if len(ids) == 0:
            return 0
        self._gpu_copy = None
        if self._pending is not None:
            return self._pending.remove(ids)
        if self.kind == "hnsw":
            hit = self._alive & np.isin(self._labels, ids)
            removed = int(hit.sum())
            if removed:
                self._alive[hit] = False
                self._n_alive -= removed
                self._alive_bitmap = None
            return removed
        return int(self._index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))))

    def compact(self) -> None:
        """hnsw: rebuild the graph from the live vectors, dropping tombstones. No-op otherwise."""
        if self.kind != "hnsw" or self.tombstones == 0:
            return
        keep = np.flatnonzero(self._alive)
        vectors = self._reconstruct(keep)
        labels = self._labels[keep]
        self._index = faiss.IndexHNSWFlat(self.dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = self.config.hnsw_ef_construction
        self._labels = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._n_alive = 0
        self._alive_bitmap = None
        self.add(labels, vectors)

    def _reconstruct(self, positions: np.ndarray) -> np.ndarray:
        # IndexHNSWFlat keeps the exact vectors in its flat storage.
        if len(positions) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._index.reconstruct_batch(positions.astype(np.int64))

    def _train_from_pending(self) -> None:
        pending = self._pending
        ids = pending.ids()
        vectors = pending._index.reconstruct_batch(ids)
        n = len(ids)
        cfg = self.config
        nlist = cfg.ivf_nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        pq_m = cfg.pq_m or _largest_divisor_at_most(self.dim, max(1, self.dim // 8))
        nbits = cfg.pq_nbits if n >= 39 * 2**cfg.pq_nbits else max(1, int(math.log2(max(2, n // 39))))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, pq_m, nbits, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()  # the IVF index owns (and frees) its coarse quantizer now
        rng = np.random.default_rng(0)
        sample = vectors if n <= cfg.ivf_train_sample else vectors[rng.choice(n, cfg.ivf_train_sample, replace=False)]
        log.info("training IVF-PQ (nlist=%d, m=%d, nbits=%d) on %d of %d vectors", nlist, pq_m, nbits, len(sample), n)
        index.train(sample)
        index.add_with_ids(vectors, ids)
        self._index = index
        self._max_added = pending._max_added
        self._pending = None
        self.trained_count = n

    # ---- search ------------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed_ids: Iterable[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` passages for each query row. Returns ``(scores, ids)``, both [nq, k], best
        first; missing results have id -1 and score -inf. ``allowed_ids`` restricts results to
        those passages (a filter computed by the caller, e.g. source or date range).
        Raises ValueError when the queries do not have ``dim`` columns."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have {queries.shape[1]} dimensions, the index {self.dim}")
        nq = queries.shape[0]
        k = max(int(k), 0)
        empty = (np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64))
        if k <= 0 or nq == 0 or len(self) == 0:
            return empty
        if self._pending is not None:
            return self._pending.search(queries, k, allowed_ids)
        allowed = None if allowed_ids is None else np.unique(_as_ids(allowed_ids))
        if allowed is not None and len(allowed) == 0:
            return empty
        if allowed is not None and len(allowed) <= self.config.exact_filter_max and self.kind != "ivfpq":
            return self._search_subset(queries, k, allowed)
        scores, ids = self._search(queries, k, allowed)
        scores[ids < 0] = -np.inf
        return scores, ids

    def _search(self, queries, k, allowed):
        if self.kind == "flat":
            if allowed is None:
                return self._searcher().search(queries, k)
            selector = faiss.IDSelectorBatch(len(allowed), faiss.swig_ptr(allowed))
            params = faiss.SearchParameters(sel=selector)  # the selector must outlive the search
            return self._index.search(queries, k, params=params)
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
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
        params = faiss.SearchParametersIVF()
        params.nprobe = min(self.config.ivf_nprobe, self._index.nlist)
        if allowed is None:
            if self._use_gpu:
                return self._searcher().search(queries, k)  # GPU copy: selectors stay on the CPU
            return self._index.search(queries, k, params=params)
        selector = faiss.IDSelectorBatch(len(allowed), faiss.swig_ptr(allowed))
        params.sel = selector
        return self._index.search(queries, k, params=params)

    def _search_subset(self, queries, k, allowed):
        """Exact search over a small allowed set, from the stored vectors."""
        if self.kind == "flat":
            present = allowed[np.isin(allowed, self.ids())]
            vectors = self._index.reconstruct_batch(present) if len(present) else np.zeros((0, self.dim), np.float32)
        else:
            positions = np.flatnonzero(self._alive & np.isin(self._labels, allowed))
            present, vectors = self._labels[positions], self._reconstruct(positions)
        scores_all = queries @ vectors.T
        kk = min(k, len(present))
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        if kk:
            top = np.argpartition(-scores_all, kk - 1, axis=1)[:, :kk]
            top_scores = np.take_along_axis(scores_all, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            scores[:, :kk] = np.take_along_axis(top_scores, order, axis=1)
            ids[:, :kk] = present[np.take_along_axis(top, order, axis=1)]
        return scores, ids

    def _searcher(self):
        """The index to run unfiltered searches on: a GPU copy when enabled (flat, ivfpq)."""
        if not self._use_gpu or self.kind == "hnsw":
            return self._index
        if self._gpu_copy is None:
            # Not exercised in CI (no GPU here): faiss-gpu clones flat and IVF-PQ indexes.
            self._gpu_resources = getattr(self, "_gpu_resources", None) or faiss.StandardGpuResources()
            self._gpu_copy = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._index)
        return self._gpu_copy

    # ---- persistence helpers (used by retrieval.persist) ---------------------------------------
    def _faiss_index(self):
        return self._pending._index if self._pending is not None else self._index

    def _extras(self) -> dict[str, np.ndarray]:
        return {"labels": self._labels, "alive": self._alive} if self.kind == "hnsw" else {}

    def _meta(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dim": self.dim,
            "config": asdict(self.config),
            "trained_count": self.trained_count,
            "pending": self._pending is not None,
            "max_added": max(self._max_added, self._pending._max_added if self._pending is not None else -1),
        }

    @classmethod
    def _restore(
        cls, meta: dict[str, Any], faiss_index, extras: dict[str, np.ndarray], embedder_version: str | None
    ) -> PassageIndex:
        index = cls(meta["kind"], meta["dim"], IndexConfig(**meta["config"]), embedder_version)
        index.trained_count = meta.get("trained_count", 0)
        max_added = int(meta.get("max_added", -1))
        if meta["kind"] == "ivfpq" and meta.get("pending"):
            index._pending._index = faiss_index
        else:
            index._pending = None
            index._index = faiss_index
        if meta["kind"] == "hnsw":
            index._labels = extras["labels"].astype(np.int64)
            index._alive = extras["alive"].astype(bool)
            index._n_alive = int(index._alive.sum())
            index._index.hnsw.efConstruction = index.config.hnsw_ef_construction
        # never below the highest id present, so an upsert after loading still replaces
        index._max_added = max(max_added, index.max_id)
        if index._pending is not None:
            index._pending._max_added = index._max_added
        return index

    def __repr__(self) -> str:
        return f"PassageIndex(kind={self.kind!r}, dim={self.dim}, n={len(self)}, embedder={self.embedder_version!r})"


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, cap + 1) if n % d == 0)


def build_index(
    ids: np.ndarray,
    vectors: np.ndarray,
    kind: str | None = None,
    settings: Any = None,
    config: IndexConfig | None = None,
    embedder_version: str | None = None,
) -> PassageIndex:
    """A new index holding ``vectors`` under ``ids``; the kind from ``choose_kind`` unless given."""
    kind = kind or choose_kind(len(ids), settings)
    index = PassageIndex(
        kind, vectors.shape[1], config or (IndexConfig.from_settings(settings) if settings else None), embedder_version
    )
    index.add(ids, vectors)
    return index


__all__ = ["IndexConfig", "PassageIndex", "choose_kind", "build_index", "gpu_available"]
