"""Fill-mask speed: p50 latency for one sentence, and throughput at batch 64 (packaged MiniLM,
or the model/checkpoint given by --model).

    .venv/bin/python -m benchmarks.bench_fillmask [--model PATH] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SENTENCES = [
    "The puppy [MASK] on the mat.",
    "Paris is the capital of [MASK].",
    "She drank a cup of [MASK] before breakfast.",
    "The doctor works in a [MASK].",
    "Return the number of [MASK] in the list.",
    "The children went to [MASK] in the morning.",
    "Rain falls from the [MASK].",
    "He opened the [MASK] and walked outside.",
]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench-out/fillmask.json")
    args = parser.parse_args(argv)
    repeats = 10 if args.quick else args.repeats

    from encoder import fill_mask, load_mlm
    from kecl.home import resolve_model_path
    from kecl.settings import DEFAULT_MODEL

    name = args.model or DEFAULT_MODEL
    bundle = load_mlm(resolve_model_path(name), device="cpu", name=name)
    fill_mask(bundle, SENTENCES[:1])  # warm-up
    single = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fill_mask(bundle, [SENTENCES[i % len(SENTENCES)]], top_k=10)
        single.append(time.perf_counter() - t0)
    explain = []
    for i in range(max(3, repeats // 5)):
        t0 = time.perf_counter()
        fill_mask(bundle, [SENTENCES[i % len(SENTENCES)]], top_k=10, explain=True)
        explain.append(time.perf_counter() - t0)
    batch = (SENTENCES * 8)[:64]
    batched = []
    for _ in range(max(3, repeats // 10)):
        t0 = time.perf_counter()
        fill_mask(bundle, batch, top_k=10, batch_size=64)
        batched.append(time.perf_counter() - t0)
    result = {
        "model": args.model or "packaged MiniLM",
        "p50_ms_one_sentence": 1000 * statistics.median(single),
        "p90_ms_one_sentence": 1000 * sorted(single)[int(0.9 * (len(single) - 1))],
        "p50_ms_one_sentence_explain": 1000 * statistics.median(explain),
        "throughput_sentences_per_s_batch64": 64 / statistics.median(batched),
        "load_avg": os.getloadavg()[0],
    }
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fill-mask (CPU)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("p50 latency, one sentence", f"{result['p50_ms_one_sentence']:.1f} ms")
    table.add_row("p90 latency, one sentence", f"{result['p90_ms_one_sentence']:.1f} ms")
    table.add_row("p50 latency with --explain", f"{result['p50_ms_one_sentence_explain']:.1f} ms")
    table.add_row("throughput, batch 64", f"{result['throughput_sentences_per_s_batch64']:.0f} sentences/s")
    Console().print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
