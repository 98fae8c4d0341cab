"""Several processes on one knowledge state: query latency under writes, cross-process freshness,
promotion pickup.

A deployment of real processes on one home: ``kecl worker`` (the index publisher) and two
``kecl serve`` replicas A and B, the packaged MiniLM as embedder, ``--passages`` synthetic
passages. Measured over real HTTP:

- search p50/p99 on A with 8 client threads, while a writer POSTs documents to A at 0, 1 and 10
  per second (the 0 row is the baseline the others are divided by, in the same run; with
  ``--rounds N`` the rates take turns N times, so that a shared host's drift over minutes moves
  every rate alike, and each rate's searches are pooled over its rounds);
- freshness: POST on A → the passage is the dense channel's first hit on B (p50/p95);
- promotion pickup: ``kecl models activate`` → both replicas' ``/readyz`` name the new checkpoint.

    .venv/bin/python -m benchmarks.bench_processes                    # 5k passages, 15 s per rate
    .venv/bin/python -m benchmarks.bench_processes --passages 200000  # the large setting
    .venv/bin/python -m benchmarks.bench_processes --seconds 60 --rounds 6  # rates alternated, 10 s turns
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.deployment import API_KEY, Deployment, dense_rank, deployment_env, post_document, wait_until  # noqa: E402

WORDS = (
    "river castle born paris music physics football novel war city mountain painter senate harbour "
    "railway orchestra glacier treaty cathedral island"
).split()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


def prepare_home(home: Path, db_url: str, passages: int, seed: int) -> None:
    """A store with ``passages`` one-passage documents and a tiny active checkpoint."""
    from encoder import save_checkpoint
    from kecl.home import open_store
    from kecl.settings import Settings
    from kecl.wiring import promote_checkpoint
    from knowledge import DocumentRecord
    from tests.factories import tiny_bundle

    rng = random.Random(seed)
    settings = Settings(home=home, database_url=db_url)
    store = open_store(settings)
    batch = []
    for i in range(passages):
        batch.append(DocumentRecord(text=" ".join(rng.choice(WORDS) for _ in range(12)) + f" record {i}."))
        if len(batch) == 5000:
            store.add_documents(batch)
            batch = []
    if batch:
        store.add_documents(batch)
    version = save_checkpoint(tiny_bundle(max_positions=256, seed=1), settings.checkpoints_dir)
    promote_checkpoint(settings, store, version)
    store.close()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a ``kecl serve --workers N`` is a parent and N server processes)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            pass
    return found


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds each process (with its child processes) has used so far (Linux ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in pids.items():
        total = 0.0
        # the benchmark's own children are the servers, counted under their names
        for p in process_tree(pid) if name != "bench (clients)" else [pid]:
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                total = float("nan")
        out[name] = total
    return out


@dataclass
class Phase:
    """What one stretch of search load (at one POST rate) measured: each search's latency (ms) and
    span, each POST's latency and span, and the CPU seconds each process used in it."""

    latencies: list[float] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)  # each search's (start, end)
    posted: list[float] = field(default_factory=list)
    post_spans: list[tuple[float, float]] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def merge(self, other: Phase) -> None:
        self.latencies += other.latencies
        self.spans += other.spans
        self.posted += other.posted
        self.post_spans += other.post_spans
        for name, used in other.cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + used
        self.seconds += other.seconds

    def summary(self) -> dict[str, Any]:
        """p50/p99 over all searches; the p99 of the searches that overlapped a POST on the same
        replica and of those that did not (a write that blocked reads shows as a gap between the
        two); and the cores each process used (writes that only share the cores show there)."""
        overlapped: list[float] = []
        alone: list[float] = []
        for (start, end), ms in zip(self.spans, self.latencies, strict=True):
            hit = any(ps < end and pe > start for ps, pe in self.post_spans)
            (overlapped if hit else alone).append(ms)
        posted = self.posted
        return {
            "queries": len(self.latencies),
            "p50_ms": round(statistics.median(self.latencies), 1),
            "p99_ms": round(percentile(self.latencies, 0.99), 1),
            "p99_overlapping_a_post_ms": round(percentile(overlapped, 0.99), 1) if overlapped else None,
            "p99_not_overlapping_ms": round(percentile(alone, 0.99), 1) if alone else None,
            "overlapping": len(overlapped),
            "posts": len(posted),
            "post_p50_ms": round(statistics.median(posted), 1) if posted else float("nan"),
            "post_max_ms": round(max(posted), 1) if posted else float("nan"),
            "cpu_cores": {name: round(used / self.seconds, 2) for name, used in self.cpu.items()},
        }


def query_load(
    url: str, clients: int, seconds: float, posts_per_second: float, seed: int, pids: dict[str, int] | None = None
) -> Phase:
    """``clients`` threads searching for ``seconds`` while POSTs arrive at a rate; what it measured."""
    phase = Phase()
    stop = threading.Event()
    lock = threading.Lock()

    def client(i: int) -> None:
        rng = random.Random(seed * 100 + i)
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                text = " ".join(rng.choice(WORDS) for _ in range(5))
                start = time.perf_counter()
                http.post("/v1/search", json={"text": text, "k": 4}).raise_for_status()
                end = time.perf_counter()
                with lock:
                    phase.latencies.append((end - start) * 1000)
                    phase.spans.append((start, end))

    # One client for every POST, as for the searches: a new client per request builds a TLS
    # context and a connection each time (~15 ms of CPU), load-generator work on the cores the
    # servers share, counted as the writes' cost when it is not.
    poster = httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=60)

    def post(text: str) -> None:
        start = time.perf_counter()
        poster.post("/v1/documents", json={"documents": [{"text": text}]}).raise_for_status()
        end = time.perf_counter()
        with lock:
            phase.posted.append((end - start) * 1000)
            phase.post_spans.append((start, end))

    def writer() -> None:
        # POSTs start on schedule whether or not earlier ones have returned (an open-loop load).
        rng = random.Random(seed)
        next_at = time.monotonic()
        with ThreadPoolExecutor(max_workers=32) as pool:
            while not stop.is_set():
                pool.submit(post, " ".join(rng.choice(WORDS) for _ in range(12)) + f" new {rng.random()}.")
                next_at += 1.0 / posts_per_second
                time.sleep(max(0.0, next_at - time.monotonic()))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    if posts_per_second > 0:
        threads.append(threading.Thread(target=writer, daemon=True))
    cpu_before, t0 = cpu_seconds(pids or {}), time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    poster.close()
    cpu_after, phase.seconds = cpu_seconds(pids or {}), time.perf_counter() - t0
    phase.cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
    return phase


def freshness(d: Deployment, samples: int) -> dict[str, float]:
    """Seconds from a POST acknowledged by A to the passage being B's first dense hit."""
    times = []
    for i in range(samples):
        text = f"The {i}th vorlant{random.randrange(10**9)} expedition charted the quennish delta."
        (pid,) = post_document(d.url("A"), text)
        start = time.monotonic()
        took = wait_until(lambda t=text, p=pid: dense_rank(d.url("B"), t, p) == 1, timeout=30, step=0.01)
        times.append(took if took is not None else float("inf"))
        del start
    return {"samples": samples, "p50_s": round(statistics.median(times), 3), "p95_s": round(percentile(times, 0.95), 3)}


def promotion_pickup(d: Deployment, home: Path) -> float:
    """Seconds from ``kecl models activate`` returning to both replicas serving the version."""
    from encoder import save_checkpoint
    from tests.factories import tiny_bundle

    version = save_checkpoint(tiny_bundle(max_positions=256, seed=2), home / "checkpoints")
    result = d.run_cli("models", "activate", version)
    assert result.returncode == 0, result.stdout + result.stderr
    start = time.monotonic()
    for name in ("A", "B"):
        wait_until(
            lambda n=name: httpx.get(d.url(n) + "/readyz", timeout=10).json()["serving_checkpoint"] == version,
            timeout=60,
            step=0.05,
        )
    return round(time.monotonic() - start, 3)


def wait_for_generation(home: Path, db_url: str, timeout: float) -> None:
    """Wait until some process has published an index generation."""
    from kecl.home import open_store
    from kecl.settings import Settings

    store = open_store(Settings(home=home, database_url=db_url))
    try:
        if wait_until(lambda: store.latest_generation() is not None, timeout=timeout, step=0.5) is None:
            raise TimeoutError("no index generation was published")
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=15.0, help="per POST rate, over all rounds")
    parser.add_argument(
        "--rounds", type=int, default=1, help="the rates take turns this many times, each for seconds / rounds"
    )
    parser.add_argument("--settle-seconds", type=float, default=1.0, help="pause after each phase, not measured")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rates", default="0,1,10", help="POSTs per second, comma-separated")
    parser.add_argument("--freshness-samples", type=int, default=20)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary home")
    parser.add_argument("--embedder", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--replica-workers", type=int, default=1, help="server processes per replica (`kecl serve --workers`)"
    )
    parser.add_argument(
        "--warmup-seconds", type=float, default=5.0, help="search load before the first measured row, not measured"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kecl-bench-processes-") as tmp:
        home = Path(tmp) / "home"
        db_url = args.database_url or f"sqlite:///{home / 'kecl.db'}"
        start = time.perf_counter()
        prepare_home(home, db_url, args.passages, args.seed)
        print(f"prepared {args.passages} passages in {time.perf_counter() - start:.0f} s", flush=True)
        env = deployment_env(
            home,
            db_url,
            Path(args.embedder),
            KECL_INDEX__EMBEDDER=args.embedder,
            KECL_PROCESSES__PUBLISH_INTERVAL_SECONDS="10",
            KECL_PROCESSES__PUBLISHER_LEASE_SECONDS="30",
            KECL_PROCESSES__WORKER_LEASE_SECONDS="30",
            KECL_PROCESSES__READY_MAX_LAG_PASSAGES="1000000",
        )
        env.pop("OMP_NUM_THREADS")
        d = Deployment(env, Path(tmp) / "logs")
        try:
            d.start_worker()  # builds and publishes the index first: the replicas then load it
            wait_for_generation(home, db_url, timeout=3600)
            serve_args = ("--workers", str(args.replica_workers)) if args.replica_workers > 1 else ()
            d.start_replica("A", None, *serve_args)
            d.wait_ready("A", timeout=3600)
            d.start_replica("B", None, *serve_args)
            d.wait_ready("B", timeout=3600)
            print(f"deployment ready after {time.perf_counter() - start:.0f} s", flush=True)
            # The first seconds of load are slower (first requests, pools, allocator): without a
            # warm-up they land in the 0-POST baseline and flatter every ratio to it.
            query_load(d.url("A"), args.clients, args.warmup_seconds, 0.0, args.seed + 1)
            rates = [float(r) for r in args.rates.split(",")]
            phases = {rate: Phase() for rate in rates}
            per_round: dict[float, list[float]] = {rate: [] for rate in rates}
            pids = {name: proc.pid for name, proc in d.procs.items()} | {"bench (clients)": os.getpid()}
            for round_ in range(args.rounds):
                # The rates take turns within every round, so a host that speeds up or slows
                # down over minutes moves every rate alike instead of the one measured then.
                for rate in rates:
                    phase = query_load(
                        d.url("A"), args.clients, args.seconds / args.rounds, rate, args.seed + round_, pids
                    )
                    phases[rate].merge(phase)
                    per_round[rate].append(percentile(phase.latencies, 0.99))
                    time.sleep(args.settle_seconds)  # writes still queued finish outside the next phase
                print(
                    f"round {round_ + 1}/{args.rounds}: "
                    + ", ".join(f"{rate:g} POST/s p99 {per_round[rate][-1]:.0f} ms" for rate in rates),
                    flush=True,
                )
            rows = {rate: phases[rate].summary() for rate in rates}
            for rate in rates:
                print(f"{rate:g} POST/s: {rows[rate]}", flush=True)
            base = rows.get(0.0)
            if base:
                # What one search and one POST cost replica A in CPU (the POST's share: A's CPU
                # beyond what its searches took at the 0-row's cost each). On cores the clients
                # keep busy, a write load taking a fraction f of A's CPU slows every search by
                # 1 / (1 - f) at the least, so 1.2x needs f <= 1/6.
                per_search = phases[0.0].cpu["A"] * 1000 / base["queries"]
                base["a_cpu_ms_per_search"] = round(per_search, 1)
                for rate, row in rows.items():
                    row["p99_ratio"] = round(row["p99_ms"] / base["p99_ms"], 2)
                    # each round's p99 over the same round's 0-POST p99: how far rounds agree
                    row["p99_ratio_by_round"] = [round(a / b, 2) for a, b in zip(per_round[rate], per_round[0.0])]
                    if rate > 0:
                        spare = phases[rate].cpu["A"] * 1000 - row["queries"] * per_search
                        row["a_cpu_ms_per_post"] = round(spare / max(row["posts"], 1), 1)
            fresh = freshness(d, args.freshness_samples)
            pickup = promotion_pickup(d, home)
        finally:
            d.close()
    print(
        json.dumps(
            {
                "passages": args.passages,
                "clients": args.clients,
                "replica_workers": args.replica_workers,
                "seconds": args.seconds,
                "query": {f"{k:g}": v for k, v in rows.items()},
                "freshness": fresh,
                "promotion_pickup_s": pickup,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
