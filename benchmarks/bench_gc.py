"""Pauses of the garbage collector in a loaded server process, with and without its heap frozen.

Builds what a ``kecl serve`` process holds once started (a store of ``--passages`` passages, the
passage index with the packaged MiniLM embedder, the encoder, the linker and the graph), then
times full collections (``gc.collect()``: what the collector runs, with the interpreter lock
held, whenever enough objects have survived since its last full pass), first as loaded, then
after :func:`kecl.heap.freeze_loaded`, as ``kecl serve`` does at start-up. Medians.

    .venv/bin/python -m benchmarks.bench_gc
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def full_collections_ms(reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        gc.collect()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000 passages, 3 repetitions")
    args = parser.parse_args()
    if args.quick:
        args.passages, args.reps = 1000, 3

    from benchmarks.bench_processes import prepare_home
    from kecl.heap import freeze_loaded
    from kecl.services import Kecl
    from kecl.settings import Settings

    with tempfile.TemporaryDirectory(prefix="kecl-bench-gc-") as tmp:
        home = Path(tmp) / "home"
        db_url = f"sqlite:///{home / 'kecl.db'}"
        prepare_home(home, db_url, args.passages, seed=0)
        settings = Settings(home=home, database_url=db_url)
        kecl = Kecl(settings)
        kecl.search("river castle", k=4)  # the index, its embedder and the full-text channel
        _ = kecl.encoder
        kecl.store.linker()
        kecl.store.graph()
        tracked = len(gc.get_objects())
        loaded = full_collections_ms(args.reps)
        frozen_count = freeze_loaded()
        frozen = full_collections_ms(args.reps)
        gc.unfreeze()
        kecl.close()
    print(
        json.dumps(
            {
                "passages": args.passages,
                "tracked_objects": tracked,
                "frozen_objects": frozen_count,
                "full_collection_ms": {
                    "as_loaded": round(statistics.median(loaded), 1),
                    "frozen": round(statistics.median(frozen), 2),
                },
                "runs_ms": {"as_loaded": [round(x, 1) for x in loaded], "frozen": [round(x, 2) for x in frozen]},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
