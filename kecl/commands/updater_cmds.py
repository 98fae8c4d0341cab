"""``kecl update``, ``kecl models …`` and ``kecl schedule``: the continual-update loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kecl.commands.common import console, load_settings
from kecl.home import ensure_home, open_store

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


@models_app.command("list")
def models_list() -> None:
    """Checkpoints with status (active / candidate / rejected / retired), parent and metrics."""
    from encoder import list_checkpoints  # deferred: torch, for reading manifests only

    settings = load_settings()
    rows = {c["version"]: c for c in open_store(settings).checkpoints()}
    table = Table(title=f"checkpoints in {settings.checkpoints_dir}")
    for col in ("version", "status", "parent", "created", "metrics"):
        table.add_column(col)
    for m in list_checkpoints(settings.checkpoints_dir):
        v = m["version"]
        # SQL alone says which is active; a folder without a row is a save no promotion followed.
        status = rows[v]["status"] if v in rows else "unrecorded"
        metrics = ", ".join(f"{k}={v:.3g}" for k, v in (m.get("metrics") or {}).items() if isinstance(v, (int, float)))
        table.add_row(v, status, m.get("parent") or "-", m.get("created", ""), metrics[:80])
    console.print(table)


@models_app.command("activate")
def models_activate(version: Annotated[str, typer.Argument(help="checkpoint version, e.g. v0002")]) -> None:
    """Make VERSION the active model (manual rollback or roll-forward)."""
    from encoder import CheckpointError  # deferred: torch
    from kecl.wiring import promote_checkpoint  # deferred: torch

    settings = load_settings()
    store = open_store(settings)
    try:
        promote_checkpoint(settings, store, version)
    except (CheckpointError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        store.close()
    console.print(
        f"active model is now {version}; running servers and the worker load it within "
        "processes.snapshot_poll_seconds plus its loading time"
    )


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
