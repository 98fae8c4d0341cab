"""The FastAPI app: its lifespan, the routers, errors as JSON and the request-body bound."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from kecl import heap
from kecl.api.docs_pages import mount_docs
from kecl.api.errors import SERVER_ERROR, UNAVAILABLE, error_response
from kecl.api.metrics import instrument
from kecl.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from kecl.api.routers import documents, entities, facts, health, models, query, relations, runs, search, stats
from kecl.logs import REQUEST_ID
from kecl.services import Kecl
from kecl.settings import Settings
from kecl.threads import set_task_width
from kecl.web import install_web

log = logging.getLogger("kecl.api")

TAGS = [
    {"name": "health", "description": "Liveness and readiness."},
    {"name": "stats", "description": "The size of the store and the index."},
    {"name": "entities", "description": "Entities of the knowledge graph, their facts and neighbourhoods."},
    {"name": "facts", "description": "Facts, current and past; ingesting new ones (needs the API key)."},
    {"name": "documents", "description": "Documents and their passages; ingesting new ones (needs the API key)."},
    {"name": "query", "description": "Cloze queries answered by the encoder with injected knowledge."},
    {"name": "search", "description": "Hybrid passage search."},
    {"name": "relations", "description": "The relations facts can use; defining them (needs the API key)."},
    {"name": "models", "description": "The encoder's checkpoints; activating one or rolling back (needs the API key)."},
    {"name": "runs", "description": "Update cycles: history and starting one (needs the API key)."},
]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the index and the encoder before serving; start and stop an attached scheduler."""
    kecl: Kecl = app.state.kecl
    # Before any thread computes: each one keeps the OpenMP width it first ran with.
    set_task_width(app.state.settings.api.threads_per_task)
    # Load and reconcile the index before serving: a crash between an SQL commit and an
    # index write heals here, and the first query does not pay for it.
    await run_in_threadpool(lambda: (kecl.index, kecl.encoder))
    # Follow what other processes commit, and publish index files when the lease is free.
    await run_in_threadpool(kecl.follow, app.state.settings.processes.publish)
    # What is loaded now lives as long as the server: out of the collector's full passes, which
    # would otherwise stop every request for ~0.4 s each time one runs.
    heap.freeze_loaded()
    scheduler = getattr(app.state, "scheduler", None)  # `kecl serve --scheduler`
    if scheduler is not None:
        scheduler.start()
    yield
    if scheduler is not None:
        scheduler.shutdown(wait=False)
    await run_in_threadpool(kecl.close)


FASTAPI_BODY_ERROR = "There was an error parsing the body"
"""The detail of the 400 FastAPI raises for a body it cannot decode."""


async def http_error(_request: Request, exc: Exception) -> Response:
    """Every HTTP error (ours, and FastAPI's 404/405) as ``{"error": …}``."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == FASTAPI_BODY_ERROR:
        # a body that is not even text: as malformed as invalid JSON, and answered the same way
        return error_response(422, "malformed JSON body: it could not be decoded (send UTF-8 JSON)")
    return error_response(exc.status_code, str(exc.detail))


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """The database refused (read-only, full, unreachable): 503, the request can be retried once
    the operator has fixed it; nothing of it was committed."""
    first = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    log.error("database error in %s %s: %s", request.method, request.url.path, first, exc_info=exc)
    return error_response(
        503, f"the database refused the request ({first}); retry later (request id {REQUEST_ID.get()})"
    )


async def validation_error(_request: Request, exc: Exception) -> Response:
    """A request that fails validation: 422 with one ``where: what`` line per problem."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {e.get('msg')}")
    message = "malformed JSON body" if any(e.get("type") == "json_invalid" for e in exc.errors()) else "invalid request"
    return error_response(422, f"{message}: " + "; ".join(problems), details=problems)


def create_app_from_settings() -> FastAPI:
    """The app for this process's settings (environment and ``kecl.toml``): the factory each
    ``kecl serve --workers`` process calls."""
    return create_app(Settings())


def create_app(settings: Settings | None = None, kecl: Kecl | None = None) -> FastAPI:
    """The FastAPI app over one :class:`Kecl` (built from ``settings`` unless given).

    ``settings`` default to ``kecl``'s, else to ``Settings()``; the API limits and key come from them.
    """
    settings = settings or (kecl.settings if kecl else Settings())
    kecl = kecl or Kecl(settings)
    app = FastAPI(
        title="kecl",
        version="0.1.0",
        description="Knowledge-enhanced continual learning: query the encoder with knowledge, inspect the store.\n\n"
        "Reads are open; mutating endpoints need the `X-API-Key` header. Every error is "
        '`{"error": {"status": …, "message": …}}`, a 500 included; every response carries an `X-Request-ID` '
        "header (the client's own, if it sent a plain one) that the server's log shows beside any traceback.",
        openapi_tags=TAGS,
        lifespan=lifespan,
        responses={**SERVER_ERROR, **UNAVAILABLE},  # any route can meet a bug or a database that went away
        docs_url=None,  # served from vendored assets by mount_docs (FastAPI's pages load a CDN)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.kecl = kecl
    app.state.run_start_wait = 60.0  # seconds POST /v1/runs waits for the cycle's run row before a 503
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_middleware(BodyLimitMiddleware)
    instrument(app, kecl)
    app.add_middleware(RequestIdMiddleware)  # added last: outermost, so it also answers the others' failures
    app.include_router(health.router)
    for router in (stats, entities, facts, relations, documents, query, search, models, runs):
        app.include_router(router.router, prefix="/v1")
    mount_docs(app)
    install_web(app)  # the pages at / (outside /v1 and the OpenAPI document)
    return app
