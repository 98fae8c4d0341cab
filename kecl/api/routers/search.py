"""``POST /v1/search``: hybrid passage search."""

from __future__ import annotations

from fastapi import APIRouter

from kecl.api.deps import KeclDep, LimitsDep, check_k, check_text
from kecl.api.errors import TOO_LARGE, invalid
from kecl.api.schemas import SearchIn, SearchResults

router = APIRouter(tags=["search"])


@router.post(
    "/search",
    operation_id="search",
    responses={
        **TOO_LARGE,
        **invalid("The body is invalid, `text` is longer than `api.max_text_chars`, or `k` is over `api.max_k`."),
    },
)
def search(kecl: KeclDep, limits: LimitsDep, body: SearchIn) -> SearchResults:
    """The `k` best passages: dense, lexical and entity-mention rankings fused by reciprocal rank,
    optionally only from one source or a range of publication dates.

    Each hit has its fused score, its rank and raw score per channel, and its document.
    Raises 413 for a body over `api.max_body_bytes`, 422 for an invalid body, a `text` over
    `api.max_text_chars` or `k` over `api.max_k`."""
    check_text(body.text, limits)
    check_k(body.k, limits)
    hits = kecl.search(
        body.text, body.k, source=body.source, published_from=body.published_from, published_to=body.published_to
    )
    return SearchResults.model_validate({"hits": [h.to_dict() for h in hits]})
