"""`kecl` commands for retrieval/ (registered by :mod:`kecl.cli`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `kecl` app."""
