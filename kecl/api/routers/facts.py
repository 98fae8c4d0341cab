"""``/v1/facts``: list facts (current, as of a date, or with history) and ingest new ones."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query

from kecl.api.deps import MAX_ID, KeclDep, entity_or_404, require_key
from kecl.api.errors import INVALID, KEYED, TOO_LARGE, documented, invalid
from kecl.api.schemas import FactList, FactsAdded, FactsIn

router = APIRouter(prefix="/facts", tags=["facts"])

# the summary's other counts (files, documents, passages, mentions) belong to document ingests
_FACT_COUNTS = ("facts", "entities", "relations")


@router.get(
    "",
    operation_id="listFacts",
    responses={**documented(404, "The `subject` or `object` names no entity."), **INVALID},
)
def list_facts(
    kecl: KeclDep,
    subject: Annotated[str | None, Query(description="entity (id, external id or name) as subject")] = None,
    relation: Annotated[str | None, Query(description="relation id")] = None,
    object_: Annotated[
        str | None, Query(alias="object", description="entity (id, external id or name) as object")
    ] = None,
    as_of: Annotated[dt.date | None, Query(description="the facts believed on this date")] = None,
    history: Annotated[bool, Query(description="closed facts too (ignored with `as_of`)")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> FactList:
    """Facts in id order: current by default, as of a date, or with history; filtered by subject, relation, object.

    Raises 404 when `subject` or `object` names no entity, 422 for a bad date or `limit`/`offset`."""
    facts = kecl.store.facts(
        subject=entity_or_404(kecl, subject) if subject else None,
        object=entity_or_404(kecl, object_) if object_ else None,
        relation=relation,
        as_of=as_of,
        include_closed=history,
        limit=limit,
        offset=offset,
    )
    return FactList.model_validate({"facts": [f.to_dict() for f in facts]})


@router.post(
    "",
    operation_id="addFacts",
    status_code=201,
    dependencies=[Depends(require_key)],
    responses={
        **KEYED,
        **TOO_LARGE,
        **invalid("The body is invalid, or a fact gives both or neither of `object` and `object_literal`."),
    },
)
def add_facts(kecl: KeclDep, body: FactsIn) -> FactsAdded:
    """Ingest relations, entities and facts (in that order); bad records are reported in `issues` and skipped.

    A new value of a functional relation closes the subject's current fact (`facts_closed`).
    Needs the `X-API-Key` header: 401 without it or with a wrong one, 403 when the server has no key.
    Raises 413 for a body over `api.max_body_bytes`, 422 for an invalid body."""
    for i, f in enumerate(body.facts):
        if (f.object is None) == (f.object_literal is None):
            raise HTTPException(422, f"facts[{i}]: give exactly one of 'object' or 'object_literal'")
    summary = kecl.ingest_batch(body.batch())
    return FactsAdded.model_validate(
        {
            **{k: v for k, v in summary.counts().items() if k.startswith(_FACT_COUNTS)},
            "new_fact_ids": summary.new_fact_ids,
            "issues": [str(i) for i in summary.issues],
        }
    )
