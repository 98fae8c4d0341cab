"""``kecl runs list|show`` and ``kecl plot``: the history of update cycles, as tables, JSON or a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kecl.commands.common import console, existing_store, load_settings, print_json

runs_app = typer.Typer(help="Update cycles: their history, one cycle in detail.", no_args_is_help=True)

JSON = Annotated[bool, typer.Option("--json", help="print JSON (the HTTP API's shape) instead of a table")]


@runs_app.command("list")
def runs_list(
    limit: Annotated[int, typer.Option(min=1, help="at most this many")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="skip this many (newest first)")] = 0,
    as_json: JSON = False,
) -> None:
    """Update cycles, newest first: trigger, status, decision, duration (JSON: as `GET /v1/runs`)."""
    store = existing_store(load_settings())
    runs = store.runs(limit=limit, offset=offset)
    if as_json:
        print_json({"total": store.count_runs(), "limit": limit, "offset": offset, "runs": runs})
        return
    table = Table(title=f"update cycles ({store.count_runs()} in all)")
    for col in ("id", "trigger", "status", "decision", "started", "seconds", "candidate"):
        table.add_column(col)
    for r in runs:
        table.add_row(
            str(r["id"]),
            r["trigger"],
            r["status"],
            r["decision"] or "-",
            (r["started_at"] or "")[:19],
            f"{sum(r['timings'].values()):.0f}" if r["timings"] else "-",
            r["checkpoint_version"] or "-",
        )
    console.print(table)


@runs_app.command("show")
def runs_show(run_id: Annotated[int, typer.Argument(help="the run's id")], as_json: JSON = False) -> None:
    """One update cycle: stage timings, counts, the decision and its reasons (JSON: as `GET /v1/runs/{id}`)."""
    run = existing_store(load_settings()).get_run(run_id)
    if run is None:
        console.print(f"[red]no update run {run_id}[/red] (see `kecl runs list`)")
        raise typer.Exit(1)
    if as_json:
        print_json(run)
        return
    console.print(
        f"[bold]run {run['id']}[/bold] ({run['trigger']}): {run['status']}, decision {run['decision'] or '-'}"
    )
    console.print(f"started {run['started_at']}, finished {run['finished_at'] or '-'}")
    _print_mapping("stage seconds", run["timings"])
    _print_mapping("counts", run["counts"])
    for reason in run["reasons"]:
        console.print(f"  • {reason}")
    if run["error"]:
        console.print(f"[red]{run['error']}[/red]")


def _print_mapping(title: str, values: dict[str, Any]) -> None:
    if not values:
        return
    table = Table(title=title)
    table.add_column("name")
    table.add_column("value", justify="right")
    for k, v in values.items():
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    console.print(table)


def plot(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="PNG to write (default: <home>/runs/history.png)")
    ] = None,
) -> None:
    """Plot metrics over update cycles and the checkpoint lineage to a PNG."""
    from kecl.plots import plot_history  # deferred: matplotlib

    settings = load_settings()
    store = existing_store(settings)
    path = out or settings.runs_dir / "history.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"wrote {plot_history(store.runs(limit=10_000), store.checkpoints(), path)}")


def register(app: typer.Typer) -> None:
    """Add ``runs`` and ``plot`` to the ``kecl`` app."""
    app.add_typer(runs_app, name="runs")
    app.command()(plot)
