"""CLI start-up: a fresh `kecl` process per call, as a script runs it.

Measures, over one home (a small corpus, the default embedder), the wall time of:
``kecl inspect stats`` (SQL only), ``kecl search`` answered in its own process (the baseline: it
loads torch, sentence-transformers and the index) and ``kecl search`` with ``api.server_url``
pointing at a running ``kecl serve`` (the process only sends HTTP). Medians of N calls each, and
the ratio baseline ÷ server. Targets: ≤ 2 s for stats and for search against a server.
With ``--baseline SRC`` (another checkout, e.g. the main branch), ``inspect stats`` and
``search`` are also timed with that checkout's code, alternating with these, in the same run.

    .venv/bin/python -m benchmarks.bench_cli                          # 7 calls each
    .venv/bin/python -m benchmarks.bench_cli --quick                  # 3
    .venv/bin/python -m benchmarks.bench_cli --baseline ../kecl-main  # and the same commands there
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
KECL = [sys.executable, "-m", "kecl.cli"]
TOPICS = ["river", "bridge", "festival", "museum", "harbour", "railway", "library", "stadium"]


def corpus(path: Path, n: int = 200) -> Path:
    rows = [
        {"text": f"The {TOPICS[i % len(TOPICS)]} of town {i} was built in {1800 + i} by guild {i % 17}."}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def timed(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    # from a neutral folder, so PYTHONPATH alone decides which checkout's code runs
    subprocess.run(KECL + args, env=env, check=True, capture_output=True, cwd=env["KECL_HOME"])
    return time.perf_counter() - t0


def prepare(env: dict[str, str], corpus_file: Path, query: list[str]) -> None:
    """A home with the corpus ingested and its index built (one search), outside any measurement."""
    home = Path(env["KECL_HOME"])
    home.mkdir(parents=True)
    # run from the home: `python -m` puts the working folder first on sys.path, before PYTHONPATH
    subprocess.run(KECL + ["init", "--no-adapt"], env=env, check=True, capture_output=True, cwd=home)
    subprocess.run(KECL + ["ingest", str(corpus_file)], env=env, check=True, capture_output=True, cwd=home)
    timed(query, env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--calls", type=int, default=None)
    ap.add_argument("--port", type=int, default=0, help="port for kecl serve (default: a free one)")
    ap.add_argument("--baseline", type=Path, default=None, help="a checkout whose code is timed side by side")
    args = ap.parse_args(argv)
    calls = args.calls or (3 if args.quick else 7)
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "KECL_HOME": str(Path(tmp) / "home"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": str(ROOT),
        }
        query = ["search", "which bridge was built by guild 3?", "-k", "3", "--json"]
        prepare(env, corpus(Path(tmp) / "c.jsonl"), query)
        baseline = None
        if args.baseline:  # its own home: its schema may be older than this checkout's migrations
            baseline = {**env, "PYTHONPATH": str(args.baseline.resolve()), "KECL_HOME": str(Path(tmp) / "base")}
            prepare(baseline, Path(tmp) / "c.jsonl", query)
        results: dict[str, list[float]] = {"inspect stats": [], "search (own process)": [], "search (server)": []}
        for _ in range(calls):
            results["inspect stats"].append(timed(["inspect", "stats"], env))
            results["search (own process)"].append(timed(query, env))
            if baseline is not None:
                results.setdefault("baseline: inspect stats", []).append(timed(["inspect", "stats"], baseline))
                results.setdefault("baseline: search", []).append(timed(query, baseline))
        port = args.port or free_port()
        server = subprocess.Popen(
            KECL + ["serve", "--port", str(port)],
            env=env,
            cwd=env["KECL_HOME"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 600
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("kecl serve did not start")
                time.sleep(0.5)
            remote = {**env, "KECL_API__SERVER_URL": f"http://127.0.0.1:{port}"}
            for _ in range(calls):
                results["search (server)"].append(timed(query, remote))
        finally:
            server.terminate()
            server.wait(timeout=60)
    medians = {name: statistics.median(v) for name, v in results.items()}
    report = {
        "calls": calls,
        "median_s": {k: round(v, 3) for k, v in medians.items()},
        "all_s": {k: [round(x, 3) for x in v] for k, v in results.items()},
        "search_ratio_own_process_over_server": round(medians["search (own process)"] / medians["search (server)"], 2),
    }
    if args.baseline:
        report["ratio_baseline_over_this"] = {
            "inspect stats": round(medians["baseline: inspect stats"] / medians["inspect stats"], 2),
            "search (server)": round(medians["baseline: search"] / medians["search (server)"], 2),
        }
    out = ROOT / "bench-out" / "cli.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
