"""``IndexConfig``: the tuning knobs of the passage index kinds, and the kind names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS: tuple[str, ...] = ("flat", "hnsw", "ivfpq")


@dataclass
class IndexConfig:
    """Tuning knobs of the index kinds. The defaults are the values users get (measured in
    benchmarks/bench_index.py); the field order is the order saved in a manifest's meta."""

    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    hnsw_ef_search: int = 192  # recall@10 0.958 at 1M vectors
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
        """An ``IndexConfig`` with the fields an ``IndexSettings``-like object has (hnsw_m,
        hnsw_ef_search, ...) taken from it and the defaults for the rest. Raises nothing."""
        names = set(cls.__dataclass_fields__)
        return cls(**{n: getattr(settings, n) for n in names if hasattr(settings, n)})


__all__ = ["IndexConfig", "KINDS"]
