"""Web interface: each view's server time at scale, SQLite and PostgreSQL, against the JSON API.

    .venv/bin/python -m benchmarks.bench_web                 # 100k entities, 1M facts, 100k passages
    .venv/bin/python -m benchmarks.bench_web --quick         # 10k, 100k, 10k
    .venv/bin/python -m benchmarks.bench_web --backends sqlite

The store is written directly through SQLAlchemy Core bulk inserts (minutes, not hours): entities
with an alias each, 50 relations, facts whose subjects and objects follow a Zipf-like popularity
(a few hubs hold thousands of facts, as in Wikidata), a fifth of them closed (history), one
document of one passage per 10 facts' worth of text, two mentions per passage, 50 evaluated update
runs. The passage index embeds with a tiny random sentence encoder (so start-up does not spend
an hour embedding 100k passages); the Ask view is answered by the packaged default model's weights
(the home has no checkpoint, so kecl serves the base model: its MLM head is untrained, but the
work per question, three modes with attention and entity answers, is the adapted model's).

Each view is requested through the real app in-process (Starlette's test client, so no network
or client time is counted) for varied arguments — random entities and the biggest hubs — and
timed: median and p95 per view. Side by side, in the same run over the same store, the JSON API's
nearest equivalents (``GET /v1/entities/{ref}``, which reads the first 200 facts of each list and counts them all, and
``GET /v1/entities/{ref}/neighbourhood``). Target: every view ≤ 300 ms p95.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

log = logging.getLogger(__name__)
WORDS = "river castle harbour mountain valley forest desert island bridge tower market temple".split()
TARGET_MS = 300.0


def zipf_choice(rng: np.random.Generator, n: int, size: int, a: float = 0.9) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** a
    weights /= weights.sum()
    return rng.permutation(n)[rng.choice(n, size, p=weights)]


def bulk_fill(url: str, n_entities: int, n_facts: int, n_passages: int, seed: int = 0) -> dict[str, Any]:
    """Write the synthetic store through Core ``insert`` in batches; returns counts and the hubs."""
    from knowledge import KnowledgeStore, normalise_alias

    store = KnowledgeStore.open(url)  # migrates: the real schema, indexes and full-text objects
    engine = store.engine
    tables = sa.MetaData()
    tables.reflect(engine)  # the migrated tables as the database has them
    t = tables.tables
    rng = np.random.default_rng(seed)
    now = dt.datetime(2026, 1, 1)

    def insert(table: sa.Table, rows: Iterator[dict[str, Any]], batch: int = 20_000) -> None:
        chunk: list[dict[str, Any]] = []
        with engine.begin() as conn:
            for row in rows:
                chunk.append(row)
                if len(chunk) == batch:
                    conn.execute(table.insert(), chunk)
                    chunk = []
            if chunk:
                conn.execute(table.insert(), chunk)

    t0 = time.perf_counter()
    insert(t["source"], ({"id": i + 1, "name": f"feed-{i}", "kind": "file", "created_at": now} for i in range(10)))
    insert(
        t["relation"],
        (
            {
                "id": f"P{i}",
                "label": f"relation {i}",
                "template": f"[X] has relation {i} with [Y] .",
                "functional": i % 2 == 0,
            }
            for i in range(1, 51)
        ),
    )
    names = [f"{WORDS[i % len(WORDS)].title()} {i}" for i in range(n_entities)]
    insert(
        t["entity"],
        (
            {
                "id": i + 1,
                "external_id": f"Q{i + 1}",
                "name": names[i],
                "type": "place",
                "created_at": now,
                "updated_at": now,
            }
            for i in range(n_entities)
        ),
    )
    insert(
        t["alias"],
        (
            {"entity_id": i + 1, "surface": names[i], "normalised": normalise_alias(names[i]), "prior": 0.5}
            for i in range(n_entities)
        ),
    )
    subjects = zipf_choice(rng, n_entities, n_facts) + 1
    objects = zipf_choice(rng, n_entities, n_facts) + 1
    relations = rng.integers(1, 51, n_facts)
    closed = rng.random(n_facts) < 0.2
    starts = rng.integers(0, 365 * 40, n_facts)
    base = dt.date(1985, 1, 1)

    def facts() -> Iterator[dict[str, Any]]:
        for i in range(n_facts):
            start = base + dt.timedelta(days=int(starts[i]))
            end = start + dt.timedelta(days=400) if closed[i] else None
            yield {
                "id": i + 1,
                "subject_id": int(subjects[i]),
                "relation_id": f"P{relations[i]}",
                "object_id": int(objects[i]),
                "valid_from": start,
                "valid_to": end,
                "source_id": i % 10 + 1,
                "confidence": 1.0,
                "created_at": now,
                # distinct close times, as facts closed by separate ingests have
                "closed_at": now + dt.timedelta(seconds=i) if end else None,
            }

    insert(t["fact"], facts())
    mentioned = zipf_choice(rng, n_entities, 2 * n_passages) + 1

    def documents() -> Iterator[dict[str, Any]]:
        for i in range(n_passages):
            yield {
                "id": i + 1,
                "source_id": i % 10 + 1,
                "external_id": f"doc-{i + 1}",
                "title": f"Report {i + 1} on {names[mentioned[2 * i] - 1]}",
                "content_hash": hashlib.sha256(str(i).encode()).hexdigest(),
                "text": passage_text(i),
                "published_at": base + dt.timedelta(days=i % 14000),
                "ingested_at": now,
            }

    def passage_text(i: int) -> str:
        a, b = names[mentioned[2 * i] - 1], names[mentioned[2 * i + 1] - 1]
        return f"{a} lies near {b}; the {WORDS[i % len(WORDS)]} of {a} is known ({i})."

    insert(t["document"], documents())
    insert(
        t["passage"],
        (
            {
                "id": i + 1,
                "document_id": i + 1,
                "ordinal": 0,
                "text": passage_text(i),
                "char_start": 0,
                "char_end": len(passage_text(i)),
                "token_count": 20,
            }
            for i in range(n_passages)
        ),
    )

    def mentions() -> Iterator[dict[str, Any]]:
        for i in range(n_passages):
            for j in (0, 1):
                name = names[mentioned[2 * i + j] - 1]
                start = passage_text(i).index(name)
                yield {
                    "passage_id": i + 1,
                    "entity_id": int(mentioned[2 * i + j]),
                    "start": start,
                    "end": start + len(name),
                    "surface": name,
                }

    insert(t["mention"], mentions())
    group = {
        "new": {"p_at_1": 0.5, "n": 20},
        "changed": {"p_at_1": 0.3, "n": 10},
        "unchanged": {"p_at_1": 0.9, "n": 50},
    }
    insert(
        t["update_run"],
        (
            {
                "trigger": "schedule",
                "status": "finished",
                "started_at": now,
                "finished_at": now,
                "timings": {"ingest": 1.0, "train": 60.0},
                "counts": {"facts_added": 100},
                "metrics": {"candidate": {"modes": {"closed-book": group, "concat": group}, "heldout_loss": 3.0}},
                "decision": "promote",
                "reasons": ["retention held"],
                "error": None,
                "checkpoint_version": f"v{i:04d}",
            }
            for i in range(50)
        ),
    )
    insert(
        t["checkpoint"],
        (
            {
                "version": f"v{i:04d}",
                "parent_version": f"v{i - 1:04d}" if i else None,
                "status": "retired",
                "created_at": now,
                "metrics": {"heldout_loss": 3.0},
            }
            for i in range(50)
        ),
    )
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:  # bulk inserts with explicit ids leave the sequences behind
            for table in ("source", "entity", "alias", "fact", "document", "passage", "mention", "update_run"):
                conn.execute(
                    sa.text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
                )
            conn.execute(sa.text("ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
    hubs = [int(e) for e, _ in sorted(zip(*np.unique(subjects, return_counts=True)), key=lambda x: -x[1])[:5]]
    store.close()
    return {"fill_s": round(time.perf_counter() - t0, 1), "hubs": hubs, "names": names}


def tiny_embedder(folder: Path) -> Path:
    """A tiny random sentence encoder (the index's embedder) with the default model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from kecl.home import resolve_model_path
    from kecl.settings import DEFAULT_MODEL

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL), use_fast=True)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=256
    )
    torch.manual_seed(0)
    embedder = folder / "embedder"
    BertModel(config).eval().save_pretrained(embedder)
    tokenizer.save_pretrained(embedder)
    return embedder


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def time_requests(get: Callable[[str], Any], paths: list[str]) -> dict[str, float]:
    get(paths[0])  # warm: the first request of a kind builds caches (graph view, linker, templates)
    times = []
    for p in paths:
        t0 = time.perf_counter()
        r = get(p)
        times.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{p}: {r.status_code} {r.text[:300]}")
    return {
        "n": len(times),
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(percentile(times, 0.95), 1),
        "ms": [round(t, 1) for t in times],
    }


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    schema = f"bench_web_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def run_backend(backend: str, url: str, sizes: tuple[int, int, int], requests: int, work: Path) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from kecl.api import create_app
    from kecl.settings import Settings

    n_entities, n_facts, n_passages = sizes
    filled = bulk_fill(url, n_entities, n_facts, n_passages)
    log.info("%s: filled in %ss", backend, filled["fill_s"])
    embedder = tiny_embedder(work / f"models-{backend}")
    settings = Settings(
        home=work / f"home-{backend}",
        database_url=url,
        index={"embedder": str(embedder)},
        api={"api_key": "bench-key-not-a-secret"},
    )
    rng = random.Random(1)
    hubs, names = filled["hubs"], filled["names"]
    sample = [rng.randrange(1, n_entities + 1) for _ in range(requests)]
    ents = hubs + sample[: requests - len(hubs)]
    dates = [f"{rng.randrange(1990, 2025)}-06-01" for _ in range(requests)]
    words = [names[rng.randrange(n_entities)].split()[0] + f" {rng.randrange(1, n_entities)}" for _ in range(requests)]
    views = {
        "search": [f"/?q={w.replace(' ', '+')}" for w in words],
        "entity": [f"/entity/{e}" for e in ents],
        "entity as of": [f"/entity/{e}?as_of={d}" for e, d in zip(ents, dates)],
        "graph 2 hops": [f"/graph/{e}?hops=2&fanout=25" for e in ents],
        "graph 2 hops as of": [f"/graph/{e}?hops=2&fanout=25&as_of={d}" for e, d in zip(ents, dates)],
        "ask (packaged model)": [
            f"/ask?q={names[e - 1].replace(' ', '+')}+has+relation+3+with+[MASK]+." for e in ents[:20]
        ],
        "document": [f"/document/{rng.randrange(1, n_passages + 1)}" for _ in range(requests)],
        "runs": ["/runs"] * min(requests, 20),
        "stats": ["/stats"] * min(requests, 20),
    }
    baseline = {
        "GET /v1/entities/{id}": [f"/v1/entities/{e}" for e in ents],
        "GET /v1/entities/{id}/neighbourhood?hops=2": [f"/v1/entities/{e}/neighbourhood?hops=2" for e in ents],
        "GET /v1/stats": ["/v1/stats"] * min(requests, 20),
    }
    out: dict[str, Any] = {"fill_s": filled["fill_s"], "views": {}, "baseline": {}}
    t0 = time.perf_counter()
    with TestClient(create_app(settings)) as client:
        out["startup_s"] = round(time.perf_counter() - t0, 1)  # includes embedding every passage
        for name, paths in views.items():
            out["views"][name] = time_requests(client.get, paths)
            log.info("%s %s %s", backend, name, out["views"][name])
        for name, paths in baseline.items():
            out["baseline"][name] = time_requests(client.get, paths)
            log.info("%s baseline %s %s", backend, name, out["baseline"][name])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k entities, 100k facts, 10k passages")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--requests", type=int, default=40, help="requests per view")
    parser.add_argument(
        "--postgres", default=os.environ.get("KECL_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sizes = (10_000, 100_000, 10_000) if args.quick else (100_000, 1_000_000, 100_000)
    results: dict[str, Any] = {"sizes": dict(zip(("entities", "facts", "passages"), sizes)), "backends": {}}
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                results["backends"]["sqlite"] = run_backend(
                    backend, f"sqlite:///{tmp}/kecl.db", sizes, args.requests, Path(tmp)
                )
            else:
                with postgres_schema(args.postgres) as url:
                    results["backends"]["postgresql"] = run_backend(backend, url, sizes, args.requests, Path(tmp))
    print(json.dumps(results, indent=2))
    print(f"\n{'view':<44} " + " ".join(f"{b + ' p50/p95 ms':>26}" for b in results["backends"]))
    for kind in ("views", "baseline"):
        names = list(next(iter(results["backends"].values()))[kind])
        for name in names:
            cells = []
            for b in results["backends"].values():
                r = b[kind][name]
                flag = "" if kind == "baseline" or r["p95_ms"] <= TARGET_MS else " !"
                cells.append(f"{r['p50_ms']:>10.1f} / {r['p95_ms']:>8.1f}{flag:>2}    ")
            print(f"{('(API) ' if kind == 'baseline' else '') + name:<44} " + " ".join(cells))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
