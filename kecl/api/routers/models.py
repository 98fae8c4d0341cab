"""``/v1/models``: the encoder's checkpoints; activating one or rolling back to the active one's parent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.concurrency import run_in_threadpool

from kecl.api.deps import MAX_ID, KeclDep, require_key
from kecl.api.errors import INVALID, KEYED, TOO_LARGE, documented
from kecl.api.resources import Model, ModelPage
from kecl.models import ModelError, ModelInfo, activate_model, get_model, list_models, rollback_model
from kecl.services import Kecl

router = APIRouter(prefix="/models", tags=["models"])

NO_MODEL = documented(404, "No checkpoint has this version.")
Version = Annotated[str, Path(max_length=100, description='the checkpoint version, e.g. "v0003"')]


def _model(info: ModelInfo) -> Model:
    return Model.model_validate(vars(info))


@router.get("", operation_id="listModels", responses=INVALID)
def list_models_route(
    kecl: KeclDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> ModelPage:
    """Checkpoints, oldest first: status, whether active, parent, creation time and metrics."""
    models = list_models(kecl.settings, kecl.store)
    return ModelPage(
        models=[_model(m) for m in models[offset : offset + limit]], total=len(models), limit=limit, offset=offset
    )


@router.get("/{version}", operation_id="getModel", responses={**NO_MODEL, **INVALID})
def get_model_route(kecl: KeclDep, version: Version) -> Model:
    """One checkpoint. Raises 404 for an unknown version."""
    try:
        return _model(get_model(kecl.settings, kecl.store, version))
    except ModelError as exc:
        raise HTTPException(exc.status, str(exc)) from None


WRITE_ERRORS = {**KEYED, **NO_MODEL, **TOO_LARGE, **INVALID}


@router.post(
    "/{version}/activate",
    operation_id="activateModel",
    dependencies=[Depends(require_key)],
    responses={**WRITE_ERRORS, **documented(409, "The checkpoint's files fail verification.")},
)
async def activate_model_route(kecl: KeclDep, version: Version) -> Model:
    """Make a checkpoint the active model (roll forward or back); this server answers with it from now on.

    Needs the `X-API-Key` header. Raises 404 for an unknown version, 409 when its files fail verification."""
    return await run_in_threadpool(_activate, kecl, lambda: activate_model(kecl.settings, kecl.store, version))


@router.post(
    "/rollback",
    operation_id="rollbackModel",
    dependencies=[Depends(require_key)],
    responses={**KEYED, **TOO_LARGE, **documented(409, "No active checkpoint, or it has no parent.")},
)
async def rollback_model_route(kecl: KeclDep) -> Model:
    """Activate the active checkpoint's parent.

    Needs the `X-API-Key` header. Raises 409 when there is no active checkpoint or it has no parent."""
    return await run_in_threadpool(_activate, kecl, lambda: rollback_model(kecl.settings, kecl.store))


def _activate(kecl: Kecl, change: Callable[[], ModelInfo]) -> Model:
    try:
        info = change()
    except ModelError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    kecl.reload_encoder()
    return _model(info)
