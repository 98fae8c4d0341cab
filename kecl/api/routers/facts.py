"""``/v1/facts``: list facts (current, as of a date, or with history), ingest new ones, end or retract one."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from kecl.api.deps import MAX_ID, KeclDep, edit, entity_or_404, require_key, row_id
from kecl.api.errors import INVALID, KEYED, TOO_LARGE, documented, error_response, invalid
from kecl.api.resources import FactEnd, FactRetraction
from kecl.api.schemas import Fact, FactList, FactsAdded, FactsIn
from kecl.services import Kecl

router = APIRouter(prefix="/facts", tags=["facts"])

# the summary's other counts (files, documents, passages, mentions) belong to document ingests
_FACT_COUNTS = ("facts", "entities", "relations")
NO_FACT = documented(404, "No fact has this id.")
FactId = Annotated[int, row_id("the fact's id")]


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
    history: Annotated[bool, Query(description="closed and retracted facts too (ignored with `as_of`)")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> FactList:
    """Facts in id order: current by default, as of a date, or with history; filtered by subject, relation, object.

    Raises 404 when `subject` or `object` names no entity, 422 for a bad date or `limit`/`offset`."""
    filters: dict[str, Any] = {
        "subject": entity_or_404(kecl, subject) if subject else None,
        "object": entity_or_404(kecl, object_) if object_ else None,
        "relation": relation,
        "as_of": as_of,
        "include_closed": history,
    }
    facts = kecl.store.facts(**filters, limit=limit, offset=offset)
    return FactList.model_validate(
        {
            "facts": [f.to_dict() for f in facts],
            "total": kecl.store.count_facts(**filters),
            "limit": limit,
            "offset": offset,
        }
    )


@router.get("/{fact_id}", operation_id="getFact", responses={**NO_FACT, **INVALID})
def get_fact(kecl: KeclDep, fact_id: FactId) -> Fact:
    """One fact, current, closed or retracted. Raises 404 for an unknown id."""
    return _fact_or_404(kecl, fact_id)


def _fact_or_404(kecl: Kecl, fact_id: int) -> Fact:
    found = kecl.store.facts(ids=[fact_id], include_closed=True)
    if not found:
        raise HTTPException(404, f"no fact {fact_id}")
    return Fact.model_validate(found[0].to_dict())


def _resolve_names(kecl: Kecl, body: FactsIn) -> list[str]:
    """Let facts name their subject and object by id, external id or an unambiguous name/alias:
    rewrite each to its external id in place; returns an issue per ambiguous name (those facts are dropped)."""
    defined = {e.id for e in body.entities}
    issues, keep = [], []
    for i, fact in enumerate(body.facts):
        problems = []
        for field in ("subject", "object"):
            ref = getattr(fact, field)
            if ref is None or ref in defined:
                continue
            named = kecl.store.entities_named(ref)
            if len(named) == 1:
                setattr(fact, field, named[0]["key"])
            elif len(named) > 1:
                options = ", ".join(f"{e['key']} ({e['name']})" for e in named[:10])
                problems.append(f"facts[{i}]: {field} {ref!r} is ambiguous: it names {options}; give the id")
        if problems:
            issues += problems
        else:
            keep.append(i)
    body.facts = [body.facts[i] for i in keep]
    return issues


@router.post(
    "",
    operation_id="addFacts",
    status_code=201,
    response_model=FactsAdded,
    dependencies=[Depends(require_key)],
    responses={
        207: {"model": FactsAdded, "description": "Some records were written, others skipped: see `issues`."},
        **KEYED,
        **TOO_LARGE,
        **invalid(
            "The body is invalid, a fact gives both or neither of `object` and `object_literal`, "
            "or no record could be written (`details` lists each skipped record)."
        ),
    },
)
def add_facts(kecl: KeclDep, body: FactsIn, response: Response) -> FactsAdded | Response:
    """Ingest relations, entities and facts (in that order). Subjects and objects may be given by
    id, external id or an unambiguous name or alias; an ambiguous name is reported, not guessed.

    A new value of a functional relation closes the subject's current fact (`facts_closed`).
    Answers 201 when every record was written, 207 when some were skipped (listed in `issues`),
    422 when records were given and none could be written.
    Needs the `X-API-Key` header: 401 without it or with a wrong one, 403 when the server has no key.
    Raises 413 for a body over `api.max_body_bytes`, 422 for an invalid body."""
    for i, f in enumerate(body.facts):
        if (f.object is None) == (f.object_literal is None):
            raise HTTPException(422, f"facts[{i}]: give exactly one of 'object' or 'object_literal'")
    given = len(body.relations) + len(body.entities) + len(body.facts)
    issues = _resolve_names(kecl, body)
    summary = kecl.ingest_batch(body.batch())
    issues += [str(i) for i in summary.issues]
    written = {k: v for k, v in summary.counts().items() if k.startswith(_FACT_COUNTS)}
    if issues and given and not any(written.values()):
        return error_response(422, f"none of the {given} records could be written", details=issues)
    if issues:
        response.status_code = 207
    return FactsAdded.model_validate({**written, "new_fact_ids": summary.new_fact_ids, "issues": issues})


@router.post(
    "/{fact_id}/end",
    operation_id="endFact",
    dependencies=[Depends(require_key)],
    responses={
        **KEYED,
        **NO_FACT,
        **documented(409, "The fact is already closed or retracted, or `valid_to` is before its `valid_from`."),
        **TOO_LARGE,
        **INVALID,
    },
)
def end_fact(kecl: KeclDep, fact_id: FactId, body: FactEnd) -> Fact:
    """Close a current fact at `valid_to`: it leaves the current view and stays in as-of views and the history.

    Needs the `X-API-Key` header. Raises 404 for an unknown fact, 409 for one already closed or retracted."""
    edit(kecl.store.end_fact, fact_id, body.valid_to)
    return _fact_or_404(kecl, fact_id)


@router.post(
    "/{fact_id}/retract",
    operation_id="retractFact",
    dependencies=[Depends(require_key)],
    responses={**KEYED, **NO_FACT, **documented(409, "The fact was retracted already."), **TOO_LARGE, **INVALID},
)
def retract_fact(kecl: KeclDep, fact_id: FactId, body: FactRetraction) -> Fact:
    """Withdraw a fact that was never true: it leaves the current and as-of views and stays in the
    history with `retraction_reason`.

    Needs the `X-API-Key` header. Raises 404 for an unknown fact, 409 for one retracted already."""
    edit(kecl.store.retract_fact, fact_id, body.reason)
    return _fact_or_404(kecl, fact_id)
