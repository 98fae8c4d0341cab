"""Wall time of one default update cycle on the demo's later slice (~100 fresh facts).

A fresh home holds the demo's base slice, and its active checkpoint counts as trained through it
(the store watermark recorded with it); the cycle then takes the later slice (new and changed
facts, news items) with kecl's default settings (``kecl.wiring.cycle_config``): 640 steps at lr
5e-4 on 8 × 64 blocks with replay and reading, evaluation at entity level of both models. The
weights do not change the cost, so the base model stands in when no adapted ``--checkpoint`` is
given. Prints the stage timings, what the cycle took, and the total.

    .venv/bin/python -m benchmarks.bench_cycle
    .venv/bin/python -m benchmarks.bench_cycle --checkpoint ~/.cache/kecl/<adapted checkpoint>
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="an adapted checkpoint folder (default: the base model)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the train.steps setting)")
    ap.add_argument("--out", default="bench-out/cycle.json")
    args = ap.parse_args(argv)

    from benchmarks.demo_home import demo_kecl
    from kecl.demo import DEMO_DATA
    from kecl.wiring import cycle_config

    with demo_kecl("kecl-bench-cycle-", ["base"], args.checkpoint) as kecl:
        config = cycle_config(kecl.settings, args.steps)
        t0 = time.perf_counter()
        report = kecl.run_update(paths=[DEMO_DATA / "later"], trigger="bench", config=config)
        total = time.perf_counter() - t0
        result: dict[str, Any] = {
            "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "steps": config.train.steps,
            "batch_size": config.train.batch_size,
            "max_length": config.train.max_length,
            "learning_rate": config.train.learning_rate,
            "status": report.status,
            "error": report.error,
            "wall_seconds": round(total, 1),
            "timings": report.timings,
            "taken": report.counts.get("taken"),
            "new_facts": report.counts.get("new_facts"),
            "changed_facts": report.counts.get("changed_facts"),
            "train": report.metrics.get("train"),
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
