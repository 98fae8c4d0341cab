"""Run every benchmark (``make bench``); ``--quick`` runs each in its small configuration.

    .venv/bin/python -m benchmarks.run_all [--quick] [--only ingest graph ...] [--lama PATH]

Results go to ``bench-out/<topic>.json``; BENCHMARKS.md records the numbers and commands.
Benchmarks that need the LAMA data read it from ``--lama`` (default: the ``KECL_LAMA`` environment
variable) and are skipped without it: the data set is not part of the repository.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
import traceback
from pathlib import Path

# (topic, module, needs LAMA data)
BENCHMARKS = [
    ("ingest", "benchmarks.bench_ingest", False),
    ("graph", "benchmarks.bench_graph", False),
    ("index", "benchmarks.bench_index", False),
    ("trainer", "benchmarks.bench_trainer", False),
    ("fillmask", "benchmarks.bench_fillmask", False),
    ("query", "benchmarks.bench_query", False),
    ("embedder", "benchmarks.bench_embedder", False),
    ("middleware", "benchmarks.bench_middleware", False),
    ("gc", "benchmarks.bench_gc", False),
    ("cli", "benchmarks.bench_cli", False),
    ("hybrid", "benchmarks.bench_hybrid", True),
    ("lama", "benchmarks.bench_lama", True),
    ("continual", "benchmarks.bench_continual", True),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", help="topics to run")
    ap.add_argument("--lama", default=os.environ.get("KECL_LAMA", ""), help="LAMA folder (default: $KECL_LAMA)")
    args = ap.parse_args(argv)
    failed = []
    for topic, module, needs_lama in BENCHMARKS:
        if args.only and topic not in args.only:
            continue
        if needs_lama and not (args.lama and Path(args.lama).is_dir()):
            print(f"== {topic}: skipped (no LAMA data: give --lama PATH or set KECL_LAMA)")
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            print(f"== {topic}: not available ({exc})")
            continue
        argv_b = (["--quick"] if args.quick else []) + (["--lama", args.lama] if needs_lama else [])
        print(f"== {topic}: python -m {module} {' '.join(argv_b)}", flush=True)
        t0 = time.perf_counter()
        try:
            mod.main(argv_b)
        except Exception:  # noqa: BLE001 - report and go on with the others
            traceback.print_exc()
            failed.append(topic)
        print(f"== {topic}: {time.perf_counter() - t0:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
