"""``kecl demo``: the main job on the embedded default data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kecl.commands.common import console, load_settings


def demo(
    home: Annotated[Path, typer.Option(help="demo home folder (rebuilt on every run)")] = Path("kecl-demo"),
) -> None:
    """Run the demo story on the shipped demo data in a fresh home folder."""
    from kecl.demo import run_demo  # deferred: the demo loads every model; --help should not

    load_settings()
    run_demo(home, console=console)


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the ``kecl`` app."""
    app.command()(demo)
