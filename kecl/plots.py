"""Plots of the update history: metrics over cycles and the model lineage (matplotlib, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

SERIES = [
    ("closed-book", "new", "closed-book P@1, new facts"),
    ("closed-book", "changed", "closed-book P@1, changed facts"),
    ("closed-book", "unchanged", "closed-book P@1, unchanged facts (retention)"),
    ("concat", "new", "augmented P@1, new facts"),
    ("concat", "changed", "augmented P@1, changed facts"),
]


def plot_history(runs: list[dict[str, Any]], checkpoints: list[dict[str, Any]], path: Path) -> Path:
    """Write a two-panel PNG: candidate metrics per cycle, and the checkpoint lineage."""
    runs = sorted((r for r in runs if r.get("metrics", {}).get("candidate")), key=lambda r: r["id"])
    fig, (ax, lin) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    xs = [f"run {r['id']}\n{r.get('trigger', '')}" for r in runs]
    for mode, group, label in SERIES:
        ys = []
        for r in runs:
            m = r["metrics"]["candidate"]["modes"].get(mode, {}).get(group)
            ys.append(m["p_at_1"] if m and m["n"] else None)
        if any(y is not None for y in ys):
            ax.plot(xs, [y if y is not None else float("nan") for y in ys], marker="o", label=label)
    losses = [r["metrics"]["candidate"].get("heldout_loss") for r in runs]
    if any(v is not None for v in losses):
        ax2 = ax.twinx()
        ax2.plot(
            xs, [v if v is not None else float("nan") for v in losses], "k--", marker="x", label="held-out MLM loss"
        )
        ax2.set_ylabel("held-out MLM loss")
        ax2.legend(loc="lower right", fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    # entity level over every probe (one-token objects only when entity answers are off)
    ax.set_ylabel("P@1")
    ax.set_title("candidate model after each update cycle")
    if ax.get_legend_handles_labels()[0]:  # no cycle measured yet: nothing to name
        ax.legend(loc="upper left", fontsize=8)

    colours = {"active": "tab:green", "retired": "tab:blue", "rejected": "tab:red", "candidate": "tab:orange"}
    order = {c["version"]: i for i, c in enumerate(checkpoints)}
    for c in checkpoints:
        y = order[c["version"]]
        lin.scatter([0], [y], s=200, color=colours.get(c["status"], "grey"), zorder=3)
        lin.annotate(f"{c['version']} ({c['status']})", (0.05, y), va="center")
        if c.get("parent") in order:
            lin.annotate(
                "",
                xy=(0, y),
                xytext=(0, order[c["parent"]]),
                arrowprops={"arrowstyle": "->", "connectionstyle": "arc3,rad=-0.4"},
            )
    lin.set_xlim(-0.3, 1.2)
    lin.set_ylim(-0.8, max(len(checkpoints) - 0.2, 1))
    lin.invert_yaxis()
    lin.axis("off")
    lin.set_title("model lineage (arrows: parent → child)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
