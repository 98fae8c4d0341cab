"""``/v1/runs``: update cycles, past and running, and starting one."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from kecl.api.deps import MAX_ID, KeclDep, require_key
from kecl.api.errors import INVALID, KEYED, TOO_LARGE, documented
from kecl.api.schemas import Run, RunList, RunStarted
from updater import CYCLE_LOCK_NAME

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("", operation_id="listRuns", responses=INVALID)
def list_runs(
    kecl: KeclDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> RunList:
    """Update cycles, newest first: status, stage timings, counts, metrics, decision and its reasons.

    Raises 422 for `limit` or `offset` out of range."""
    return RunList.model_validate({"runs": kecl.store.runs(limit=limit, offset=offset)})


@router.get(
    "/{run_id}",
    operation_id="getRun",
    responses={**documented(404, "No update cycle has this id."), **INVALID},
)
def get_run(kecl: KeclDep, run_id: Annotated[int, Path(le=MAX_ID, description="the run's id")]) -> Run:
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
    dependencies=[Depends(require_key)],
    responses={**KEYED, **documented(409, "An update cycle is already running."), **TOO_LARGE},
)
def start_run(kecl: KeclDep, request: Request) -> RunStarted:
    """Start an update cycle over the inbox now, in the background; poll `GET /v1/runs` for it.

    Needs the `X-API-Key` header: 401 without it or with a wrong one, 403 when the server has no key.
    Raises 409 while another cycle (from any process) holds the cycle lock, 413 for a body over
    `api.max_body_bytes` (the endpoint takes none)."""
    holder = kecl.store.lock_holder(CYCLE_LOCK_NAME)
    if holder is not None:
        raise HTTPException(409, f"an update cycle is already running ({holder})")
    thread = threading.Thread(target=kecl.run_update, kwargs={"trigger": "api"}, daemon=True, name="kecl-update")
    thread.start()
    request.app.state.update_thread = thread  # the latest one, for whoever must wait for it (the tests)
    return RunStarted(status="started", poll="/v1/runs")
