"""Query throughput with entity-level answers on and off, side by side in one run.

An in-process :class:`kecl.services.Kecl` over the demo's base slice (store, index, default
model; the weights do not change the cost, so the base model serves when no checkpoint is
given) answers the same cloze queries (the base facts' templates, subject filled in, object
masked) in batches, closed-book and augmented (``concat``, 4 passages), once with
``answers.entities`` off (today's per-token answers) and once on (candidates from the graph,
scored with one [MASK] per word-piece). Medians over repetitions, and the ratio on/off.

    .venv/bin/python -m benchmarks.bench_entities
    .venv/bin/python -m benchmarks.bench_entities --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def measure(kecl: Any, texts: list[str], mode: str, batch: int, reps: int) -> dict[str, Any]:
    """Queries per second over ``texts`` in batches of ``batch``, entity answers off and on in
    alternation (the host is shared: alternating spreads its load over both alike); medians,
    every repetition, and the slowdown (off ÷ on)."""
    from kecl.pipeline import QueryOptions

    opts = QueryOptions(mode=mode, k_passages=4)  # type: ignore[arg-type]
    rates: dict[str, list[float]] = {"tokens_only": [], "entities": []}
    for on in (False, True):  # warm-up outside the measurement
        kecl.settings.answers.entities = on
        kecl.answer(texts[:batch], opts)
    for _ in range(reps):
        for name, on in (("tokens_only", False), ("entities", True)):
            kecl.settings.answers.entities = on
            t0 = time.perf_counter()
            for start in range(0, len(texts), batch):
                kecl.answer(texts[start : start + batch], opts)
            rates[name].append(len(texts) / (time.perf_counter() - t0))
    out: dict[str, Any] = {
        name: {"qps_median": round(statistics.median(r), 2), "qps": [round(x, 2) for x in r]}
        for name, r in rates.items()
    }
    out["slowdown"] = round(out["tokens_only"]["qps_median"] / out["entities"]["qps_median"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--checkpoint", type=Path, help="a checkpoint folder to serve (default: the base model)")
    ap.add_argument("--quick", action="store_true", help="16 queries, 2 repetitions")
    ap.add_argument("--out", default="bench-out/entities.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.queries, args.reps = 16, 2

    from encoder import set_active
    from kecl.demo import DEMO_DATA
    from kecl.services import Kecl
    from kecl.settings import Settings
    from knowledge import read_paths

    home = Path(tempfile.mkdtemp(prefix="kecl-bench-entities-"))
    try:
        settings = Settings(home=home)
        if args.checkpoint is not None:
            settings.checkpoints_dir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(args.checkpoint, settings.checkpoints_dir / args.checkpoint.name)
            set_active(settings.checkpoints_dir, args.checkpoint.name)
        kecl = Kecl(settings)
        kecl.ingest_batch(read_paths([DEMO_DATA / "base"]))
        facts = [f for f in kecl.store.facts(limit=None) if f.template]
        texts = [f.template.replace("[X]", f.subject).replace("[Y]", "[MASK]") for f in facts][: args.queries]
        results: dict[str, Any] = {"queries": len(texts), "batch": args.batch, "reps": args.reps}
        for mode in ("closed-book", "concat"):
            row = measure(kecl, texts, mode, args.batch, args.reps)
            results[mode] = row
            print(mode, json.dumps(row))
        kecl.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
