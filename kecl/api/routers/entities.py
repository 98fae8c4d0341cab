"""``/v1/entities``: find entities by name, read one with its facts, walk its neighbourhood."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Query

from kecl.api.deps import KeclDep, entity_or_404
from kecl.api.errors import INVALID, NO_ENTITY
from kecl.api.schemas import Entity, EntityList, Neighbourhood

router = APIRouter(prefix="/entities", tags=["entities"])

EntityRef = Annotated[str, Path(description="numeric id, external id, or name/alias")]


@router.get("", operation_id="findEntities", responses=INVALID)
def find_entities(
    kecl: KeclDep,
    q: Annotated[str, Query(min_length=1, max_length=500, description="name or alias (prefix)")],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> EntityList:
    """Entities whose name or alias matches `q` (exact matches first, then prefix matches).

    Raises 422 for a missing or empty `q` or a `limit` out of range."""
    return EntityList.model_validate({"entities": kecl.store.find_entities(q, limit=limit)})


@router.get("/{ref}", operation_id="getEntity", responses={**NO_ENTITY, **INVALID})
def get_entity(kecl: KeclDep, ref: EntityRef) -> Entity:
    """An entity with its aliases, current facts, history (closed facts, newest first) and mention count.

    Raises 404 when no entity matches `ref`."""
    view = kecl.store.get_entity(entity_or_404(kecl, ref))
    assert view is not None  # resolved just now
    return Entity.model_validate(view.to_dict())


@router.get("/{ref}/neighbourhood", operation_id="getNeighbourhood", responses={**NO_ENTITY, **INVALID})
def get_neighbourhood(
    kecl: KeclDep,
    ref: EntityRef,
    hops: Annotated[int, Query(ge=1, le=3, description="how far to walk the graph")] = 1,
    as_of: Annotated[dt.date | None, Query(description="the facts believed on this date (default: current)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many facts")] = 200,
) -> Neighbourhood:
    """Facts within `hops` of an entity, closest first (current, or as of a date).

    Raises 404 when no entity matches `ref`, 422 for `hops` or `limit` out of range or a bad date."""
    eid = entity_or_404(kecl, ref)
    facts = kecl.store.neighbourhood(eid, hops=hops, as_of=as_of, max_facts=limit)
    return Neighbourhood.model_validate({"entity_id": eid, "hops": hops, "facts": [f.to_dict() for f in facts]})
