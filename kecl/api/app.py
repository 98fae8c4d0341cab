"""The FastAPI app: its lifespan, the routers, errors as JSON and the request-body bound."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from kecl.api.errors import error_response
from kecl.api.routers import documents, entities, facts, health, query, runs, search, stats
from kecl.services import Kecl
from kecl.settings import Settings
from kecl.web import install_web

TAGS = [
    {"name": "health", "description": "Liveness."},
    {"name": "stats", "description": "The size of the store and the index."},
    {"name": "entities", "description": "Entities of the knowledge graph, their facts and neighbourhoods."},
    {"name": "facts", "description": "Facts, current and past; ingesting new ones (needs the API key)."},
    {"name": "documents", "description": "Documents and their passages; ingesting new ones (needs the API key)."},
    {"name": "query", "description": "Cloze queries answered by the encoder with injected knowledge."},
    {"name": "search", "description": "Hybrid passage search."},
    {"name": "runs", "description": "Update cycles: history and starting one (needs the API key)."},
]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the index and the encoder before serving; start and stop an attached scheduler."""
    kecl: Kecl = app.state.kecl
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


async def http_error(_request: Request, exc: Exception) -> Response:
    """Every HTTP error (ours, and FastAPI's 404/405) as ``{"error": …}``."""
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail))


async def validation_error(_request: Request, exc: Exception) -> Response:
    """A request that fails validation: 422 with one ``where: what`` line per problem."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {e.get('msg')}")
    message = "malformed JSON body" if any(e.get("type") == "json_invalid" for e in exc.errors()) else "invalid request"
    return error_response(422, f"{message}: " + "; ".join(problems), details=problems)


async def bound_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Refuse (413) a POST/PUT/PATCH body over ``api.max_body_bytes`` before anything parses it."""
    if request.method in {"POST", "PUT", "PATCH"}:
        limit = request.app.state.settings.api.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return error_response(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        body = await request.body()  # chunked bodies without a length are bounded here
        if len(body) > limit:
            return error_response(413, f"request body exceeds the limit of {limit} bytes")
    return await call_next(request)


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
        '`{"error": {"status": …, "message": …}}`.',
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.kecl = kecl
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.middleware("http")(bound_body)
    app.include_router(health.router)
    for router in (stats, entities, facts, documents, query, search, runs):
        app.include_router(router.router, prefix="/v1")
    install_web(app)  # the pages at / (outside /v1 and the OpenAPI document)
    return app
