"""Helpers shared by the command modules: settings, console, dates, JSON output, the existing home."""

from __future__ import annotations

import datetime as dt
import json
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from kecl.logs import configure_logging
from kecl.settings import Settings

if TYPE_CHECKING:  # annotations only: `kecl --help` and server-backed commands skip the store's imports
    from knowledge import KnowledgeStore
console = Console()


def load_settings() -> Settings:
    settings = Settings()
    configure_logging(settings)
    return settings


def parse_date_option(value: str | None, name: str = "--as-of") -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (expected YYYY-MM-DD)", param_hint=name) from None


def existing_store(settings: Settings) -> KnowledgeStore:
    """The store of an existing home, for commands that only read: never creates a home.

    Exits with code 1 and says which home it looked for when there is none (a SQLite home without
    its database file); a configured ``database_url`` is taken as existing.
    """
    if settings.database_url is None and not (settings.home / "kecl.db").is_file():
        console.print(
            f"[red]no kecl home at {settings.home.resolve()}[/red] (no kecl.db there): set KECL_HOME to your home, "
            "or create one with `kecl init`"
        )
        raise typer.Exit(1)
    from kecl.home import (
        open_store,  # deferred: SQLAlchemy, Alembic and networkx load only for commands that open the store
    )

    return open_store(settings)


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (dates as ISO strings), nothing else: for scripts."""
    sys.stdout.write(json.dumps(data, indent=2, default=_iso) + "\n")


def _iso(value: Any) -> str:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def call_server(settings: Settings, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` to the configured ``api.server_url`` and return the JSON answer.

    Exits with code 1 and the server's error message (or why it could not be reached).
    """
    url = (settings.api.server_url or "").rstrip("/") + path
    request = urllib.request.Request(
        url, data=json.dumps(body, default=_iso).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        console.print(f"[red]{url}: {exc.code} {message}[/red]")
    except urllib.error.URLError as exc:
        console.print(f"[red]cannot reach the server at {url} (api.server_url): {exc.reason}[/red]")
    raise typer.Exit(1)


def quiet_model_loading() -> None:
    """No "Loading weights" bar: transformers draws one on every model load, noise in a CLI answer."""
    from transformers.utils import logging as hf_logging  # deferred: imported with the models anyway

    hf_logging.disable_progress_bar()
