"""The GPU half of ``bench_trainer`` (``--device cuda``): every arm and target in one run.

BERT-base at 32 × 512 and a MiniLM-sized model at 64 × 128, random-initialised, bf16, no dropout
in kecl; kecl compiled (its CUDA default) and eager, ``Trainer`` with and without
``torch_compile``; then the data-preparation ratio of a second run over the same corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def gpu_main(args: argparse.Namespace) -> dict:
    """Run every arm on the GPU, print the table and write ``args.out``."""
    import torch

    from benchmarks.bench_trainer import load_texts
    from benchmarks.trainer_arms import Setup, packaged_tokenizer, prepare_ratio, run_kecl, run_trainer

    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    started = time.perf_counter()
    texts, source = load_texts(args.data, limit=args.texts)
    tokenizer = packaged_tokenizer()
    steps = 20 if args.quick else args.steps
    base = Setup("bert-base", 32, 512, steps, "cuda", peak_tflops=args.peak_tflops)
    small = Setup("minilm", 64, 128, steps, "cuda", peak_tflops=args.peak_tflops)
    arms: dict[str, dict[str, Any]] = {}

    def arm(name: str, run: Any) -> None:
        try:
            arms[name] = run()
        except Exception as exc:  # noqa: BLE001 - one failing arm is reported, the others still run
            arms[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(name, json.dumps(arms[name]), flush=True)
        torch.cuda.empty_cache()

    arm("bert-base kecl (compiled)", lambda: run_kecl(base, texts, tokenizer))
    arm("bert-base kecl (eager)", lambda: run_kecl(base, texts, tokenizer, compile=False))
    # A later run over the same corpus (an update cycle's replay): its blocks come from the cache.
    from encoder import cached_blocks

    cache = tempfile.mkdtemp(prefix="kecl-bench-blocks-")
    cached_blocks(cache, tokenizer, texts, base.length, "grouped")
    arm("bert-base kecl (compiled, blocks cached)", lambda: run_kecl(base, texts, tokenizer, block_cache=cache))
    arm("bert-base Trainer", lambda: run_trainer(base, texts, tokenizer))
    arm("bert-base Trainer + torch_compile", lambda: run_trainer(base, texts, tokenizer, compile=True))
    arm("minilm kecl (compiled)", lambda: run_kecl(small, texts, tokenizer))
    arm(
        "minilm kecl (compiled, CUDA graphs)", lambda: run_kecl(small, texts, tokenizer, compile_mode="reduce-overhead")
    )
    arm("minilm kecl (eager)", lambda: run_kecl(small, texts, tokenizer, compile=False))
    arm("minilm Trainer", lambda: run_trainer(small, texts, tokenizer))
    prepare = prepare_ratio(texts, tokenizer, base.length)

    def ratio(ours: str, theirs: str, key: str, inverse: bool = False) -> float | None:
        a, b = arms.get(ours, {}).get(key), arms.get(theirs, {}).get(key)
        if a is None or b is None:
            return None
        return a / b if inverse else b / a

    best_base = min(
        (n for n in arms if n.startswith("bert-base kecl (") and "cached" not in n and "median_step_s" in arms[n]),
        key=lambda n: arms[n]["median_step_s"],
        default="bert-base kecl (compiled)",
    )
    best_small = min(
        (n for n in arms if n.startswith("minilm kecl") and "median_step_s" in arms[n]),
        key=lambda n: arms[n]["median_step_s"],
        default="minilm kecl (compiled)",
    )
    targets = {
        "bert-base median step >= 2x Trainer": ratio(best_base, "bert-base Trainer", "median_step_s"),
        "bert-base median step >= 1.6x Trainer+compile": ratio(
            best_base, "bert-base Trainer + torch_compile", "median_step_s"
        ),
        "bert-base MFU >= 40%": arms.get(best_base, {}).get("mfu"),
        "minilm median step >= 2x Trainer": ratio(best_small, "minilm Trainer", "median_step_s"),
        "bert-base whole run >= 1.8x Trainer (data prep included)": ratio(
            "bert-base kecl (compiled)", "bert-base Trainer", "whole_run_s"
        ),
        "bert-base whole run, blocks cached, vs Trainer": ratio(
            "bert-base kecl (compiled, blocks cached)", "bert-base Trainer", "whole_run_s"
        ),
        "second run data preparation <= 10% of the first": prepare["ratio"],
    }
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "data": source,
        "texts": len(texts),
        "steps": steps,
        "arms": arms,
        "fastest kecl arms": [best_base, best_small],
        "prepare_second_over_first": prepare,
        "targets": targets,
        "bench_seconds": time.perf_counter() - started,
    }
    _print(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


def _print(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"MLM training on {result['device']}, {result['steps']} steps, {result['data']}")
    for col in ("arm", "median step s", "first step s", "whole run s", "whole-run tokens/s", "MFU", "loss (last 5)"):
        table.add_column(col)
    for name, r in result["arms"].items():
        if "error" in r:
            table.add_row(name, r["error"][:60], "", "", "", "", "")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "?"
        table.add_row(
            name,
            f"{r['median_step_s']:.4f}",
            f"{r['first_step_s']:.1f}",
            f"{r['whole_run_s']:.1f}",
            f"{r['whole_run_tokens_per_s']:.0f}",
            mfu,
            f"{r['train_loss_last5']:.3f}",
        )
    console = Console()
    console.print(table)
    for name, value in result["targets"].items():
        console.print(f"{name}: {value if value is None else round(value, 3)}")
    console.print(f"whole benchmark: {result['bench_seconds']:.0f} s; load {os.getloadavg()[0]:.1f}")
