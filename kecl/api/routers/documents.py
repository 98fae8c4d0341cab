"""``/v1/documents``: read a stored document with its passages, ingest new documents."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path

from kecl.api.deps import MAX_ID, KeclDep, require_key
from kecl.api.errors import INVALID, KEYED, TOO_LARGE, documented
from kecl.api.schemas import Document, DocumentsAdded, DocumentsIn

router = APIRouter(prefix="/documents", tags=["documents"])


@router.get(
    "/{document_id}",
    operation_id="getDocument",
    responses={**documented(404, "No document has this id."), **INVALID},
)
def get_document(
    kecl: KeclDep, document_id: Annotated[int, Path(le=MAX_ID, description="the document's id")]
) -> Document:
    """A document with its passages (in order).

    Raises 404 for an unknown id, 422 for an id that is not an integer."""
    doc = kecl.store.get_document(document_id)
    if doc is None:
        raise HTTPException(404, f"no document {document_id}")
    return Document.model_validate(doc)


@router.post(
    "",
    operation_id="addDocuments",
    status_code=201,
    dependencies=[Depends(require_key)],
    responses={**KEYED, **TOO_LARGE, **INVALID},
)
def add_documents(kecl: KeclDep, body: DocumentsIn) -> DocumentsAdded:
    """Ingest documents: stored, chunked into passages, linked to entities and searchable when this returns.

    A document already stored with the same content counts as unchanged.
    Needs the `X-API-Key` header: 401 without it or with a wrong one, 403 when the server has no key.
    Raises 413 for a body over `api.max_body_bytes`, 422 for an invalid body."""
    summary = kecl.ingest_documents([d.record() for d in body.documents])
    kecl.flush()
    return DocumentsAdded(
        documents_added=summary.documents_added,
        documents_unchanged=summary.documents_unchanged,
        passage_ids=summary.new_passage_ids,
        mentions_added=summary.mentions_added,
    )
