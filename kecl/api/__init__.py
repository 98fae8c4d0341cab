"""The HTTP API (FastAPI, served by uvicorn through ``kecl serve``). OpenAPI docs at ``/docs``.

Reads are open; mutating endpoints need the ``X-API-Key`` header to match ``api.api_key`` from
settings (with no key configured they are disabled). Bodies, ``k`` and text lengths are bounded;
every error is JSON: ``{"error": {"status": ..., "message": ...}}``.

``app`` builds the app; ``deps`` holds the route dependencies, ``errors`` the error shape and its
documentation, ``schemas`` the request and response bodies, ``routers`` one module per resource.
"""

from kecl.api.app import create_app

__all__ = ["create_app"]
