"""Arms of ``bench_trainer`` for any device and model size: kecl's ``train_mlm`` and
``transformers.Trainer`` (with and without ``torch_compile``) on the same blocks, timed as whole
runs (data preparation included) and per step, with model FLOP utilisation.

FLOPs are counted the same way for every arm (model FLOPs, not what an implementation skips or
adds): per trained token the encoder's matmuls at every position, ``layers · (8h² + 4h·ffn +
4h·L)`` (Q, K, V, output projections, feed-forward, attention scores and weighted values); the
MLM head (``2h² + 2hV``) at the masked positions only; a step is forward + backward = 3× the
forward's FLOPs.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch

SIZES = {
    # name: (layers, hidden, heads, feed-forward), BERT's vocabulary; random-initialised weights
    "bert-base": (12, 768, 12, 3072),
    "minilm": (6, 384, 12, 1536),
}
# bf16 dense peak TFLOP/s by GPU name fragment; --peak-tflops overrides
PEAK_TFLOPS = {"H200": 790.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


@dataclass(frozen=True)
class Setup:
    """One comparison: model size, batch, steps, device and the peak used for utilisation."""

    size: str
    batch: int
    length: int
    steps: int
    device: str
    lr: float = 1e-4
    peak_tflops: float | None = None


def peak_tflops(device: str, override: float | None) -> float | None:
    """The device's bf16 peak (TFLOP/s), from ``override`` or the GPU's name; ``None`` on CPU."""
    if override is not None:
        return override
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def step_flops(size: str, batch: int, length: int, vocab: int, mlm_probability: float = 0.15) -> float:
    """Model FLOPs of one training step (see the module docstring)."""
    layers, h, _, ffn = SIZES[size]
    tokens = batch * length
    encoder = layers * (8 * h * h + 4 * h * ffn + 4 * h * length) * tokens
    head = (2 * h * h + 2 * h * vocab) * tokens * mlm_probability
    return 3.0 * (encoder + head)


def packaged_tokenizer() -> Any:
    """The packaged model's tokenizer (BERT's uncased vocabulary, 30,522 words)."""
    from transformers import AutoTokenizer

    from kecl.home import resolve_model_path
    from kecl.settings import DEFAULT_MODEL

    return AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))


def random_bundle(size: str, tokenizer: Any, device: str, seed: int = 0) -> Any:
    """A random-initialised BERT of ``size`` with ``tokenizer``, on ``device`` (both arms start equal)."""
    from transformers import BertConfig, BertForMaskedLM

    from encoder import MLMBundle

    layers, hidden, heads, ffn = SIZES[size]
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = BertForMaskedLM(config).to(device).eval()
    return MLMBundle(model, tokenizer, None, {"name_or_path": f"random {size}"})


def median_step(ends: list[float]) -> float:
    """Median wall time of a step from the times steps ended; the first step (one-time costs such
    as compilation) is left out."""
    steps = [b - a for a, b in zip(ends[1:], ends[2:])]
    return statistics.median(steps) if steps else float("nan")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_kecl(setup: Setup, texts: list[str], tokenizer: Any, block_cache: str | None = None, **options: Any) -> dict:
    """``train_mlm`` on ``texts`` (its defaults for the device, no dropout); the clock starts before
    the data is prepared."""
    from encoder import TrainConfig, train_mlm

    bundle = random_bundle(setup.size, tokenizer, setup.device)
    config = TrainConfig(
        steps=setup.steps,
        batch_size=setup.batch,
        max_length=setup.length,
        learning_rate=setup.lr,
        warmup_ratio=0.1,
        packing="grouped",
        replay_ratio=0.0,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        block_cache_dir=block_cache,
        **options,
    )
    ends: list[float] = []

    def on_step(step: int, metrics: dict) -> None:
        _sync(setup.device)
        ends.append(time.perf_counter())

    _sync(setup.device)
    started = time.perf_counter()
    result = train_mlm(bundle, texts, config=config, progress=False, on_step=on_step)
    whole = time.perf_counter() - started
    first_step = ends[0] - started - result.metrics["prepare_seconds"] if ends else float("nan")
    return _report(setup, tokenizer, result.tokens, whole, [started, *ends], result.losses, first_step) | {
        "prepare_s": result.metrics["prepare_seconds"],
        "bf16": result.bf16,
        "compiled": result.metrics["compiled"],
    }


def run_trainer(setup: Setup, texts: list[str], tokenizer: Any, compile: bool = False) -> dict:
    """``transformers.Trainer`` + ``DataCollatorForLanguageModeling`` on the same grouped blocks
    (prepared inside the clock, as run_mlm.py does), bf16 where the device has it."""
    from torch.utils.data import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    from encoder import bf16_supported, build_blocks

    bundle = random_bundle(setup.size, tokenizer, setup.device)
    _sync(setup.device)
    started = time.perf_counter()
    blocks = build_blocks(tokenizer, texts, setup.length, packing="grouped")
    prepare = time.perf_counter() - started

    class Blocks(Dataset):
        def __len__(self) -> int:
            return len(blocks)

        def __getitem__(self, i: int) -> dict:
            return {"input_ids": blocks.input_ids[i].tolist()}

    ends: list[float] = []

    class StepTimes(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            _sync(setup.device)
            ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            _sync(setup.device)
            ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=setup.batch,
            max_steps=setup.steps,
            learning_rate=setup.lr,
            warmup_steps=int(0.1 * setup.steps),
            weight_decay=0.01,
            lr_scheduler_type="linear",
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=setup.device == "cpu",
            bf16=bf16_supported(torch.device(setup.device)),
            torch_compile=compile,
            dataloader_num_workers=0,
            seed=0,
            disable_tqdm=True,
        )
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
        trainer = Trainer(
            model=bundle.model, args=args, train_dataset=Blocks(), data_collator=collator, callbacks=[StepTimes()]
        )
        trainer.train()
    whole = time.perf_counter() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    first_step = ends[1] - ends[0] if len(ends) > 1 else float("nan")
    return _report(setup, tokenizer, setup.steps * setup.batch * setup.length, whole, ends, losses, first_step) | {
        "prepare_s": prepare,
        "bf16": args.bf16,
        "compiled": compile,
    }


def _report(
    setup: Setup, tokenizer: Any, tokens: int, whole: float, ends: list[float], losses: list[float], first: float
) -> dict:
    step = median_step(ends)
    peak = peak_tflops(setup.device, setup.peak_tflops)
    flops = step_flops(setup.size, setup.batch, setup.length, len(tokenizer))
    tail = losses[-5:] or [float("nan")]
    return {
        "median_step_s": step,
        "first_step_s": first,
        "whole_run_s": whole,
        "whole_run_tokens_per_s": tokens / whole,
        "model_tflops_per_s": flops / step / 1e12,
        "mfu": flops / step / (peak * 1e12) if peak else None,
        "train_loss_last5": sum(tail) / len(tail),
    }


def prepare_ratio(texts: list[str], tokenizer: Any, length: int) -> dict:
    """Data preparation of a run over ``texts`` with a cold block cache, then with a warm one."""
    from encoder import cached_blocks

    with tempfile.TemporaryDirectory() as cache:
        times = []
        for _ in range(2):
            started = time.perf_counter()
            cached_blocks(cache, tokenizer, texts, length, "grouped")
            times.append(time.perf_counter() - started)
    return {"first_s": times[0], "second_s": times[1], "ratio": times[1] / times[0]}
