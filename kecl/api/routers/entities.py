"""``/v1/entities``: find entities by name, read one with its facts, walk its neighbourhood; create and edit."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from kecl.api.deps import KeclDep, edit, entity_or_404, require_key
from kecl.api.errors import INVALID, KEYED, NO_ENTITY, TOO_LARGE, documented
from kecl.api.resources import EntityCreate, EntityUpdate
from kecl.api.schemas import Entity, EntityList, Neighbourhood
from kecl.services import Kecl

router = APIRouter(prefix="/entities", tags=["entities"])

EntityRef = Annotated[str, Path(description="numeric id, external id, or name/alias")]
# a name search ranks every match; the total is exact up to this many
_MAX_MATCHES = 1000
# an entity read returns this many facts a list unless asked, and at most _MAX_FACTS
_FACTS = 200
_MAX_FACTS = 1000


@router.get("", operation_id="findEntities", responses=INVALID)
def find_entities(
    kecl: KeclDep,
    q: Annotated[str, Query(min_length=1, max_length=500, description="name or alias (prefix)")],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=_MAX_MATCHES)] = 0,
) -> EntityList:
    """Entities whose name or alias matches `q` (exact matches first, then prefix matches).

    `total` counts the matches up to 1000. Raises 422 for a missing or empty `q` or a `limit` out of range."""
    found = kecl.store.find_entities(q, limit=_MAX_MATCHES)
    return EntityList.model_validate(
        {"entities": found[offset : offset + limit], "total": len(found), "limit": limit, "offset": offset}
    )


@router.get("/{ref}", operation_id="getEntity", responses={**NO_ENTITY, **INVALID})
def get_entity(
    kecl: KeclDep,
    ref: EntityRef,
    limit: Annotated[int, Query(ge=1, le=_MAX_FACTS, description="most facts in each of the two lists")] = _FACTS,
) -> Entity:
    """An entity with its aliases, current facts (id order), history (closed facts, newest first)
    and mention count.

    Each list holds at most `limit` facts; `facts_total` and `history_total` count them all (a hub
    has tens of thousands: page through them with `GET /v1/facts?subject=…` and `?object=…`). Raises 404 when no
    entity matches `ref`."""
    return _entity(kecl, entity_or_404(kecl, ref), limit)


def _entity(kecl: Kecl, entity_id: int, limit: int = _FACTS) -> Entity:
    view = kecl.store.get_entity(entity_id, limit=limit)
    assert view is not None  # resolved or written just now
    return Entity.model_validate(view.to_dict())


@router.post(
    "",
    operation_id="createEntity",
    status_code=201,
    dependencies=[Depends(require_key)],
    responses={**KEYED, **documented(409, "An entity with this `id` exists already."), **TOO_LARGE, **INVALID},
)
def create_entity(kecl: KeclDep, body: EntityCreate) -> Entity:
    """Create an entity; its name and aliases link in passages ingested from now on.

    Needs the `X-API-Key` header. Raises 409 when the external id is taken."""
    eid = edit(kecl.store.create_entity, body.id, body.name, body.type, body.description, body.aliases)
    return _entity(kecl, eid)


@router.patch(
    "/{ref}",
    operation_id="updateEntity",
    dependencies=[Depends(require_key)],
    responses={**KEYED, **NO_ENTITY, **TOO_LARGE, **INVALID},
)
def update_entity(kecl: KeclDep, ref: EntityRef, body: EntityUpdate) -> Entity:
    """Rename an entity, change its type or description, add aliases; old names stay aliases.

    Needs the `X-API-Key` header. Raises 404 when no entity matches `ref`."""
    eid = entity_or_404(kecl, ref)
    edit(kecl.store.update_entity, eid, body.changes(), body.aliases)
    return _entity(kecl, eid)


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
