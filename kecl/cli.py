"""The ``kecl`` command line. Each ``kecl.commands.*_cmds`` module registers its own commands."""

from __future__ import annotations

import typer

from kecl.commands import demo_cmds, encoder_cmds, eval_cmds, query_cmds, retrieval_cmds, store_cmds, updater_cmds
from kecl.commands.failures import DEBUG_KEY, FriendlyGroup

app = typer.Typer(
    name="kecl",
    help="Knowledge-enhanced continual learning: keep a masked-LM encoder current.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    cls=FriendlyGroup,
)


@app.callback()
def main(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="print the full traceback when a command fails"),
) -> None:
    """Knowledge-enhanced continual learning: keep a masked-LM encoder current."""
    ctx.meta[DEBUG_KEY] = debug


for _module in (store_cmds, encoder_cmds, retrieval_cmds, query_cmds, eval_cmds, updater_cmds, demo_cmds):
    _module.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
