"""Helpers shared by the command modules: settings, console, dates."""

from __future__ import annotations

import datetime as dt

import typer
from rich.console import Console

from kecl.logs import configure_logging
from kecl.settings import Settings

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
