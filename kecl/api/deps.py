"""Dependencies of the routes: the app's :class:`Kecl`, its limits, the API key, and the checks
that need the limits or the store (raised as ``HTTPException``, sent as :mod:`kecl.api.errors`)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import APIKeyHeader

from kecl.services import Kecl
from kecl.settings import ApiSettings
from knowledge import EditError

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required by mutating endpoints")


async def get_kecl(request: Request) -> Kecl:
    """The app's :class:`Kecl` (set by :func:`kecl.api.create_app`)."""
    return request.app.state.kecl


async def get_limits(request: Request) -> ApiSettings:
    """The app's ``api`` settings: key, body size, ``k`` and text limits."""
    return request.app.state.settings.api


KeclDep = Annotated[Kecl, Depends(get_kecl)]
LimitsDep = Annotated[ApiSettings, Depends(get_limits)]


async def require_key(limits: LimitsDep, key: Annotated[str | None, Depends(api_key_header)]) -> None:
    """Let the request through only with the configured API key.

    Raises 403 when no key is configured (mutations disabled), 401 when the header is missing or wrong.
    """
    if not limits.api_key:
        raise HTTPException(403, "mutating endpoints are disabled: set api.api_key (KECL_API__API_KEY)")
    if key is None:
        raise HTTPException(401, "missing API key: send it in the X-API-Key header")
    # constant time: the comparison must not tell an attacker how much of a guess was right;
    # bytes, because compare_digest refuses str with characters outside ASCII
    if not secrets.compare_digest(key.encode("utf-8", "surrogateescape"), limits.api_key.encode("utf-8")):
        raise HTTPException(401, "wrong API key")


def check_text(text: str, limits: ApiSettings, name: str = "text") -> None:
    """Raise 422 if ``text`` is longer than ``api.max_text_chars``."""
    if len(text) > limits.max_text_chars:
        raise HTTPException(422, f"{name} has {len(text)} characters; the limit is {limits.max_text_chars}")


def check_k(k: int, limits: ApiSettings) -> None:
    """Raise 422 if ``k`` is over ``api.max_k``."""
    if k > limits.max_k:
        raise HTTPException(422, f"k={k} exceeds the limit of {limits.max_k}")


MAX_ID = 2**63 - 1
"""The largest id or offset SQL stores (a signed 64-bit integer): larger ones are refused with 422."""


def row_id(description: str) -> Any:
    """A path parameter holding a row's id: any signed 64-bit integer (SQL's range; one outside it
    is a 422, not an overflow in the driver). Unknown ids are each route's 404."""
    return Path(ge=-MAX_ID - 1, le=MAX_ID, description=description)


def entity_or_404(kecl: Kecl, ref: str) -> int:
    """The id of the entity ``ref`` names (numeric id, external id, name or alias); 404 if none.

    A plain call in the route body, not a dependency: dependencies run before the route's
    parameters are validated, and a bad parameter must still answer 422 for an unknown entity.
    """
    eid = kecl.store.resolve_entity(ref)
    if eid is None:
        raise HTTPException(404, f"no entity {ref!r} (try GET /v1/entities?q=…)")
    return eid


def edit(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a store edit; its :class:`knowledge.EditError` becomes the HTTP error it names (404/409)."""
    try:
        return fn(*args)
    except EditError as exc:
        raise HTTPException(exc.status, str(exc)) from None
