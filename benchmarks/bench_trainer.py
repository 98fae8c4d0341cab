"""Our MLM trainer against transformers.Trainer + DataCollatorForLanguageModeling, same run.

Same model (packaged MiniLM, same seeded head initialisation), same blocks of text (grouped as
run_mlm.py does, 16 × 128), same learning rate, warm-up and number of steps. Reports tokens/s of
both over the whole run, the median step time (steady state, the first step left out), their
ratios, the training loss over the last steps and the held-out masked-LM loss of both final models
(same fixed masking), i.e. loss after the same number of tokens. Our loop runs in several arms,
one setting changed at a time (dropouts, the attention kernel's precision).

    .venv/bin/python -m benchmarks.bench_trainer [--data LAMA] [--steps 20] [--quick]

On a GPU (``--device cuda``): random-initialised BERT-base (32 × 512) and MiniLM-sized (64 × 128)
models, kecl (compiled, its CUDA default, and eager) against ``Trainer`` with and without
``torch_compile``, all in one run: median step, whole-run tokens/s with data preparation, model
FLOP utilisation (:mod:`benchmarks.trainer_arms` says how FLOPs are counted), the ratios and the
issue's targets. Wheels beyond torch and transformers: ``accelerate`` (``Trainer``) and the
``triton`` that ships with CUDA builds of torch (``torch.compile``).

    .venv/bin/python -m benchmarks.bench_trainer --device cuda [--steps 200] [--out bench-out/trainer-cuda.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_texts(data: str | None, limit: int = 20000) -> tuple[list[str], str]:
    """Evidence sentences from a LAMA folder (T-REx, [MASK] filled with the object), else the
    generated default corpus."""
    if data and Path(data, "TREx").is_dir():
        texts = []
        for path in sorted(Path(data, "TREx").glob("P*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                for ev in row.get("evidences", [])[:2]:
                    s = ev.get("masked_sentence", "")
                    if "[MASK]" in s:
                        texts.append(s.replace("[MASK]", ev.get("obj_surface", row.get("obj_label", ""))))
        random.Random(0).shuffle(texts)
        return texts[:limit], f"LAMA T-REx evidence ({data})"
    from encoder import default_corpus

    return default_corpus(max_chars=1_000_000)[:limit], "default corpus (stdlib docstrings + everyday sentences)"


def load_packaged_model():
    """The default model (the packaged MiniLM) on the CPU, with its fresh MLM head (seed it first)."""
    from encoder import load_mlm
    from kecl.home import resolve_model_path
    from kecl.settings import DEFAULT_MODEL

    return load_mlm(resolve_model_path(DEFAULT_MODEL), device="cpu", name=DEFAULT_MODEL)


def run_ours(texts, heldout, steps, lr, batch, length, packing, bf16, **options):
    """Our loop; ``options`` are further ``TrainConfig`` fields (dropouts, attention, heap reuse)."""
    import torch

    from encoder import TrainConfig, masked_lm_loss, train_mlm

    torch.manual_seed(0)
    bundle = load_packaged_model()
    config = TrainConfig(
        steps=steps,
        batch_size=batch,
        max_length=length,
        learning_rate=lr,
        warmup_ratio=0.1,
        packing=packing,
        bf16=bf16,
        replay_ratio=0.0,
        **options,
    )
    ends = [time.perf_counter()]
    result = train_mlm(
        bundle, texts, config=config, progress=False, on_step=lambda step, metrics: ends.append(time.perf_counter())
    )
    tail = result.losses[-5:]
    return {
        "tokens_per_s": result.tokens_per_second,
        "seconds": result.seconds,
        "tokens": result.tokens,
        "median_step_s": median_step(ends),
        "train_loss_last5": sum(tail) / len(tail),
        "bf16": result.bf16,
        "heldout_loss": masked_lm_loss(bundle, heldout),
    }


def median_step(ends: list[float]) -> float:
    """Median wall time of a step, from the times steps ended (the first step, which pays one-time
    costs, is left out): the steady-state measure, robust to a noisy machine."""
    steps = [b - a for a, b in zip(ends[1:], ends[2:])]
    return statistics.median(steps) if steps else float("nan")


def run_trainer(texts, heldout, steps, lr, batch, length, bf16, out_dir):
    import torch
    from torch.utils.data import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from encoder import build_blocks, masked_lm_loss

    torch.manual_seed(0)
    bundle = load_packaged_model()
    blocks = build_blocks(bundle.tokenizer, texts, length, packing="grouped")

    class Blocks(Dataset):
        def __len__(self):
            return len(blocks)

        def __getitem__(self, i):
            return {"input_ids": blocks.input_ids[i].tolist()}

    collator = DataCollatorForLanguageModeling(
        bundle.tokenizer, mlm_probability=0.15, mask_replace_prob=0.8, random_replace_prob=0.1
    )
    args = TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=lr,
        warmup_steps=int(0.1 * steps),
        weight_decay=0.01,
        lr_scheduler_type="linear",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=bf16,
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
    )
    from transformers import TrainerCallback

    ends: list[float] = []

    class StepTimes(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    trainer = Trainer(
        model=bundle.model, args=args, train_dataset=Blocks(), data_collator=collator, callbacks=[StepTimes()]
    )
    output = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tail = losses[-5:]
    tokens = steps * batch * length
    seconds = output.metrics["train_runtime"]
    bundle.model.eval()
    return {
        "tokens_per_s": tokens / seconds,
        "seconds": seconds,
        "tokens": tokens,
        "median_step_s": median_step(ends),
        "train_loss_last5": sum(tail) / len(tail),
        "bf16": bf16,
        "heldout_loss": masked_lm_loss(bundle, heldout),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="LAMA folder (uses TREx evidence sentences)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--packing", default="grouped", choices=["grouped", "packed"])
    parser.add_argument("--trainer-bf16", action="store_true", help="also give Trainer bf16 autocast")
    parser.add_argument("--quick", action="store_true", help="6 steps")
    parser.add_argument("--out", default="bench-out/trainer.json")
    parser.add_argument(
        "--default-only", action="store_true", help="CPU: only kecl's default arm against Trainer (no ablation)"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: the GPU comparison")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's bf16 peak (default: by name)")
    parser.add_argument("--texts", type=int, default=60000, help="training sentences (GPU run)")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        from benchmarks.bench_trainer_gpu import gpu_main

        return gpu_main(args)
    steps = 6 if args.quick else args.steps

    texts, source = load_texts(args.data)
    heldout, train = texts[:200], texts[200:]
    import torch

    load = os.getloadavg()[0]
    common = (train, heldout, steps, args.lr, args.batch_size, args.max_length, args.packing, None)
    # Our arms, one change at a time. Under bf16 autocast on CPU both fused SDPA kernels are slower
    # than eager's two bf16 matmuls; glibc page-faults the vocabulary-sized tensors back in every
    # step unless freed memory is kept (heap_reuse); the last layer is needed only at the masked
    # positions (encoder.masked_forward); hidden-state dropout costs its random masks.
    no_dropout = dict(attention_dropout=0.0, hidden_dropout=0.0)
    arms = {
        "ours, no dropout, SDPA, glibc defaults": dict(no_dropout, train_attention="sdpa", reuse_heap=False),
        "ours, no dropout, eager, glibc defaults": dict(no_dropout, reuse_heap=False),
        "ours, no dropout, eager, heap reuse, full last layer": dict(no_dropout, sparse_last_layer=False),
        "ours, no dropout (kecl default)": dict(no_dropout),
        "ours, model's dropout": dict(),
    }
    if args.default_only:
        arms = {name: options for name, options in arms.items() if "kecl default" in name}
    ours = {name: run_ours(*common, **options) for name, options in arms.items()}
    tmp = Path(args.out).parent / "trainer-tmp"
    theirs = run_trainer(train, heldout, steps, args.lr, args.batch_size, args.max_length, args.trainer_bf16, tmp)
    # The same allocator setting given to the Trainer, so that the ratio is not the allocator's alone.
    from encoder import heap_reuse

    with heap_reuse() as applied:
        theirs_heap = (
            run_trainer(train, heldout, steps, args.lr, args.batch_size, args.max_length, args.trainer_bf16, tmp)
            if applied
            else None
        )
    from benchmarks.trainer_arms import packaged_tokenizer, prepare_ratio

    # The second run over the same corpus reads its blocks from the cache.
    prepare = prepare_ratio(train, packaged_tokenizer(), args.max_length)
    result = {
        "prepare_second_over_first": prepare,
        "data": source,
        "steps": steps,
        "batch": f"{args.batch_size}x{args.max_length}",
        "lr": args.lr,
        "packing": args.packing,
        "threads": torch.get_num_threads(),
        "load_avg_at_start": load,
        "ours": ours,
        "arms": {name: {k: v for k, v in o.items()} for name, o in arms.items()},
        "hf_trainer": theirs,
        "hf_trainer_heap_reuse": theirs_heap,
        "speedup": {name: r["tokens_per_s"] / theirs["tokens_per_s"] for name, r in ours.items()},
        "speedup_median_step": {name: theirs["median_step_s"] / r["median_step_s"] for name, r in ours.items()},
    }
    if theirs_heap:
        result["speedup_vs_trainer_heap_reuse"] = {
            name: r["tokens_per_s"] / theirs_heap["tokens_per_s"] for name, r in ours.items()
        }
        result["speedup_median_step_vs_trainer_heap_reuse"] = {
            name: theirs_heap["median_step_s"] / r["median_step_s"] for name, r in ours.items()
        }
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"MLM training, MiniLM, {result['batch']}, {steps} steps, {source}")
    columns = [
        "",
        "tokens/s",
        "seconds",
        "median step s",
        "train loss (last 5)",
        "held-out MLM loss",
        "bf16",
        "× Trainer (tokens/s)",
        "× Trainer (median step)",
    ]
    if theirs_heap:
        columns.append("× Trainer with heap reuse (median step)")
    for col in columns:
        table.add_column(col)
    rows = [*ours.items(), ("HF Trainer + collator", theirs)]
    if theirs_heap:
        rows.append(("HF Trainer + collator, heap reuse", theirs_heap))
    for name, r in rows:
        cells = [
            name,
            f"{r['tokens_per_s']:.0f}",
            f"{r['seconds']:.1f}",
            f"{r['median_step_s']:.3f}",
            f"{r['train_loss_last5']:.3f}",
            f"{r['heldout_loss']:.3f}",
            str(r["bf16"]),
            f"{r['tokens_per_s'] / theirs['tokens_per_s']:.2f}",
            f"{theirs['median_step_s'] / r['median_step_s']:.2f}",
        ]
        if theirs_heap:
            cells.append(f"{theirs_heap['median_step_s'] / r['median_step_s']:.2f}")
        table.add_row(*cells)
    Console().print(table)
    Console().print(f"load average at start {load:.1f} on {os.cpu_count()} cores")
    Console().print(
        f"data preparation: first run {prepare['first_s']:.2f} s, second run (block cache) "
        f"{prepare['second_s']:.3f} s = {100 * prepare['ratio']:.1f}% (target <= 10%)"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
