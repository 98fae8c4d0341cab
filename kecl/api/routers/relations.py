"""``/v1/relations``: the relations facts can use, and defining new ones."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from kecl.api.deps import MAX_ID, KeclDep, require_key
from kecl.api.errors import INVALID, KEYED, TOO_LARGE
from kecl.api.resources import Relation, RelationPage
from kecl.api.schemas import RelationIn
from knowledge import RelationRecord

router = APIRouter(prefix="/relations", tags=["relations"])


@router.get("", operation_id="listRelations", responses=INVALID)
def list_relations(
    kecl: KeclDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> RelationPage:
    """Relations by id: label, cloze template and whether they are functional. Raises 422 for a bad page."""
    relations = kecl.store.relations()
    return RelationPage.model_validate(
        {"relations": relations[offset : offset + limit], "total": len(relations), "limit": limit, "offset": offset}
    )


@router.post(
    "",
    operation_id="putRelation",
    status_code=201,
    dependencies=[Depends(require_key)],
    responses={
        200: {"model": Relation, "description": "The relation existed and was updated."},
        **KEYED,
        **TOO_LARGE,
        **INVALID,
    },
)
def put_relation(kecl: KeclDep, body: RelationIn, response: Response) -> Relation:
    """Define a relation (201), or update the label, template or functionality of an existing one (200).

    Needs the `X-API-Key` header."""
    summary = kecl.store.upsert_relations(
        [RelationRecord(id=body.id, label=body.label, template=body.template, functional=body.functional)]
    )
    if not summary.relations_added:
        response.status_code = 200
    return next(Relation.model_validate(r) for r in kecl.store.relations() if r["id"] == body.id)
