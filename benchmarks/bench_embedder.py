"""Embedding where it costs: batches of mixed lengths, and indexes built from stored vectors.

Two measurements with the default embedder (the packaged MiniLM), each against its baseline in
the same run, the arms alternated:

- **mixed batches**: the query-coalescing embedder given ``q`` short queries and one passage at
  once (what a replica's embedder thread gathers while POSTs arrive among searches), split by
  length (``forward_cost_tokens`` as configured) against one padded pass (``forward_cost_tokens``
  infinite). CPU milliseconds per batch, medians.
- **beside Python work**: eight queries embedded while another thread runs Python (as a server's
  request threads do), by the model traced (``Embedder(trace=True)``, the default) and eager.
  Wall milliseconds per batch, medians; alone and beside the busy thread.
- **bf16**: the traced model in float32 against bf16 autocast (``Embedder(bf16=True)``, what
  ``index.bf16`` picks where bf16 is native): CPU milliseconds per batch of one query, eight
  queries and one passage, medians; and the smallest cosine between the two arms' vectors of the
  same texts. Skipped, and said so, where bf16 is not native (it is emulated there, and slower).
- **index from stored vectors**: ``build_index_from_store`` over ``--passages`` passages whose
  vectors the receiving process stored, reading them (``processes.share_vectors``, the default)
  against embedding every text again (off). Seconds, medians.

    .venv/bin/python -m benchmarks.bench_embedder                 # 1 thread, 2,000 passages
    .venv/bin/python -m benchmarks.bench_embedder --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUERY = "river castle paris music born"
PASSAGE = "Record 3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c of the 123456 survey, filed by the harbour office."


def cpu_ms(fn: Any, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.process_time()
        fn()
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def mixed_batches(embedder: Any, reps: int) -> list[dict[str, Any]]:
    configured = embedder.forward_cost_tokens
    rows = []
    for queries in (1, 3, 7, 15):
        texts = [QUERY] * queries + [PASSAGE]
        one, split = [], []
        for _ in range(3):  # the arms alternate, so a change of load hits both
            embedder.forward_cost_tokens = float("inf")
            one.append(cpu_ms(lambda t=texts: embedder.encode(t), reps))
            embedder.forward_cost_tokens = configured
            split.append(cpu_ms(lambda t=texts: embedder.encode(t), reps))
        rows.append(
            {
                "queries": queries,
                "one_pass_ms": round(statistics.median(one), 1),
                "split_ms": round(statistics.median(split), 1),
                "ratio": round(statistics.median(one) / statistics.median(split), 2),
            }
        )
        print(rows[-1], flush=True)
    embedder.forward_cost_tokens = configured
    return rows


def beside_python(name: str, reps: int) -> dict[str, Any]:
    import threading

    from kecl.home import resolve_model_path
    from retrieval import Embedder

    path = str(resolve_model_path(name))
    arms = {"traced": Embedder(path, name=name), "eager": Embedder(path, name=name, trace=False)}
    assert arms["traced"].traced is not None, "the model could not be traced"
    texts = [QUERY] * 8

    def wall_ms(embedder: Any) -> float:
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            embedder.encode(texts)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    stop = threading.Event()

    def busy() -> None:  # pure-Python work, as request handling is between its C calls
        total = 0
        while not stop.is_set():
            for i in range(1000):
                total += i

    out: dict[str, dict[str, list[float]]] = {arm: {"alone": [], "beside": []} for arm in arms}
    for _ in range(3):  # the arms alternate, so a change of load hits both
        for arm, embedder in arms.items():
            embedder.encode(texts)
            out[arm]["alone"].append(wall_ms(embedder))
            stop.clear()
            worker = threading.Thread(target=busy)
            worker.start()
            out[arm]["beside"].append(wall_ms(embedder))
            stop.set()
            worker.join()
    result: dict[str, Any] = {
        arm: {k: round(statistics.median(v), 1) for k, v in times.items()} for arm, times in out.items()
    }
    result["eager_over_traced_beside"] = round(result["eager"]["beside"] / result["traced"]["beside"], 1)
    print(result, flush=True)
    return result


def bf16_against_float32(name: str, reps: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from encoder import bf16_supported
    from kecl.home import resolve_model_path
    from retrieval import Embedder

    if not bf16_supported(torch.device("cpu")):
        return {"skipped": "bf16 is not native on this CPU (no AVX512-BF16 or AMX)"}
    path = str(resolve_model_path(name))
    arms = {"float32": Embedder(path, name=name), "bf16": Embedder(path, name=name, bf16=True)}
    batches = {"1 query": [QUERY], "8 queries": [QUERY] * 8, "1 passage": [PASSAGE]}
    out: dict[str, dict[str, list[float]]] = {b: {arm: [] for arm in arms} for b in batches}
    for _ in range(3):  # the arms alternate, so a change of load hits both
        for batch, texts in batches.items():
            for arm, embedder in arms.items():
                embedder.encode(texts)
                out[batch][arm].append(cpu_ms(lambda e=embedder, t=texts: e.encode(t), reps))
    result: dict[str, Any] = {}
    for batch, times in out.items():
        f32, b16 = statistics.median(times["float32"]), statistics.median(times["bf16"])
        result[batch] = {"float32_ms": round(f32, 2), "bf16_ms": round(b16, 2), "ratio": round(f32 / b16, 2)}
    texts = [f"{PASSAGE} {i}" if i % 2 else f"{QUERY} number {i}" for i in range(64)]
    cosines = (arms["float32"].encode(texts) * arms["bf16"].encode(texts)).sum(axis=1)
    result["min_cosine"] = round(float(np.min(cosines)), 6)
    print(result, flush=True)
    return result


def stored_vectors(passages: int, reps: int) -> dict[str, Any]:
    from kecl.follow import embed_chunks
    from kecl.home import open_store
    from kecl.settings import Settings
    from kecl.wiring import build_index_from_store, make_embedder
    from knowledge import DocumentRecord

    with tempfile.TemporaryDirectory(prefix="kecl-bench-embedder-") as tmp:
        settings = Settings(home=Path(tmp) / "home")
        store = open_store(settings)
        embedder = make_embedder(settings)
        topics = ["river", "castle", "senate", "glacier", "orchestra", "treaty", "harbour", "railway"]
        records = [
            DocumentRecord(text=f"The {topics[i % 8]} of town {i} was built in {1800 + i % 200} by guild {i % 17}.")
            for i in range(passages)
        ]
        start = time.perf_counter()
        store.add_documents(records, embed=lambda texts: embed_chunks(embedder, texts))
        ingest_s = time.perf_counter() - start
        off = settings.model_copy(update={"processes": settings.processes.model_copy(update={"share_vectors": False})})
        read, embedded = [], []
        for _ in range(reps):
            for arm, into in ((settings, read), (off, embedded)):
                start = time.perf_counter()
                index = build_index_from_store(arm, store, embedder)
                into.append(time.perf_counter() - start)
                assert len(index) == passages
        embedder.close()
        store.close()
    return {
        "passages": passages,
        "ingest_with_vectors_s": round(ingest_s, 2),
        "build_reading_s": round(statistics.median(read), 2),
        "build_embedding_s": round(statistics.median(embedded), 2),
        "ratio": round(statistics.median(embedded) / statistics.median(read), 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a server's width per request)")
    parser.add_argument("--reps", type=int, default=20, help="batches per arm and repetition")
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--builds", type=int, default=3, help="index builds per arm")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench-out/embedder.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.passages, args.builds = 5, 300, 1

    import torch

    from kecl.settings import Settings
    from kecl.wiring import make_embedder

    torch.set_num_threads(args.threads)
    settings = Settings(home=Path(tempfile.gettempdir()) / "kecl-bench-embedder-settings")
    embedder = make_embedder(settings)
    embedder.encode([QUERY, PASSAGE])  # loaded and warm
    result = {
        "threads": args.threads,
        "forward_cost_tokens": embedder.forward_cost_tokens,
        "mixed_batches": mixed_batches(embedder, args.reps),
        "beside_python": beside_python(settings.index.embedder, args.reps),
        "bf16": bf16_against_float32(settings.index.embedder, args.reps),
        "index_from_stored_vectors": stored_vectors(args.passages, args.builds),
    }
    embedder.close()
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
