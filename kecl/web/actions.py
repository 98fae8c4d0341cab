"""The write actions of the web interface: entering the API key, activating a checkpoint, ingesting.

Each write needs the session the key opened (see :mod:`kecl.web.session`) and the CSRF token of
that session in the form, and is refused when the browser says it came from another origin.
"""

from __future__ import annotations

import hmac
import logging
import re
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kecl.models import ModelError, activate_model
from kecl.services import Kecl
from kecl.web import session as sessions
from kecl.web.pages import KeclDep, PageError, render
from knowledge import IngestIssue, IngestSummary, read_paths

log = logging.getLogger("kecl.web")

router = APIRouter(include_in_schema=False)

FORMATS = (".jsonl", ".tsv", ".txt", ".md")


def require_write(request: Request, csrf: str) -> None:
    """Let a write through only from this origin, in a keyed session, with that session's CSRF token.

    Raises PageError 403 (no key configured, another origin, bad token) or 401 (no session).
    """
    key = request.app.state.settings.api.api_key
    if not key:
        raise PageError(403, "writes are disabled: the server has no API key (set api.api_key)")
    if not sessions.same_origin(request):
        raise PageError(403, "refused: the form was posted from another site")
    session = sessions.current_session(request, key)
    if session is None:
        raise PageError(401, "enter the API key first (top right); it is kept for this browser session only")
    if not csrf or not hmac.compare_digest(csrf, session.csrf):
        raise PageError(403, "refused: the form's CSRF token is missing or stale; reload the page and try again")


def _back(next_path: str) -> str:
    # only a path on this site: an absolute or protocol-relative URL would make this an open redirect
    return next_path if next_path.startswith("/") and not next_path.startswith("//") else "/"


@router.post("/session")
def open_session(request: Request, key: Annotated[str, Form()], next: Annotated[str, Form()] = "/") -> Response:
    """Check the API key once and open a write session for this browser (a signed cookie)."""
    configured = request.app.state.settings.api.api_key
    if not sessions.same_origin(request):
        raise PageError(403, "refused: the form was posted from another site")
    if not configured:
        raise PageError(403, "writes are disabled: the server has no API key (set api.api_key)")
    if not sessions.key_matches(key, configured):
        raise PageError(401, "wrong API key")
    response = RedirectResponse(_back(next), status_code=303)
    sessions.start_session(response, configured, secure=request.url.scheme == "https")
    return response


@router.post("/session/end")
def close_session(next: Annotated[str, Form()] = "/") -> Response:
    """Forget the key in this browser."""
    response = RedirectResponse(_back(next), status_code=303)
    sessions.end_session(response)
    return response


@router.post("/runs/activate")
def activate(
    request: Request, kecl: KeclDep, version: Annotated[str, Form()], csrf: Annotated[str, Form()] = ""
) -> Response:
    """Make ``version`` the active checkpoint (roll back or forward) and serve it from now on."""
    require_write(request, csrf)
    if not re.fullmatch(r"[\w.-]+", version):
        raise PageError(422, f"{version!r} is not a checkpoint version")
    try:
        # the one activation path (SQL commit first, the ACTIVE cache after), as the CLI and /v1/models
        activate_model(kecl.settings, kecl.store, version)
    except ModelError as exc:
        raise PageError(exc.status if exc.status == 404 else 422, str(exc)) from None
    kecl.reload_encoder()
    log.info("web: activated checkpoint %s", version)
    return RedirectResponse(f"/runs?message=active+model+is+now+{version}", status_code=303)


@router.post("/ingest", response_class=HTMLResponse)
async def ingest(
    request: Request,
    kecl: KeclDep,
    csrf: Annotated[str, Form()] = "",
    file: UploadFile | None = None,
    text: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "pasted.jsonl",
) -> HTMLResponse:
    """Ingest an uploaded file or pasted text (a corpus or a fact feed, by its extension); show what
    went in and every skipped line as ``file:line: reason``."""
    require_write(request, csrf)
    if file is not None and file.filename:
        display, content = file.filename, await file.read()
    elif text.strip():
        display, content = name or "pasted.jsonl", text.encode("utf-8")
    else:
        raise PageError(422, "nothing to ingest: choose a file or paste text")
    display = Path(display).name  # a name, never a path the client picked
    if Path(display).suffix.lower() not in FORMATS:
        raise PageError(422, f"{display}: unsupported file type (expected one of {', '.join(FORMATS)})")
    summary = await _ingest_bytes(kecl, display, content)
    issues = [IngestIssue(display, i.line, i.reason) for i in summary.issues]
    return render(request, "ingest.html", result=summary.counts(), issues=issues, name=display)


async def _ingest_bytes(kecl: Kecl, display: str, content: bytes) -> IngestSummary:
    """Read ``content`` as a file named ``display`` and ingest it, off the event loop."""

    def work() -> IngestSummary:
        with tempfile.TemporaryDirectory(prefix="kecl-web-") as tmp:
            path = Path(tmp) / display
            path.write_bytes(content)
            summary = kecl.ingest_batch(read_paths([path], source=f"web:{display}"))
            kecl.flush()
            return summary

    return await run_in_threadpool(work)
