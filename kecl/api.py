"""The HTTP API (FastAPI, served by uvicorn through ``kecl serve``). OpenAPI docs at ``/docs``.

Reads are open; mutating endpoints need the ``X-API-Key`` header to match ``api.api_key`` from
settings (with no key configured they are disabled). Bodies, ``k`` and text lengths are bounded;
every error is JSON: ``{"error": {"status": ..., "message": ...}}``.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from kecl.services import Kecl
from kecl.settings import Settings
from knowledge import DocumentRecord, EntityRecord, FactRecord, ReadBatch, RelationRecord

log = logging.getLogger("kecl.api")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required by mutating endpoints")


# ----------------------------------------------------------------------------- request bodies


class DocumentIn(BaseModel):
    text: str = Field(min_length=1, description="the document's text")
    title: str | None = Field(None, max_length=1000)
    id: str | None = Field(None, max_length=500, description="your id for the document")
    published_at: dt.date | None = None
    source: str | None = Field(None, max_length=1000)


class DocumentsIn(BaseModel):
    documents: list[DocumentIn] = Field(min_length=1, max_length=1000)


class EntityIn(BaseModel):
    id: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=500)
    aliases: list[str] = Field(default_factory=list, max_length=100)
    description: str | None = None
    type: str | None = None


class RelationIn(BaseModel):
    id: str = Field(min_length=1, max_length=100)
    label: str = Field(min_length=1, max_length=500)
    template: str | None = Field(None, description="cloze template with [X] and [Y]")
    functional: bool = False


class FactIn(BaseModel):
    subject: str = Field(min_length=1)
    relation: str = Field(min_length=1)
    object: str | None = Field(None, description="entity id")
    object_literal: str | None = Field(None, description="a value, when the object is not an entity")
    valid_from: dt.date | None = None
    source: str | None = None
    confidence: float = Field(1.0, ge=0.0, le=1.0)


class FactsIn(BaseModel):
    relations: list[RelationIn] = Field(default_factory=list, max_length=1000)
    entities: list[EntityIn] = Field(default_factory=list, max_length=10000)
    facts: list[FactIn] = Field(default_factory=list, max_length=10000)


class QueryIn(BaseModel):
    text: str = Field(min_length=1, description="a cloze query with one or more [MASK]")
    mode: Literal["closed-book", "concat", "tree"] = "concat"
    k: int = Field(4, ge=0, description="evidence passages to inject")
    hops: int = Field(1, ge=1, le=3, description="graph hops for facts")
    as_of: dt.date | None = Field(None, description="use the facts believed on this date")
    top_k: int = Field(5, ge=1, description="predictions per [MASK]")
    explain: bool = Field(False, description="attention rollout over the evidence")
    evidence_boost: float | None = Field(
        None,
        ge=0.0,
        le=50.0,
        description="logit bonus for evidence words not in "
        "the query (augmented modes); null: the server's model.evidence_boost",
    )


class SearchIn(BaseModel):
    text: str = Field(min_length=1)
    k: int = Field(5, ge=1)
    source: str | None = None
    published_from: dt.date | None = None
    published_to: dt.date | None = None


# ----------------------------------------------------------------------------- the app


def create_app(settings: Settings | None = None, kecl: Kecl | None = None) -> FastAPI:
    """The FastAPI app over one :class:`Kecl` (built from ``settings`` unless given)."""
    settings = settings or (kecl.settings if kecl else Settings())
    kecl = kecl or Kecl(settings)
    limits = settings.api

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        # Load and reconcile the index before serving: a crash between an SQL commit and an
        # index write heals here, and the first query does not pay for it.
        await run_in_threadpool(lambda: (kecl.index, kecl.encoder))
        scheduler = getattr(app.state, "scheduler", None)  # `kecl serve --scheduler`
        if scheduler is not None:
            scheduler.start()
        yield
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        await run_in_threadpool(kecl.close)

    app = FastAPI(
        title="kecl",
        version="0.1.0",
        description="Knowledge-enhanced continual learning: query the encoder with knowledge, inspect the store.",
        lifespan=lifespan,
    )
    app.state.kecl = kecl

    # ---------------------------------------------------------------- errors as JSON

    def error(status: int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": {"status": status, "message": message, **extra}}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {e.get('msg')}")
        message = (
            "malformed JSON body" if any(e.get("type") == "json_invalid" for e in exc.errors()) else "invalid request"
        )
        return error(422, f"{message}: " + "; ".join(problems), details=problems)

    @app.middleware("http")
    async def bound_body(request: Request, call_next):  # type: ignore[no-untyped-def]
        if request.method in {"POST", "PUT", "PATCH"}:
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
                return error(
                    413, f"request body of {declared} bytes exceeds the limit of {limits.max_body_bytes} bytes"
                )
            body = await request.body()  # chunked bodies without a length are bounded here
            if len(body) > limits.max_body_bytes:
                return error(413, f"request body exceeds the limit of {limits.max_body_bytes} bytes")
        return await call_next(request)

    def require_key(key: Annotated[str | None, Depends(api_key_header)]) -> None:
        if not limits.api_key:
            raise HTTPException(403, "mutating endpoints are disabled: set api.api_key (KECL_API__API_KEY)")
        if key is None:
            raise HTTPException(401, "missing API key: send it in the X-API-Key header")
        if not secrets.compare_digest(key, limits.api_key):
            raise HTTPException(401, "wrong API key")

    def check_text(text: str, name: str = "text") -> None:
        if len(text) > limits.max_text_chars:
            raise HTTPException(422, f"{name} has {len(text)} characters; the limit is {limits.max_text_chars}")

    def check_k(k: int) -> None:
        if k > limits.max_k:
            raise HTTPException(422, f"k={k} exceeds the limit of {limits.max_k}")

    def entity_or_404(ref: str) -> int:
        eid = kecl.store.resolve_entity(ref)
        if eid is None:
            raise HTTPException(404, f"no entity {ref!r} (try GET /v1/entities?q=…)")
        return eid

    # ---------------------------------------------------------------- endpoints

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, Any]:
        """Liveness: the database answers."""
        return {"status": "ok", "passages": kecl.store.passage_count(), "index_loaded": kecl.index_loaded}

    @app.get("/v1/stats", tags=["inspect"])
    def stats() -> dict[str, Any]:
        """Row counts of the store and the size of the index."""
        out: dict[str, Any] = {"store": kecl.store.stats()}
        if kecl.index_loaded:
            out["index"] = {"kind": kecl.index.index.kind, "vectors": len(kecl.index.index)}
        return out

    @app.get("/v1/entities", tags=["inspect"])
    def find_entities(
        q: Annotated[str, Query(min_length=1, max_length=500, description="name or alias (prefix)")],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> dict[str, Any]:
        """Entities whose name or alias matches ``q``."""
        return {"entities": kecl.store.find_entities(q, limit=limit)}

    @app.get("/v1/entities/{ref}", tags=["inspect"])
    def get_entity(ref: str) -> dict[str, Any]:
        """An entity (numeric id, external id or name) with aliases, current facts and history."""
        view = kecl.store.get_entity(entity_or_404(ref))
        assert view is not None
        return view.to_dict()

    @app.get("/v1/entities/{ref}/neighbourhood", tags=["inspect"])
    def neighbourhood(
        ref: str,
        hops: Annotated[int, Query(ge=1, le=3)] = 1,
        as_of: dt.date | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        """Facts within ``hops`` of an entity, closest first (current, or as of a date)."""
        eid = entity_or_404(ref)
        facts = kecl.store.neighbourhood(eid, hops=hops, as_of=as_of, max_facts=limit)
        return {"entity_id": eid, "hops": hops, "facts": [f.to_dict() for f in facts]}

    @app.get("/v1/facts", tags=["inspect"])
    def list_facts(
        subject: str | None = None,
        relation: str | None = None,
        object: str | None = None,
        as_of: dt.date | None = None,
        history: bool = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Facts: current by default, as of a date, or with history; filter by subject/relation/object."""
        facts = kecl.store.facts(
            subject=entity_or_404(subject) if subject else None,
            object=entity_or_404(object) if object else None,
            relation=relation,
            as_of=as_of,
            include_closed=history,
            limit=limit,
            offset=offset,
        )
        return {"facts": [f.to_dict() for f in facts]}

    @app.get("/v1/documents/{document_id}", tags=["inspect"])
    def get_document(document_id: int) -> dict[str, Any]:
        """A document with its passages."""
        doc = kecl.store.get_document(document_id)
        if doc is None:
            raise HTTPException(404, f"no document {document_id}")
        return doc

    @app.post("/v1/documents", tags=["ingest"], dependencies=[Depends(require_key)], status_code=201)
    def post_documents(body: DocumentsIn) -> dict[str, Any]:
        """Ingest documents: stored, chunked, linked and searchable when this returns."""
        records = [
            DocumentRecord(
                text=d.text, title=d.title, external_id=d.id, published_at=d.published_at, source=d.source or "api"
            )
            for d in body.documents
        ]
        summary = kecl.ingest_documents(records)
        kecl.flush()
        return {
            "documents_added": summary.documents_added,
            "documents_unchanged": summary.documents_unchanged,
            "passage_ids": summary.new_passage_ids,
            "mentions_added": summary.mentions_added,
        }

    @app.post("/v1/facts", tags=["ingest"], dependencies=[Depends(require_key)], status_code=201)
    def post_facts(body: FactsIn) -> dict[str, Any]:
        """Ingest relations, entities and facts; bad records are reported and skipped."""
        batch = ReadBatch(
            relations=[
                RelationRecord(r.id, r.label, r.template, r.functional, origin=f"relations[{i}]")
                for i, r in enumerate(body.relations)
            ],
            entities=[
                EntityRecord(e.id, e.name, list(e.aliases), e.description, e.type, origin=f"entities[{i}]")
                for i, e in enumerate(body.entities)
            ],
            facts=[
                FactRecord(
                    f.subject,
                    f.relation,
                    f.object,
                    f.object_literal,
                    f.valid_from,
                    f.source or "api",
                    f.confidence,
                    origin=f"facts[{i}]",
                )
                for i, f in enumerate(body.facts)
            ],
        )
        for i, f in enumerate(body.facts):
            if (f.object is None) == (f.object_literal is None):
                raise HTTPException(422, f"facts[{i}]: give exactly one of 'object' or 'object_literal'")
        summary = kecl.ingest_batch(batch)
        return {
            **{k: v for k, v in summary.counts().items() if k.startswith(("facts", "entities", "relations"))},
            "new_fact_ids": summary.new_fact_ids,
            "issues": [str(i) for i in summary.issues],
        }

    @app.post("/v1/query", tags=["query"])
    def query(body: QueryIn) -> dict[str, Any]:
        """Answer a cloze query with the encoder, closed-book or with injected facts and passages.

        Concurrent requests share forward passes (micro-batching)."""
        from kecl.pipeline import QueryOptions

        check_text(body.text)
        check_k(max(body.k, body.top_k))
        if "[mask]" not in body.text.lower():
            raise HTTPException(422, "text has no [MASK]: write the word to predict as [MASK]")
        opts = QueryOptions(
            mode=body.mode,
            k_passages=body.k,
            hops=body.hops,
            as_of=body.as_of,
            top_k=body.top_k,
            explain=body.explain,
            evidence_boost=body.evidence_boost,
        )
        return kecl.batcher.submit(body.text, opts).to_dict()

    @app.post("/v1/search", tags=["query"])
    def search(body: SearchIn) -> dict[str, Any]:
        """Hybrid passage search (dense + lexical + entity mentions, fused by reciprocal rank)."""
        check_text(body.text)
        check_k(body.k)
        hits = kecl.search(
            body.text, body.k, source=body.source, published_from=body.published_from, published_to=body.published_to
        )
        return {"hits": [h.to_dict() for h in hits]}

    @app.get("/v1/runs", tags=["updates"])
    def list_runs(
        limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Annotated[int, Query(ge=0)] = 0
    ) -> dict[str, Any]:
        """Update cycles, newest first: status, stage timings, counts, metrics, decision, reasons."""
        return {"runs": kecl.store.runs(limit=limit, offset=offset)}

    @app.get("/v1/runs/{run_id}", tags=["updates"])
    def get_run(run_id: int) -> dict[str, Any]:
        """One update cycle."""
        run = kecl.store.get_run(run_id)
        if run is None:
            raise HTTPException(404, f"no update run {run_id}")
        return run

    @app.post("/v1/runs", tags=["updates"], dependencies=[Depends(require_key)], status_code=202)
    def trigger_run() -> dict[str, Any]:
        """Start an update cycle now over the inbox (in the background; poll GET /v1/runs)."""
        import threading

        from updater.locking import CYCLE_LOCK_NAME

        holder = kecl.store.lock_holder(CYCLE_LOCK_NAME)
        if holder is not None:
            raise HTTPException(409, f"an update cycle is already running ({holder})")
        thread = threading.Thread(target=kecl.run_update, kwargs={"trigger": "api"}, daemon=True, name="kecl-update")
        thread.start()
        app.state.update_thread = thread
        return {"status": "started", "poll": "/v1/runs"}

    app.state.check_text = check_text
    app.state.check_k = check_k
    return app
