"""``GET /healthz``: liveness for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter

from kecl.api.deps import KeclDep
from kecl.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz")
def healthz(kecl: KeclDep) -> Health:
    """Liveness: the database answers. Returns the passage count and whether the index is loaded."""
    return Health(status="ok", passages=kecl.store.passage_count(), index_loaded=kecl.index_loaded)
