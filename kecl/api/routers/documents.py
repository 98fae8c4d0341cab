"""``/v1/documents``: list, read and delete stored documents; ingest new ones."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool

from kecl.api.deps import MAX_ID, KeclDep, require_key, row_id
from kecl.api.errors import INVALID, KEYED, TOO_LARGE, documented
from kecl.api.resources import DocumentDeleted, DocumentPage
from kecl.api.schemas import Document, DocumentsAdded, DocumentsIn
from kecl.services import Kecl
from knowledge import DocumentRecord, IngestSummary

router = APIRouter(prefix="/documents", tags=["documents"])

NO_DOCUMENT = documented(404, "No document has this id.")
DocumentId = Annotated[int, row_id("the document's id")]


@router.get("", operation_id="listDocuments", responses=INVALID)
def list_documents(
    kecl: KeclDep,
    source: Annotated[str | None, Query(max_length=1000, description="only from this source")] = None,
    published_from: Annotated[dt.date | None, Query(description="published on or after")] = None,
    published_to: Annotated[dt.date | None, Query(description="published on or before")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> DocumentPage:
    """Documents by id, with their source, date and passage count (no text), optionally filtered.

    Raises 422 for a bad date or `limit`/`offset` out of range."""
    filters: dict[str, Any] = {"source": source, "published_from": published_from, "published_to": published_to}
    return DocumentPage.model_validate(
        {
            "documents": kecl.store.documents(limit=limit, offset=offset, **filters),
            "total": kecl.store.count_documents(**filters),
            "limit": limit,
            "offset": offset,
        }
    )


@router.get("/{document_id}", operation_id="getDocument", responses={**NO_DOCUMENT, **INVALID})
def get_document(kecl: KeclDep, document_id: DocumentId) -> Document:
    """A document with its passages (in order).

    Raises 404 for an unknown id, 422 for an id that is not an integer."""
    doc = kecl.store.get_document(document_id)
    if doc is None:
        raise HTTPException(404, f"no document {document_id}")
    return Document.model_validate(doc)


@router.delete(
    "/{document_id}",
    operation_id="deleteDocument",
    dependencies=[Depends(require_key)],
    responses={**KEYED, **NO_DOCUMENT, **INVALID},
)
def delete_document(kecl: KeclDep, document_id: DocumentId) -> DocumentDeleted:
    """Delete a document: its passages leave the store, the index and the entity mentions; facts
    citing it are kept without the citation.

    Needs the `X-API-Key` header: 401 without it or with a wrong one, 403 when the server has no key.
    Raises 404 for an unknown id."""
    if kecl.store.get_document(document_id) is None:
        raise HTTPException(404, f"no document {document_id}")
    removed = kecl.delete_document(document_id)
    kecl.flush()
    return DocumentDeleted(id=document_id, passage_ids=removed)


@router.post(
    "",
    operation_id="addDocuments",
    status_code=201,
    dependencies=[Depends(require_key)],
    responses={**KEYED, **TOO_LARGE, **INVALID},
)
async def add_documents(kecl: KeclDep, body: DocumentsIn) -> DocumentsAdded:
    """Ingest documents: stored, chunked into passages, linked to entities and searchable when this returns.

    A document already stored with the same content counts as unchanged.
    Needs the `X-API-Key` header: 401 without it or with a wrong one, 403 when the server has no key.
    Raises 413 for a body over `api.max_body_bytes`, 422 for an invalid body."""
    # A coroutine that hands only the ingest to the thread pool: FastAPI runs a plain function's
    # body and then its response validation in the pool, two hand-offs per request on the event
    # loop that the searches wait for.
    summary = await run_in_threadpool(_ingest, kecl, [d.record() for d in body.documents])
    return DocumentsAdded(
        documents_added=summary.documents_added,
        documents_unchanged=summary.documents_unchanged,
        passage_ids=summary.new_passage_ids,
        mentions_added=summary.mentions_added,
    )


def _ingest(kecl: Kecl, records: list[DocumentRecord]) -> IngestSummary:
    summary = kecl.ingest_documents(records)
    kecl.flush()
    return summary
