"""The outermost layer of the API: a request id on every request and response, and a JSON 500
(with that id) for any exception a route lets through, logged with its traceback beside the id."""

from __future__ import annotations

import logging
import re
import uuid

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
