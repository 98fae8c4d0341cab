"""The API's middleware, all pure ASGI (Starlette's ``BaseHTTPMiddleware`` runs every request
through a task group and memory streams of its own, Python work that each request paid for on the
interpreter lock the searches share): a request id on every request and response with a JSON 500
(with that id) for any exception a route lets through, and the request-body bound."""

from __future__ import annotations

import logging
import re
import uuid

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kecl.api.errors import error_response
from kecl.logs import REQUEST_ID

log = logging.getLogger("kecl.api")

HEADER = "X-Request-ID"
# A client's id is echoed into logs and headers: only short, plain ones are kept.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Pure ASGI middleware: takes the client's ``X-Request-ID`` (if plain) or makes one, sets
    :data:`kecl.logs.REQUEST_ID` for the request, returns it in the response header, and turns an
    unhandled exception into ``{"error": …}`` with status 500 instead of a plain-text page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI call (HTTP only; lifespan and websockets pass through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(HEADER.lower().encode(), b"").decode("latin-1")
        request_id = given if _CLIENT_ID.match(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (HEADER.lower().encode(), request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:  # noqa: BLE001 - every failure becomes a JSON answer and a logged traceback
            log.exception("unhandled error in %s %s (request id %s)", scope["method"], scope["path"], request_id)
            if started:  # the status line is gone: all we can do is end the connection
                raise
            response = error_response(
                500, f"internal error; the server log has the details under request id {request_id}"
            )
            response.headers[HEADER] = request_id
            await response(scope, receive, send)
        finally:
            REQUEST_ID.reset(token)


BOUNDED_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyLimitMiddleware:
    """Refuses (413) a POST/PUT/PATCH body over ``api.max_body_bytes`` (read from the app's
    settings at each request) before anything parses it: a declared length is checked before the
    body is read; a body without one (chunked) is read up to the limit and then handed on whole."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI call (only HTTP bodies of the bounded methods are looked at)."""
        if scope["type"] != "http" or scope["method"] not in BOUNDED_METHODS:
            await self.app(scope, receive, send)
            return
        limit = scope["app"].state.settings.api.max_body_bytes
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit():
            if int(declared) > limit:
                response = error_response(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
                await response(scope, receive, send)
                return
            # the server holds the body to its declared length, so it cannot pass the limit now
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the app sees it as sent
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await error_response(413, f"request body exceeds the limit of {limit} bytes")(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` first, then what ``receive`` gives."""
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
