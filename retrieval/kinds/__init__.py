"""The index kinds behind ``retrieval.PassageIndex``, one module each (internal).

- ``flat``  (``FlatIndex``): exact search; ``IndexIDMap2`` keeps ids stable across removals.
- ``hnsw``  (``HnswIndex``): graph search; removals are tombstones, ``compact()`` rebuilds.
- ``ivfpq`` (``IvfPqIndex``): compressed; trained on a sample, flags when it needs retraining.

Each implements ``KindIndex``; ``KIND_CLASSES`` maps a kind name to its class.
"""

from __future__ import annotations

from retrieval.kinds.base import KindIndex, as_ids, gpu_available
from retrieval.kinds.flat import FlatIndex
from retrieval.kinds.hnsw import HnswIndex
from retrieval.kinds.ivfpq import IvfPqIndex

KIND_CLASSES: dict[str, type[KindIndex]] = {
    "flat": FlatIndex,
    "hnsw": HnswIndex,
    "ivfpq": IvfPqIndex,
}

__all__ = ["KIND_CLASSES", "FlatIndex", "HnswIndex", "IvfPqIndex", "KindIndex", "as_ids", "gpu_available"]
