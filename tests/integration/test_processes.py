"""One knowledge state, many processes — with real ones: two ``kecl serve`` replicas, one
``kecl worker`` and CLI commands on one home, on SQLite and on PostgreSQL.

A tiny random embedder and encoder keep start-up short: these tests check that what one process
commits reaches the others, not what the models know (an identical text embeds identically, so
a passage is the dense channel's first hit for its own text).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from encoder import save_checkpoint
from kecl import wiring
from kecl.home import open_store
from kecl.settings import Settings
from retrieval import load_index
from tests.deployment import Deployment, dense_rank, deployment_env, post_document, wait_until
from tests.factories import tiny_bundle


def unique_text() -> str:
    return f"The {uuid.uuid4().hex[:10]} glacier feeds the {uuid.uuid4().hex[:8]} lake near Varnholt."


@pytest.fixture()
def deployment(db_url: str, tmp_path: Path, tiny_embedder_dir: Path) -> Iterator[Deployment]:
    """A home with a tiny active checkpoint v0001, a worker and replicas A and B, all ready."""
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=db_url, index={"embedder": str(tiny_embedder_dir)})
    store = open_store(settings)
    version = save_checkpoint(tiny_bundle(max_positions=256, seed=1), settings.checkpoints_dir)
    wiring.promote_checkpoint(settings, store, version)
    store.close()
    d = Deployment(deployment_env(home, db_url, tiny_embedder_dir), tmp_path / "logs")
    try:
        d.start_worker()
        d.start_replica("A")
        d.start_replica("B")
        for name in ("A", "B"):
            d.wait_ready(name)
        yield d
    finally:
        d.close()


def vectors_added(url: str) -> dict[str, float]:
    """``kecl_index_vectors_added_total`` of one process, by how the vectors came."""
    found = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("kecl_index_vectors_added_total{"):
            found[line.split('how="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return found


def test_replicas_a_worker_and_the_cli_share_one_state(deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    a, b = d.url("A"), d.url("B")

    # POST on A: A finds it at once (read-your-writes), B by dense search within 2 s, with the
    # vector A stored in SQL (B embeds nothing).
    before = vectors_added(b)
    text = unique_text()
    (pid,) = post_document(a, text)
    assert dense_rank(a, text, pid) == 1
    took = wait_until(lambda: dense_rank(b, text, pid) == 1, timeout=2.0)
    assert took is not None, "a document POSTed to A was not found by dense search on B within 2 s"
    after = vectors_added(b)
    assert (after["read"] - before["read"], after["embedded"] - before["embedded"]) == (1, 0)

    # `kecl ingest` from the CLI: both replicas find its passages by dense search, no restart.
    corpus = tmp_path / "cli-corpus.txt"
    cli_text = unique_text()
    corpus.write_text(cli_text + "\n")
    result = d.run_cli("ingest", str(corpus))
    assert result.returncode == 0, result.stdout + result.stderr
    store = open_store(Settings(home=Path(d.env["KECL_HOME"]), database_url=d.env["KECL_DATABASE_URL"]))
    (cli_pid,) = [
        p for p, t in store.passage_texts(list(range(1, store.max_passage_id() + 1))).items() if t == cli_text
    ]
    for url in (a, b):
        assert wait_until(lambda u=url: dense_rank(u, cli_text, cli_pid) == 1, timeout=2.0) is not None
    cli = vectors_added(b)  # the CLI stored the passage's vector: B reads it, embeds nothing
    assert (cli["read"] - after["read"], cli["embedded"] - after["embedded"]) == (1, 0)

    # A promotion (by a CLI process here) is served by both replicas without a restart.
    home = Path(d.env["KECL_HOME"])
    v2 = save_checkpoint(tiny_bundle(max_positions=256, seed=2), home / "checkpoints")
    result = d.run_cli("models", "activate", v2)
    assert result.returncode == 0, result.stdout + result.stderr
    for url in (a, b):
        served = lambda u=url: httpx.get(u + "/readyz", timeout=10).json()["serving_checkpoint"] == v2  # noqa: E731
        assert wait_until(served, timeout=10.0, step=0.1) is not None, f"{url} still serves the old checkpoint"
        answer = httpx.post(url + "/v1/query", json={"text": "Paris is the capital of [MASK] ."}, timeout=60)
        assert answer.status_code == 200 and answer.json()["snapshot"]["checkpoint"] == v2

    # A second worker is refused with a clear message.
    second = d.run_cli("worker", timeout=120)
    assert second.returncode == 1
    assert "another kecl worker is running" in second.stdout + second.stderr
    assert_one_state(d, store)
    store.close()


def test_kill_9_of_replicas_and_the_worker_never_loses_an_acknowledged_document(deployment: Deployment) -> None:
    d = deployment
    acknowledged: dict[int, str] = {}
    stop = threading.Event()
    rng = random.Random(0)

    def post_stream() -> None:
        while not stop.is_set():
            name = rng.choice([n for n in ("A", "B") if n in d.procs] or ["A"])
            text = unique_text()
            try:
                (pid,) = post_document(d.url(name), text, timeout=10)
            except (httpx.HTTPError, ValueError):
                continue  # refused or cut by a kill: never acknowledged, so nothing is owed
            acknowledged[pid] = text

    writer = threading.Thread(target=post_stream, daemon=True)
    writer.start()
    try:
        for victim in ("B", "worker", "A"):
            time.sleep(rng.uniform(0.3, 1.5))
            d.kill(victim)
            time.sleep(rng.uniform(0.0, 0.5))
            if victim == "worker":
                d.start_worker()
            else:
                d.start_replica(victim)
                d.wait_ready(victim)
        time.sleep(1.0)
    finally:
        stop.set()
        writer.join(timeout=30)
    assert len(acknowledged) >= 5, "too few POSTs were acknowledged to test anything"

    store = open_store(Settings(home=Path(d.env["KECL_HOME"]), database_url=d.env["KECL_DATABASE_URL"]))
    stored = store.passage_texts(sorted(acknowledged))
    assert stored == acknowledged  # every acknowledged document is in SQL
    for name in ("A", "B"):  # ... and in every replica's index, within seconds of the last kill
        in_step = lambda n=name: httpx.get(d.url(n) + "/readyz", timeout=10).json()["passages_behind"] == 0  # noqa: E731
        assert wait_until(in_step, timeout=10.0, step=0.1) is not None
        sample = rng.sample(sorted(acknowledged), min(8, len(acknowledged)))
        for pid in sample:
            assert dense_rank(d.url(name), acknowledged[pid], pid) == 1
    assert_one_state(d, store)
    store.close()


def assert_one_state(d: Deployment, store) -> None:  # type: ignore[no-untyped-def]
    """Exactly one active checkpoint, and every published generation's files pass their checksum."""
    assert len([c for c in store.checkpoints() if c["status"] == "active"]) == 1
    index_dir = Path(d.env["KECL_HOME"]) / "index"
    generations = store.generations()
    assert generations, "no index generation was published"
    for g in generations:
        index = load_index(index_dir / g.folder)  # raises IndexLoadError on a bad or missing file
        assert len(index) == g.vectors
