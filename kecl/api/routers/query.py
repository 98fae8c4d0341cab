"""``POST /v1/query``: a cloze query answered by the encoder, with the knowledge it was given."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from kecl.api.deps import KeclDep, LimitsDep, check_k, check_text
from kecl.api.errors import TOO_LARGE, invalid
from kecl.api.schemas import Answer, QueryIn
from kecl.pipeline import QueryError

router = APIRouter(tags=["query"])


# exclude_unset: the snapshot's `index` is left out, not null, before the index is loaded
@router.post(
    "/query",
    operation_id="query",
    response_model_exclude_unset=True,
    responses={
        **TOO_LARGE,
        **invalid(
            "The body is invalid, `text` has no [MASK] or is longer than `api.max_text_chars`, "
            "its masks are further apart than the encoder reads (`model.max_injected_length` tokens; a longer "
            "query is cut around its masks), or `k` or `top_k` is over `api.max_k`."
        ),
    },
)
def query(kecl: KeclDep, limits: LimitsDep, body: QueryIn, request: Request) -> Answer:
    """Answer a cloze query with the encoder, closed-book or with injected facts and passages.

    Returns the predictions per [MASK], the facts and passages injected, the encoder's input, the
    state that answered and timings (with `explain`, the attention over the evidence).
    Concurrent requests share forward passes (micro-batching).
    Raises 413 for a body over `api.max_body_bytes`, 422 for an invalid body, a `text` without
    [MASK] or over `api.max_text_chars`, masks too far apart for the encoder, or `k`/`top_k` over
    `api.max_k`. A text longer than the encoder reads is cut around its masks (`text` in the answer)."""
    check_text(body.text, limits)
    check_k(max(body.k, body.top_k), limits)
    if "[mask]" not in body.text.lower():
        raise HTTPException(422, "text has no [MASK]: write the word to predict as [MASK]")
    try:
        answer = kecl.batcher.submit(body.text, body.options())
    except QueryError as exc:
        raise HTTPException(422, str(exc)) from exc
    request.app.state.metrics.batch_size.observe(answer.timings_ms.get("batch_size", 1))
    return Answer.model_validate(answer.to_dict())
