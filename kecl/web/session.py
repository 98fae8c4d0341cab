"""The browser's write session: the API key entered once, then a signed cookie and a CSRF token.

The key is posted once (in a form body, never a URL) and checked like the ``X-API-Key`` header.
The browser then holds a session cookie ``nonce.expiry.signature`` signed with HMAC-SHA256 under
the server's API key: ``HttpOnly`` (page scripts cannot read it), ``SameSite=Strict`` (another site
cannot make the browser send it) and without ``Max-Age`` (it ends with the browser session).
Every write form also carries a CSRF token, an HMAC of the session's nonce, which a cross-site
page cannot read or forge. Nothing is kept on the server, so any replica sharing the key accepts
the session, and changing the key ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from fastapi import Request, Response

COOKIE = "kecl_session"
LIFETIME_SECONDS = 12 * 3600  # an upper bound even for a browser that keeps session cookies forever


@dataclass(frozen=True)
class WriteSession:
    """A valid session: its nonce and the CSRF token every write form must echo."""

    nonce: str
    csrf: str


def _sign(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def csrf_token(key: str, nonce: str) -> str:
    """The CSRF token of the session with ``nonce`` (what forms carry in ``csrf``)."""
    return _sign(key, f"csrf:{nonce}")


def key_matches(given: str, key: str | None) -> bool:
    """True only when a key is configured and ``given`` equals it (compared in constant time)."""
    return bool(key) and secrets.compare_digest(given.encode(), (key or "").encode())


def start_session(response: Response, key: str, secure: bool) -> WriteSession:
    """Set a fresh session cookie on ``response`` and return the session."""
    nonce = secrets.token_urlsafe(24)
    expiry = int(time.time()) + LIFETIME_SECONDS
    value = f"{nonce}.{expiry}.{_sign(key, f'{nonce}.{expiry}')}"
    response.set_cookie(COOKIE, value, httponly=True, samesite="strict", secure=secure, path="/")
    return WriteSession(nonce, csrf_token(key, nonce))


def end_session(response: Response) -> None:
    """Remove the session cookie."""
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")


def current_session(request: Request, key: str | None) -> WriteSession | None:
    """The request's session if its cookie is well-formed, unexpired and signed under ``key``; else None."""
    raw = request.cookies.get(COOKIE)
    if not key or not raw or raw.count(".") != 2:
        return None
    nonce, expiry, signature = raw.split(".")
    if not expiry.isdigit() or int(expiry) < time.time():
        return None
    if not hmac.compare_digest(signature, _sign(key, f"{nonce}.{expiry}")):
        return None
    return WriteSession(nonce, csrf_token(key, nonce))


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another origin (``Origin`` or
    ``Referer`` naming a different host); True when it says nothing (older browsers, curl)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin != "null"
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1].split("/", 1)[0] == host
