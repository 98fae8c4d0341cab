"""The web interface served by ``kecl serve`` at ``/``: server-rendered pages for inspecting the
store, the model's knowledge over time and why an answer came out. The JSON API stays under ``/v1``.

Third-party JavaScript and CSS are vendored under ``static/vendor`` (see its ``VERSIONS.txt``); the
pages load nothing from the internet.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from kecl.web import actions, pages

STATIC = Path(__file__).parent / "static"
STATIC_PREFIX = "/web/static"


def install_web(app: FastAPI) -> None:
    """Mount the pages, their write actions and their static files on ``app``."""
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC), name="web-static")
    app.add_exception_handler(pages.PageError, pages.page_error)


__all__ = ["install_web", "STATIC_PREFIX"]
