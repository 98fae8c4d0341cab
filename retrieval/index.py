"""The passage index: FAISS vectors whose ids are SQL passage ids (int64).

``PassageIndex`` is the one public class; it holds one of three kinds (``retrieval.kinds``) and
delegates to it:

- ``flat``  exact inner-product search, up to a few hundred thousand vectors.
- ``hnsw``  graph search for large stores; removed passages are tombstones until ``compact()``.
- ``ivfpq`` compressed vectors past memory; trained once enough vectors have arrived,
  ``needs_retrain`` once the data has outgrown the training set.

Vectors must be L2-normalised (inner product = cosine). Adding an id that is already present
replaces its vector (an upsert never leaves a stale copy behind). Filters arrive as the allowed
passage ids; small allowed sets are searched exactly (a graph walk restricted to a few nodes
finds too few), large ones through an ``IDSelector``.

``state()`` / ``from_state()`` take an index apart into what ``retrieval.persist`` writes (a
JSON-able meta dict, the faiss index, numpy arrays) and put it back together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import faiss
import numpy as np

from retrieval.config import KINDS, IndexConfig
from retrieval.kinds import KIND_CLASSES, KindIndex, as_ids, gpu_available


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


@dataclass
class IndexState:
    """A ``PassageIndex`` taken apart, as ``retrieval.persist`` saves it.

    ``meta``: JSON values, the manifest's ``meta`` (kind, dim, config, trained_count, pending,
    max_added); ``faiss_index``: the faiss index (ivfpq waiting for training: the flat index of
    the waiting vectors); ``extras``: arrays saved next to it (hnsw: ``labels``, ``alive``;
    empty for the other kinds); ``embedder_version``: what made the vectors (the manifest keeps
    it outside ``meta``).
    """

    meta: dict[str, Any]
    faiss_index: faiss.Index
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    embedder_version: str | None = None


class PassageIndex:
    """Vectors keyed by passage id. See the module docstring for the kinds.

    ``kind``: "flat", "hnsw" or "ivfpq"; ``dim``: vector size; ``embedder_version``: stamped into
    the manifest on save and checked by reconcile. Raises ValueError for an unknown kind.
    """

    def __init__(
        self, kind: str, dim: int, config: IndexConfig | None = None, embedder_version: str | None = None
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
        self.kind = kind
        self.dim = int(dim)
        self.embedder_version = embedder_version
        self._impl: KindIndex = KIND_CLASSES[kind](self.dim, config or IndexConfig())
        # Highest id ever added: SQL hands out increasing ids, so a batch above it cannot
        # overwrite anything and skips the upsert's O(n) removal scan.
        self._max_added = -1

    @property
    def config(self) -> IndexConfig:
        """The tuning knobs. Read at every use: a changed search knob (``hnsw_ef_search``,
        ``ivf_nprobe``, ``exact_filter_max``) applies from the next search on."""
        return self._impl.config

    @config.setter
    def config(self, config: IndexConfig) -> None:
        self._impl.config = config

    # ---- size and contents -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._impl)

    def ids(self) -> np.ndarray:
        """The passage ids in the index, sorted (int64)."""
        return self._impl.ids()

    @property
    def max_id(self) -> int:
        """Highest passage id present, or -1 when empty."""
        ids = self.ids()
        return int(ids[-1]) if len(ids) else -1

    @property
    def tombstones(self) -> int:
        """hnsw: removed vectors still stored in the graph (0 for other kinds)."""
        return self._impl.tombstones

    @property
    def needs_compaction(self) -> bool:
        """hnsw: tombstones exceed ``compact_ratio`` of the stored vectors (call ``compact()``)."""
        return self._impl.needs_compaction

    @property
    def needs_retrain(self) -> bool:
        """ivfpq: the data has grown past ``retrain_factor`` × the training set (rebuild it)."""
        return self._impl.needs_retrain

    @property
    def trained_count(self) -> int:
        """ivfpq: vectors seen when the quantizers were trained (0 before that and for other kinds)."""
        return self._impl.trained_count

    # ---- mutation ----------------------------------------------------------------------------
    def add(self, ids: Iterable[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add (or replace) vectors under passage ids. ``vectors``: float32 [n, dim], normalised.
        Raises ValueError on a shape mismatch or an id repeated within the batch."""
        ids = as_ids(ids)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or vectors.shape[0] != len(ids):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("duplicate passage ids in one add() batch")
        if len(ids) == 0:
            return
        if ids.min() <= self._max_added:
            self._impl.remove(ids)  # upsert: an old vector under the same id must not survive
        self._max_added = max(self._max_added, int(ids.max()))
        self._impl.add(ids, vectors)

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Remove passage ids (absent ids are ignored). Returns how many were removed."""
        ids = as_ids(ids)
        if len(ids) == 0:
            return 0
        return self._impl.remove(ids)

    def compact(self) -> None:
        """hnsw: rebuild the graph from the live vectors, dropping tombstones. No-op otherwise."""
        self._impl.compact()

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
        allowed = None if allowed_ids is None else np.unique(as_ids(allowed_ids))
        if allowed is not None and len(allowed) == 0:
            return empty
        scores, ids = self._impl.search(queries, k, allowed)
        scores[ids < 0] = -np.inf
        return scores, ids

    # ---- taking apart and putting back together ----------------------------------------------
    def state(self) -> IndexState:
        """This index taken apart for saving (see ``IndexState``). Returns a view, not a copy:
        the faiss index and arrays are the live ones, so save them before the next mutation
        (``IndexHandle`` saves under its lock). Raises nothing."""
        meta: dict[str, Any] = {
            "kind": self.kind,
            "dim": self.dim,
            "config": asdict(self.config),
            # Every kind's meta has these two (format 1); the kind overrides the ones it uses,
            # keeping this key order (the manifest is written in it).
            "trained_count": 0,
            "pending": False,
            **self._impl.meta(),
            "max_added": self._max_added,
        }
        return IndexState(meta, self._impl.faiss_index(), self._impl.extras(), self.embedder_version)

    @classmethod
    def from_state(cls, state: IndexState, config: IndexConfig | None = None) -> PassageIndex:
        """The index ``state`` describes (as ``state()`` or a saved manifest gave it), with
        ``config`` instead of the recorded one when given. The new index takes over
        ``state.faiss_index`` (no copy: pass it to one index only, and not back to the index it
        came from); extras are copied. Raises ValueError when ``meta`` lacks kind, dim or config,
        or names an unknown kind."""
        meta = state.meta
        missing = [key for key in ("kind", "dim", "config") if key not in meta]
        if missing:
            raise ValueError(f"index state meta lacks {', '.join(missing)}")
        config = config or IndexConfig(**meta["config"])
        index = cls(meta["kind"], meta["dim"], config, state.embedder_version)
        index._impl = KIND_CLASSES[index.kind].from_parts(index.dim, config, state.faiss_index, state.extras, meta)
        # never below the highest id present, so an upsert after loading still replaces
        index._max_added = max(int(meta.get("max_added", -1)), index.max_id)
        return index

    # benchmarks/bench_index.py measures index size through these two; the rest of kecl uses state().
    def _faiss_index(self) -> faiss.Index:
        return self._impl.faiss_index()

    def _extras(self) -> dict[str, np.ndarray]:
        return self._impl.extras()

    def __repr__(self) -> str:
        return f"PassageIndex(kind={self.kind!r}, dim={self.dim}, n={len(self)}, embedder={self.embedder_version!r})"


def build_index(
    ids: np.ndarray,
    vectors: np.ndarray,
    kind: str | None = None,
    settings: Any = None,
    config: IndexConfig | None = None,
    embedder_version: str | None = None,
) -> PassageIndex:
    """A new index holding ``vectors`` under ``ids``; the kind from ``choose_kind`` unless given.
    Raises ValueError for an unknown kind or vectors that do not match ``ids``."""
    kind = kind or choose_kind(len(ids), settings)
    index = PassageIndex(
        kind, vectors.shape[1], config or (IndexConfig.from_settings(settings) if settings else None), embedder_version
    )
    index.add(ids, vectors)
    return index


__all__ = ["IndexConfig", "IndexState", "PassageIndex", "choose_kind", "build_index", "gpu_available"]
