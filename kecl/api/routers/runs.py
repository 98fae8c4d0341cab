"""``/v1/runs``: update cycles, past and running, and starting one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from kecl.api.deps import MAX_ID, KeclDep, require_key, row_id
from kecl.api.errors import INVALID, KEYED, TOO_LARGE, documented, error_response
from kecl.api.schemas import Run, RunList, RunStarted
from kecl.runs import UpdateBusy, UpdateNotStarted, start_update

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("", operation_id="listRuns", responses=INVALID)
def list_runs(
    kecl: KeclDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> RunList:
    """Update cycles, newest first: status, stage timings, counts, metrics, decision and its reasons.

    Raises 422 for `limit` or `offset` out of range."""
    runs = kecl.store.runs(limit=limit, offset=offset)
    return RunList.model_validate({"runs": runs, "total": kecl.store.count_runs(), "limit": limit, "offset": offset})


@router.get(
    "/{run_id}",
    operation_id="getRun",
    responses={**documented(404, "No update cycle has this id."), **INVALID},
)
def get_run(kecl: KeclDep, run_id: Annotated[int, row_id("the run's id")]) -> Run:
    """One update cycle.

    Raises 404 for an unknown id, 422 for an id that is not an integer."""
    run = kecl.store.get_run(run_id)
    if run is None:
        raise HTTPException(404, f"no update run {run_id}")
    return Run.model_validate(run)


@router.post(
    "",
    operation_id="startRun",
    status_code=202,
    response_model=RunStarted,
    dependencies=[Depends(require_key)],
    responses={
        **KEYED,
        **documented(
            409,
            "An update cycle is already running (in any process): the message names its run, "
            "and the `Location` header points to it when its row is visible.",
        ),
        **TOO_LARGE,
        **documented(
            503,
            "The cycle did not write its run row within the wait (a slow model load or a busy "
            "database); it may still start: see `GET /v1/runs`. `Retry-After` says when to look.",
        ),
    },
)
async def start_run(kecl: KeclDep, request: Request) -> RunStarted | JSONResponse:
    """Start an update cycle over the inbox now, in the background; answers with its run id.

    Needs the `X-API-Key` header: 401 without it or with a wrong one, 403 when the server has no key.
    Raises 409 while another cycle (from any process) holds the cycle lock, 413 for a body over
    `api.max_body_bytes` (the endpoint takes none), 503 when the cycle has not started within
    the wait."""
    try:
        run_id, thread = await run_in_threadpool(start_update, kecl, "api", request.app.state.run_start_wait)
    except UpdateBusy as busy:
        response = error_response(409, str(busy))
        if busy.run_id is not None:
            response.headers["Location"] = f"/v1/runs/{busy.run_id}"
        return response
    except UpdateNotStarted as late:
        request.app.state.update_thread = late.thread
        response = error_response(503, str(late))
        response.headers["Retry-After"] = "10"
        return response
    request.app.state.update_thread = thread  # the latest one, for whoever must wait for it (the tests)
    return RunStarted(run_id=run_id, status="running", poll=f"/v1/runs/{run_id}")
