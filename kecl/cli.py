"""The ``kecl`` command line. Each ``kecl.commands.*_cmds`` module registers its own commands."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from kecl import __version__
from kecl.commands import (
    demo_cmds,
    encoder_cmds,
    eval_cmds,
    query_cmds,
    retrieval_cmds,
    runs_cmds,
    store_cmds,
    updater_cmds,
)
from kecl.commands.failures import DEBUG_KEY, FriendlyGroup

app = typer.Typer(
    name="kecl",
    help="Knowledge-enhanced continual learning: keep a masked-LM encoder current.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    cls=FriendlyGroup,
)


def _print_version(value: bool) -> None:
    if value:
        print(f"kecl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
    log_json: Annotated[
        bool, typer.Option("--log-json", help="log JSON lines (with the HTTP request id) instead of text")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="print the full traceback when a command fails")] = False,
) -> None:
    """Knowledge-enhanced continual learning: keep a masked-LM encoder current."""
    ctx.meta[DEBUG_KEY] = debug
    if log_json:  # read by every command's settings (KECL_LOG_JSON), and by child processes
        os.environ["KECL_LOG_JSON"] = "1"


for _module in (store_cmds, encoder_cmds, retrieval_cmds, query_cmds, eval_cmds, updater_cmds, runs_cmds, demo_cmds):
    _module.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
