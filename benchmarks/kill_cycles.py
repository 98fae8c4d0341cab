"""Fault script: random ``kill -9`` / restart cycles of a multi-process deployment under a stream
of POSTs, counting lost vectors.

A worker and two replicas (A, B) on one home; a writer POSTs documents to the live replicas
without pause. Each cycle kills one process at random (A, B or the worker) at a random moment
and starts it again. At the end, every acknowledged document must be in SQL and be the dense
channel's first hit for its own text on both replicas, exactly one checkpoint must be active, and
every published index generation must load with its checksums. Prints the counts as JSON.
SIGUSR1 ends the cycling after the current cycle and goes on to the check (a long run can be cut
short when the machine is needed without losing the cycles done).

    .venv/bin/python -m benchmarks.kill_cycles --cycles 20
    .venv/bin/python -m benchmarks.kill_cycles --cycles 5 --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.deployment import Deployment, dense_rank, deployment_env, post_document, wait_until  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary home")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-clients", type=int, default=4, help="searches in flight while checking the replicas")
    args = parser.parse_args()

    from encoder import save_checkpoint
    from kecl.home import open_store
    from kecl.settings import Settings
    from kecl.wiring import promote_checkpoint
    from retrieval import IndexLoadError, load_index
    from tests.factories import save_tiny_sentence_encoder, tiny_bundle

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="kecl-kill-cycles-") as tmp:
        home = Path(tmp) / "home"
        db_url = args.database_url or f"sqlite:///{home / 'kecl.db'}"
        embedder = save_tiny_sentence_encoder(Path(tmp) / "embedder")
        settings = Settings(home=home, database_url=db_url, index={"embedder": str(embedder)})
        store = open_store(settings)
        promote_checkpoint(settings, store, save_checkpoint(tiny_bundle(max_positions=256), settings.checkpoints_dir))
        d = Deployment(deployment_env(home, db_url, embedder), Path(tmp) / "logs")
        acknowledged: dict[int, str] = {}
        failed_posts = 0
        stop = threading.Event()

        def writer() -> None:
            nonlocal failed_posts
            wrng = random.Random(args.seed + 1)
            while not stop.is_set():
                live = [n for n in ("A", "B") if n in d.procs]
                if not live:
                    time.sleep(0.05)
                    continue
                text = f"Record {uuid.uuid4().hex} of the {wrng.randrange(10**6)} survey."
                try:
                    (pid,) = post_document(d.url(wrng.choice(live)), text, timeout=10)
                except (httpx.HTTPError, ValueError, KeyError):
                    failed_posts += 1
                    continue
                acknowledged[pid] = text

        started = time.monotonic()
        kills: dict[str, int] = {"A": 0, "B": 0, "worker": 0}
        finishing = threading.Event()
        signal.signal(signal.SIGUSR1, lambda *_: finishing.set())
        done = 0
        try:
            d.start_worker()
            for name in ("A", "B"):
                d.start_replica(name)
            for name in ("A", "B"):
                d.wait_ready(name)
            thread = threading.Thread(target=writer, daemon=True)
            thread.start()
            for cycle in range(args.cycles):
                if finishing.is_set():
                    break
                time.sleep(rng.uniform(0.2, 2.0))
                victim = rng.choice(["A", "B", "worker"])
                d.kill(victim)
                kills[victim] += 1
                time.sleep(rng.uniform(0.0, 0.5))
                if victim == "worker":
                    d.start_worker()
                else:
                    d.start_replica(victim)
                    d.wait_ready(victim)
                done = cycle + 1
                print(f"cycle {done}: killed {victim}; {len(acknowledged)} acknowledged", flush=True)
            time.sleep(1.0)
            stop.set()
            thread.join(timeout=30)
            for name in ("A", "B"):
                behind = lambda n=name: httpx.get(d.url(n) + "/readyz", timeout=10).json()["passages_behind"] == 0  # noqa: E731
                wait_until(behind, timeout=30, step=0.2)
            in_sql = store.passage_texts(sorted(acknowledged))
            lost_sql = sum(1 for pid, text in acknowledged.items() if in_sql.get(pid) != text)
            every = store.passage_texts(list(range(1, store.max_passage_id() + 1)))
            where = {text: pid for pid, text in every.items()}
            mismatches = [
                {"acknowledged_id": pid, "stored_under": where.get(text), "stored_text_at_id": in_sql.get(pid)}
                for pid, text in acknowledged.items()
                if in_sql.get(pid) != text
            ][:10]
            # One search per document and replica, several in flight: the replicas are separate
            # processes, and checked one at a time they left a core idle for most of the check.
            # A client per thread: a new one per search spent more CPU in the checker than the
            # replicas spent answering.
            checks = [(name, pid, text) for name in ("A", "B") for pid, text in acknowledged.items()]
            local = threading.local()

            def rank(check: tuple[str, int, str]) -> int | None:
                if not hasattr(local, "http"):
                    local.http = httpx.Client()
                return dense_rank(d.url(check[0]), check[2], check[1], http=local.http)

            with ThreadPoolExecutor(args.check_clients) as pool:
                ranks = list(pool.map(rank, checks))
            lost_vectors = {
                name: sum(1 for (n, _, _), rank in zip(checks, ranks) if n == name and rank != 1) for name in ("A", "B")
            }
        finally:
            stop.set()
            d.close()
        bad_generations = 0
        generations = store.generations()
        for g in generations:
            try:
                load_index(settings.index_dir / g.folder)
            except IndexLoadError:
                bad_generations += 1
        active = [c["version"] for c in store.checkpoints() if c["status"] == "active"]
        store.close()
    print(
        json.dumps(
            {
                "cycles": done,
                "cycles_asked": args.cycles,
                "kills": kills,
                "acknowledged": len(acknowledged),
                "failed_posts": failed_posts,
                "lost_in_sql": lost_sql,
                "mismatches": mismatches,
                "lost_vectors": lost_vectors,
                "generations_checked": len(generations),
                "generations_failing_checksum": bad_generations,
                "active_checkpoints": len(active),
                "seconds": round(time.monotonic() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
