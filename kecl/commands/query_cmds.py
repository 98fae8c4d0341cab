"""``kecl serve`` (HTTP API) and ``kecl query`` (the same pipeline from the shell)."""

from __future__ import annotations

from typing import Annotated

import typer

from kecl.commands.common import console, load_settings


def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default: api.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: api.port)")] = None,
    scheduler: Annotated[bool, typer.Option("--scheduler", help="also run the update scheduler in this process")] = False,
) -> None:
    """Serve the HTTP API with uvicorn (OpenAPI docs at /docs)."""
    import uvicorn

    from kecl.api import create_app

    settings = load_settings()
    app = create_app(settings)
    if scheduler:
        from kecl.commands.updater_cmds import attach_scheduler

        attach_scheduler(app, settings)
    console.print(f"serving on http://{host or settings.api.host}:{port or settings.api.port} (docs at /docs)")
    uvicorn.run(app, host=host or settings.api.host, port=port or settings.api.port, log_level=settings.log_level.lower())


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``query`` to the ``kecl`` app."""
    app.command()(serve)
