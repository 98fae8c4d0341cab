"""``GET /healthz`` (liveness) and ``GET /readyz`` (readiness) for load balancers and orchestrators."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from kecl.api.deps import KeclDep
from kecl.api.schemas import Health, Readiness
from kecl.health import check_readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz")
def healthz(kecl: KeclDep) -> Health:
    """Liveness: the database answers. Returns the passage count and whether the index is loaded."""
    return Health(status="ok", passages=kecl.store.passage_count(), index_loaded=kecl.index_loaded)


@router.get(
    "/readyz",
    operation_id="readyz",
    responses={503: {"model": Readiness, "description": "Not ready: `problems` lists the checks that failed."}},
)
async def readyz(kecl: KeclDep, response: Response) -> Readiness:
    """Readiness: the store is writable, the index is loaded and within
    `processes.ready_max_lag_passages` of SQL, SQL's active checkpoint is the one answering; with the
    age of the oldest passage event not yet applied. 503 (same body) when a check fails."""
    state = await run_in_threadpool(check_readiness, kecl)
    if not state.ready:
        response.status_code = 503
    return Readiness(ready=state.ready, **asdict(state))
