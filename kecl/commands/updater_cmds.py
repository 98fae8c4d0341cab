"""``kecl update``, ``kecl models …`` and ``kecl schedule``: the continual-update loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kecl.commands.common import console, load_settings

models_app = typer.Typer(help="Encoder checkpoints: list them, roll back or forward.", no_args_is_help=True)


def update(
    paths: Annotated[list[Path] | None, typer.Argument(help="files to ingest (default: the inbox)")] = None,
    steps: Annotated[int | None, typer.Option(help="training steps (default: train.steps)")] = None,
) -> None:
    """Run one update cycle now: ingest → link → index → train → evaluate → promote or reject."""
    from kecl.services import Kecl

    settings = load_settings()
    if steps is not None:
        settings.train.steps = steps
    kecl = Kecl(settings)
    report = kecl.run_update(paths=paths, trigger="cli")
    print_report(report)
    kecl.close()
    if report.status == "failed":
        raise typer.Exit(1)


def print_report(report: Any) -> None:
    """A run's outcome, stage timings and metrics as tables."""
    colour = {"succeeded": "green", "failed": "red", "skipped": "yellow"}.get(report.status, "white")
    console.print(
        f"run {report.run_id}: [{colour}]{report.status}[/{colour}]  decision: {report.decision or '-'}"
        f"  candidate: {report.candidate or '-'}"
    )
    for reason in report.reasons:
        console.print(f"  • {reason}")
    if report.error:
        console.print(f"[red]{report.error}[/red]")
    if report.timings:
        console.print("stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in report.timings.items()))
    for name in ("active", "candidate"):
        m = report.metrics.get(name)
        if not m:
            continue
        table = Table(title=f"{name} model")
        table.add_column("group")
        modes = list(m["modes"])
        for mode in modes:
            table.add_column(f"{mode} P@1", justify="right")
        groups = sorted({g for per in m["modes"].values() for g in per})
        for g in groups:
            table.add_row(
                g,
                *[
                    f"{m['modes'][mode][g]['p_at_1']:.3f} (n={m['modes'][mode][g]['n']})"
                    if g in m["modes"][mode]
                    else "-"
                    for mode in modes
                ],
            )
        console.print(table)
        if m.get("heldout_loss") is not None:
            console.print(f"  held-out MLM loss {m['heldout_loss']:.3f}")


@models_app.command("list")
def models_list() -> None:
    """Checkpoints with status (active / candidate / rejected / retired), parent and metrics."""
    from encoder.checkpoints import active_version, list_checkpoints
    from kecl.wiring import open_store

    settings = load_settings()
    rows = {c["version"]: c for c in open_store(settings).checkpoints()}
    active = active_version(settings.checkpoints_dir)
    table = Table(title=f"checkpoints in {settings.checkpoints_dir}")
    for col in ("version", "status", "parent", "created", "metrics"):
        table.add_column(col)
    for m in list_checkpoints(settings.checkpoints_dir):
        v = m["version"]
        status = "active" if v == active else rows.get(v, {}).get("status", "-")
        metrics = ", ".join(f"{k}={v:.3g}" for k, v in (m.get("metrics") or {}).items() if isinstance(v, (int, float)))
        table.add_row(v, status, m.get("parent") or "-", m.get("created", ""), metrics[:80])
    console.print(table)


@models_app.command("activate")
def models_activate(version: Annotated[str, typer.Argument(help="checkpoint version, e.g. v0002")]) -> None:
    """Make VERSION the active model (manual rollback or roll-forward)."""
    from encoder.checkpoints import CheckpointError, set_active, verify_checkpoint
    from kecl.wiring import open_store

    settings = load_settings()
    try:
        verify_checkpoint(settings.checkpoints_dir / version)
        set_active(settings.checkpoints_dir, version)
    except (CheckpointError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    open_store(settings).set_checkpoint_status(version, "active")
    console.print(f"active model is now {version} (a running server picks it up at its next reload or promotion)")


def schedule() -> None:
    """Run the update scheduler daemon (interval or cron from settings, inbox watch); Ctrl-C stops
    it after any running cycle."""
    from kecl.wiring import ensure_home, open_store
    from updater.scheduler import run_daemon

    settings = load_settings()
    ensure_home(settings)
    open_store(settings).close()  # migrate before the job store touches the database
    console.print(f"scheduler running for {settings.home} (Ctrl-C stops)")
    run_daemon(settings.db_url, **scheduler_kwargs(settings))


def scheduler_kwargs(settings: Any) -> dict[str, Any]:
    s = settings.scheduler
    return dict(
        job_ref="kecl.jobs:run_scheduled_cycle",
        job_kwargs={"home": str(settings.home.resolve())},
        interval_minutes=s.interval_minutes,
        cron=s.cron,
        inbox_dir=settings.inbox_dir,
        inbox_quiet_seconds=s.inbox_quiet_seconds,
        misfire_grace_seconds=s.misfire_grace_seconds,
    )


def attach_scheduler(app: Any, settings: Any) -> None:
    """Run the scheduler inside the API process (one scheduler per process, never per worker)."""
    from updater.scheduler import build_scheduler

    app.state.kecl.register_active()  # scheduled cycles update this process's serving model
    app.state.scheduler = build_scheduler(settings.db_url, **scheduler_kwargs(settings), blocking=False)


def register(app: typer.Typer) -> None:
    """Add ``update``, ``models`` and ``schedule`` to the ``kecl`` app."""
    app.command()(update)
    app.command()(schedule)
    app.add_typer(models_app, name="models")
