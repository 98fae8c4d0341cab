"""``kecl update``, ``kecl models …`` and ``kecl schedule``: the continual-update loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from kecl.commands.common import console, existing_store, load_settings, print_json
from kecl.home import ensure_home
from kecl.settings import Settings

if TYPE_CHECKING:  # annotations only (torch, SQLAlchemy)
    from kecl.models import ModelInfo
    from knowledge import KnowledgeStore

BUSY_EXIT = 75
"""``kecl update``'s exit code when another process's cycle holds the lock (EX_TEMPFAIL)."""

models_app = typer.Typer(help="Encoder checkpoints: list them, roll back or forward.", no_args_is_help=True)


def update(
    paths: Annotated[list[Path] | None, typer.Argument(help="files to ingest (default: the inbox)")] = None,
    steps: Annotated[int | None, typer.Option(help="training steps (default: train.steps)")] = None,
    wait: Annotated[
        float, typer.Option(help="seconds to wait for another process's cycle to finish (default: do not wait)")
    ] = 0.0,
) -> None:
    """Run one update cycle now: ingest → link → index → train → evaluate → promote or reject.

    Exit codes: 0 done (promoted, rejected or nothing to learn), 1 the cycle failed, 75 another
    process's cycle holds the lock (try again later, or pass --wait)."""
    # deferred: the cycle loads torch and the models; other commands of this module do not
    from kecl.reports import print_report
    from kecl.services import Kecl

    settings = load_settings()
    if steps is not None:
        settings.train.steps = steps
    kecl = Kecl(settings)
    report = kecl.run_update(paths=paths, trigger="cli", wait_seconds=wait)
    kecl.close()
    if report.status == "skipped":
        # cron and scripts must see that nothing ran; 75 is EX_TEMPFAIL: try again later
        typer.echo(f"error: {report.reasons[0]}; run again later or pass --wait SECONDS", err=True)
        raise typer.Exit(BUSY_EXIT)
    print_report(report, console)
    if report.status == "failed":
        raise typer.Exit(1)


JSON = Annotated[bool, typer.Option("--json", help="print JSON (the HTTP API's shape) instead of a table")]


@models_app.command("list")
def models_list(as_json: JSON = False) -> None:
    """Checkpoints with status (active / candidate / rejected / retired), parent and metrics."""
    from kecl.models import list_models  # deferred: torch, for reading manifests only

    settings = load_settings()
    models = list_models(settings, existing_store(settings))
    if as_json:
        print_json({"total": len(models), "limit": len(models), "offset": 0, "models": [vars(m) for m in models]})
        return
    table = Table(title=f"checkpoints in {settings.checkpoints_dir}")
    for col in ("version", "status", "parent", "created", "metrics"):
        table.add_column(col)
    for m in models:
        metrics = ", ".join(f"{k}={v:.3g}" for k, v in m.metrics.items() if isinstance(v, int | float))
        table.add_row(m.version, m.status, m.parent or "-", m.created_at or "", metrics[:80])
    console.print(table)


def _change_model(change: Callable[[Settings, KnowledgeStore], ModelInfo]) -> None:
    settings = load_settings()
    try:
        info = change(settings, existing_store(settings))
    except ValueError as exc:  # kecl.models.ModelError
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"active model is now {info.version}; running servers and the worker load it within "
        "processes.snapshot_poll_seconds plus its loading time"
    )


@models_app.command("activate")
def models_activate(version: Annotated[str, typer.Argument(help="checkpoint version, e.g. v0002")]) -> None:
    """Make VERSION the active model (manual rollback or roll-forward)."""
    from kecl.models import activate_model  # deferred: torch

    _change_model(lambda settings, store: activate_model(settings, store, version))


@models_app.command("rollback")
def models_rollback() -> None:
    """Make the active model's parent the active model."""
    from kecl.models import rollback_model  # deferred: torch

    _change_model(rollback_model)


@models_app.command("prune")
def models_prune(
    keep: Annotated[
        int | None, typer.Option(min=0, help="newest checkpoints to keep (default: model.keep_checkpoints)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only say what would be deleted")] = False,
) -> None:
    """Delete old checkpoints: keeps the active one's lineage (it and its ancestors) and the newest KEEP."""
    from kecl.models import prune_models  # deferred: torch

    settings = load_settings()
    keep_last = settings.model.keep_checkpoints if keep is None else keep
    doomed = prune_models(settings, existing_store(settings), keep_last, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    console.print(f"{verb} {len(doomed)} checkpoint(s){': ' + ', '.join(doomed) if doomed else ''}")


def worker() -> None:
    """Run the deployment's one worker: the update scheduler and the index publisher, following
    the database like the API servers do. A second worker on the same database is refused."""
    from kecl.worker import WorkerBusy, run_worker  # deferred: the worker loads the models

    settings = load_settings()
    ensure_home(settings)
    try:
        run_worker(settings, on_ready=lambda: console.print(f"worker running for {settings.home} (Ctrl-C stops)"))
    except WorkerBusy as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


def schedule() -> None:
    """Run the update scheduler daemon (interval or cron from settings, inbox watch); Ctrl-C stops
    it after any running cycle."""
    from kecl.home import (
        ensure_home,  # deferred: SQLAlchemy, Alembic and networkx load only for commands that open the store
    )
    from kecl.wiring import run_scheduler  # deferred: the scheduler's process loads the models

    settings = load_settings()
    ensure_home(settings)
    console.print(f"scheduler running for {settings.home} (Ctrl-C stops)")
    run_scheduler(settings)


def register(app: typer.Typer) -> None:
    """Add ``update``, ``worker``, ``models`` and ``schedule`` to the ``kecl`` app."""
    app.command()(update)
    app.command()(worker)
    app.command()(schedule)
    app.add_typer(models_app, name="models")
