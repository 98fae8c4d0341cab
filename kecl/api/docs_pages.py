"""``/docs`` (Swagger UI) and ``/redoc`` from assets vendored under ``kecl/api/static/``.

FastAPI's own pages load their JavaScript from a CDN and are blank offline; these serve the same
pages from the package (fetched by ``scripts/vendor_docs_assets.py``, versions in ``VERSIONS.json``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PATH = "/static/api-docs"


def mount_docs(app: FastAPI) -> None:
    """Serve the vendored assets and the two documentation pages (left out of the OpenAPI document)."""
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="api-docs-static")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} — API",
            swagger_js_url=f"{STATIC_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_PATH}/favicon-32x32.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} — API",
            redoc_js_url=f"{STATIC_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{STATIC_PATH}/favicon-32x32.png",
            with_google_fonts=False,
        )
