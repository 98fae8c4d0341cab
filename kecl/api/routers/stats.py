"""``GET /v1/stats``: the size of the store and of the index."""

from __future__ import annotations

from fastapi import APIRouter

from kecl.api.deps import KeclDep
from kecl.api.schemas import IndexSize, Stats, StoreCounts

router = APIRouter(tags=["stats"])


# exclude_unset: `index` is left out, not null, before the index is loaded
@router.get("/stats", operation_id="getStats", response_model_exclude_unset=True)
def get_stats(kecl: KeclDep) -> Stats:
    """Row counts of the store's tables and, once it is loaded, the kind and size of the index."""
    stats = Stats(store=StoreCounts(**kecl.store.stats()))
    if kecl.index_loaded:
        stats.index = IndexSize(kind=kecl.index.index.kind, vectors=len(kecl.index.index))
    return stats
