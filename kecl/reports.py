"""Cycle reports for people: a run's outcome, stage timings and metrics as Rich tables (the CLI and
the demo print the same thing)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from updater import CycleReport


def print_report(report: CycleReport, console: Console) -> None:
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
