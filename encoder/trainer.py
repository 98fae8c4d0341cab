"""Continued MLM training, built for speed on CPU and GPU.

:func:`train_mlm` is four stages: :func:`encoder.batches.prepare_streams` (tokenise and pack the
text, keep the reading exercises), :func:`build_optimizer` (AdamW groups, schedule, resumed
state), :func:`run_steps` (the loop) and :func:`finish` (the :class:`TrainResult`).

Why our own loop and not ``transformers.Trainer``: the speed tricks, each where it happens —

- masked-only logits: the MLM head (a 384 × 30k matmul per token) runs only at the ~15% masked
  positions, and the encoder's last layer only there too (:func:`_mlm_loss`);
- packing: documents fill blocks instead of being padded (:mod:`encoder.packing`);
- bf16 autocast where the hardware has it natively, the loss in float32 (:func:`_mlm_loss`);
- under CPU bf16, eager attention and heap reuse for the run (:func:`_training_mode`);
- on an accelerator, the encoder layers compiled (:mod:`encoder.compiled`) and the next batch
  built on a background thread while the step runs (:mod:`encoder.prefetch`);
- prepared blocks cached by content between runs (:mod:`encoder.block_cache`).

Under ``torchrun`` (:mod:`encoder.distributed`, launched by :mod:`encoder.launch`) each process
trains its share of every batch under DDP; rank 0 writes logs and states and decides when to stop.

Everything else is the textbook recipe: AdamW, warm-up then linear decay, gradient accumulation
and clipping.

Runs are reproducible and resumable: the batch and the masking at step ``s`` depend only on
``(seed, s)``, and the optimizer/scheduler state is saved with the weights, so a run resumed
from step ``s`` continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch.optim.lr_scheduler import LRScheduler
from tqdm.auto import tqdm
from transformers import BertForMaskedLM, PreTrainedModel, get_linear_schedule_with_warmup

from encoder import distributed
from encoder.adapters import lora_adapters
from encoder.batches import Streams, build_batch, on_device, prepare_streams
from encoder.bundle import MLMBundle, bf16_supported
from encoder.compiled import compiled_layers, encoder_layers, use_compile
from encoder.heap import heap_reuse
from encoder.masked_forward import supports_masked_forward
from encoder.mlm_loss import MaskedLMLoss
from encoder.model import attention_implementation, dropout_probabilities
from encoder.packing import TrainText
from encoder.prefetch import Prefetcher
from encoder.reading_corpus import ReadingExample
from encoder.train_config import TrainConfig, check_inputs
from encoder.train_state import load_state, save_state

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run did: per-step losses, final metrics, and whether it ran in bf16."""

    steps: int
    losses: list[float]
    tokens: int
    seconds: float
    tokens_per_second: float
    bf16: bool
    final_loss: float
    metrics: dict[str, Any] = field(default_factory=dict)


StepHook = Callable[[int, dict[str, float]], None]
"""Called after every optimizer step with ``(step, metrics)``; may raise to stop the run."""

BatchHook = Callable[[dict[str, torch.Tensor | None], int], dict[str, torch.Tensor | None]]
"""Rewrites a masked batch before the forward pass (knowledge injection plugs in here); a plain
batch's ``attention_mask`` is ``None`` when its blocks need none."""

LossHook = Callable[[torch.nn.Module], torch.Tensor]
"""Extra loss term on the model (e.g. an L2 pull towards the previous weights)."""


@dataclass
class Optimization:
    """What the steps update: the trained parameters by name (the NSP head's as ``nsp.*``), AdamW,
    its schedule, the NSP head (``None`` without NSP), and the step to start from (> 0 if resumed)."""

    named: list[tuple[str, torch.nn.Parameter]]
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    nsp_head: torch.nn.Module | None
    start_step: int


@dataclass
class StepsRun:
    """What the loop did: the loss of every step it ran, the tokens it saw, its wall time, each
    step's wall time (the first one pays one-time costs such as compilation) and the processes
    that shared it."""

    losses: list[float]
    tokens: int
    seconds: float
    step_seconds: list[float] = field(default_factory=list)
    world_size: int = 1
    compiled: bool = False


def train_mlm(
    bundle: MLMBundle,
    new: Sequence[TrainText],
    replay: Sequence[TrainText] = (),
    config: TrainConfig | None = None,
    resume_from: str | Path | None = None,
    progress: bool = True,
    on_step: StepHook | None = None,
    batch_hook: BatchHook | None = None,
    extra_loss: LossHook | None = None,
    reading: Sequence[ReadingExample] = (),
) -> TrainResult:
    """Continue MLM training of ``bundle.model`` in place on ``new`` text mixed with ``replay``.

    Each batch takes ``round(batch_size * replay_ratio)`` blocks from ``replay`` (when given) and
    the rest from ``new``. ``resume_from`` is a ``state_dir`` written by an earlier run with the
    same config; training continues from its step. ``batch_hook``/``extra_loss`` leave room for
    other input rewrites and regularisation towards old weights. ``reading``: exercises with
    injected knowledge (:mod:`encoder.reading_corpus`, or built from the store's facts); with
    ``config.injection_probability`` a step trains on a batch of them instead of plain blocks.
    Returns a :class:`TrainResult`. Raises ``ValueError``/``TypeError`` on bad input before any
    weight changes, and ``FloatingPointError`` if the loss becomes non-finite.
    """
    config = config or TrainConfig()
    check_inputs(new, replay, config)
    prepare_started = time.perf_counter()
    streams = prepare_streams(bundle.tokenizer, new, replay, reading, config)
    prepare_seconds = time.perf_counter() - prepare_started
    use_bf16 = _use_bf16(config, bundle.device)
    with _adapters(bundle.model, config):
        optimization = build_optimizer(bundle.model, config, bundle.device, resume_from)
        run = run_steps(bundle, streams, optimization, config, use_bf16, progress, on_step, batch_hook, extra_loss)
        result = finish(run, streams, optimization, config, use_bf16)
    result.metrics["prepare_seconds"] = prepare_seconds
    # the figure that counts for a whole run: data preparation included
    result.metrics["run_tokens_per_second"] = run.tokens / max(run.seconds + prepare_seconds, 1e-9)
    return result


def _adapters(model: BertForMaskedLM, config: TrainConfig) -> AbstractContextManager[Any]:
    """LoRA adapters for the run when ``config.lora_rank`` asks for them (merged when it ends), else nothing."""
    if config.lora_rank > 0:
        return lora_adapters(model, config.lora_rank, config.lora_alpha, config.trainable_tokens)
    return nullcontext()


def build_optimizer(
    model: BertForMaskedLM, config: TrainConfig, device: torch.device, resume_from: str | Path | None = None
) -> Optimization:
    """AdamW over the model's trainable parameters (and a fresh NSP head with ``config.nsp``), with
    warm-up then linear decay; with ``resume_from`` the weights, optimizer and schedule of a saved
    state are loaded and the run continues at its step.

    Returns :class:`Optimization`. Raises what :func:`encoder.train_state.load_state` raises.
    """
    nsp_head = None
    if config.nsp:
        hidden = model.config.hidden_size
        nsp_head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 2)).to(
            device
        )
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if nsp_head is not None:
        named += [(f"nsp.{n}", p) for n, p in nsp_head.named_parameters()]
    # fused: one kernel updates every parameter, instead of a handful of kernels per tensor
    optimizer = torch.optim.AdamW(
        _param_groups(named, config), lr=config.learning_rate, fused=device.type in ("cuda", "cpu")
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * config.steps), config.steps)
    start_step = 0
    if resume_from is not None:
        start_step = load_state(Path(resume_from), model, optimizer, scheduler, nsp_head, config)
        log.info("resumed from %s at step %d", resume_from, start_step)
    return Optimization(named, optimizer, scheduler, nsp_head, start_step)


def run_steps(
    bundle: MLMBundle,
    streams: Streams,
    optimization: Optimization,
    config: TrainConfig,
    use_bf16: bool,
    progress: bool = True,
    on_step: StepHook | None = None,
    batch_hook: BatchHook | None = None,
    extra_loss: LossHook | None = None,
) -> StepsRun:
    """The training loop, from ``optimization.start_step`` to ``config.steps`` (or until the step that
    passes ``config.max_seconds``): gradient accumulation over ``grad_accum`` micro-batches, clipping,
    one optimizer and schedule step; then the progress bar, the JSONL log, the state save and
    ``on_step``. The model is in training mode only inside; everything the run switched is restored.

    Returns :class:`StepsRun`. Raises ``FloatingPointError`` if the loss becomes non-finite, and
    whatever ``on_step`` raises to stop the run.
    """
    model, tokenizer, device = bundle.model, bundle.tokenizer, bundle.device
    optimizer, scheduler = optimization.optimizer, optimization.scheduler
    ranks = distributed.join(device)
    losses: list[float] = []
    step_seconds: list[float] = []
    tokens_seen = 0
    with contextlib.ExitStack() as stack:
        bar, log_file = stack.enter_context(
            _training_mode(model, config, use_bf16, device, progress and ranks.main, optimization.start_step, ranks)
        )
        attn = model.config._attn_implementation  # the run's backend: masks are built in its form
        sparse_last_layer = config.sparse_last_layer and supports_masked_forward(model)
        nsp = optimization.nsp_head is not None
        loss_module = MaskedLMLoss(model, optimization.nsp_head, sparse_last_layer, use_bf16, device)
        step_module = distributed.wrap(loss_module, device, nsp) if ranks.distributed else loss_module
        prefetch = device.type != "cpu" if config.prefetch is None else config.prefetch
        batches = stack.enter_context(
            Prefetcher(
                lambda d: build_batch(streams, d, tokenizer, config, nsp, attn, device, prefetch),
                config.steps * config.grad_accum,
                prefetch,
            )
        )
        started = time.perf_counter()
        window_start, window_tokens = started, 0
        for step in range(optimization.start_step, config.steps):
            step_loss, step_started = 0.0, time.perf_counter()
            for micro in range(config.grad_accum):
                # Data, masking and dropout of this micro-batch depend only on (seed, draw): exact resume.
                draw = step * config.grad_accum + micro
                batch = on_device(batches.get(draw), device) if prefetch else batches.get(draw)
                inputs = batch.tensors if batch_hook is None else batch_hook(batch.tensors, step)
                torch.manual_seed(config.seed * 1_000_003 + draw)  # dropout, reproducibly
                with distributed.no_sync(step_module, micro == config.grad_accum - 1):
                    if ranks.distributed:
                        mine = distributed.share(inputs, batch.nsp_labels, ranks)
                        loss = step_module(mine.inputs, mine.nsp_labels, (mine.mlm_divisor, mine.nsp_divisor))
                    else:
                        loss = step_module(inputs, batch.nsp_labels)
                    if extra_loss is not None:
                        loss = loss + extra_loss(model)
                    value = distributed.global_mean(loss, ranks)
                    if value != value or value in (float("inf"), float("-inf")):
                        raise FloatingPointError(
                            f"train_mlm: loss became {value} at step {step}; lower the learning rate"
                        )
                    (loss / config.grad_accum).backward()
                step_loss += value / config.grad_accum
                tokens_seen += batch.tokens
                window_tokens += batch.tokens
            grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in optimization.named], config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            step_seconds.append(time.perf_counter() - step_started)
            done = step + 1
            # torch annotates learning rates as float | Tensor (an optimizer may hold tensor ones); ours are floats
            lr = float(scheduler.get_last_lr()[0])
            metrics = {"step": done, "loss": step_loss, "lr": lr, "grad_norm": float(grad_norm)}
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{metrics['lr']:.2e}")
            if log_file is not None and (done % config.log_every == 0 or done == config.steps):
                now = time.perf_counter()
                metrics["tokens_per_s"] = window_tokens / max(now - window_start, 1e-9)
                window_start, window_tokens = now, 0
                log_file.write(json.dumps(metrics) + "\n")
                log_file.flush()
            if config.state_dir and ((config.save_every and done % config.save_every == 0) or done == config.steps):
                if ranks.main:
                    save_state(Path(config.state_dir), model, optimizer, scheduler, optimization.nsp_head, done, config)
                distributed.barrier(ranks)
            if _rank0_stops(ranks, device, done, metrics, on_step, config.max_seconds, started):
                break
    compiled = use_compile(config.compile, device) and bool(encoder_layers(model))
    return StepsRun(losses, tokens_seen, time.perf_counter() - started, step_seconds, ranks.world, compiled)


def _rank0_stops(
    ranks: distributed.Ranks,
    device: torch.device,
    done: int,
    metrics: dict[str, float],
    on_step: StepHook | None,
    max_seconds: float | None,
    started: float,
) -> bool:
    """Whether the run stops after step ``done``: rank 0 calls ``on_step`` and checks the time
    budget, and every rank follows its decision. Re-raises what ``on_step`` raised (on rank 0; the
    other ranks raise ``RuntimeError``)."""
    decision, failure = distributed.CONTINUE, None
    if ranks.main:
        try:
            if on_step is not None:
                on_step(done, metrics)
            if max_seconds is not None and time.perf_counter() - started > max_seconds:
                log.info("train_mlm: time budget of %.0f s reached after %d steps", max_seconds, done)
                decision = distributed.STOP
        except BaseException as exc:
            if not ranks.distributed:
                raise
            decision, failure = distributed.FAILED, exc
    decision = distributed.rank0_says(decision, ranks, device)
    if decision == distributed.FAILED:
        if failure is not None:
            raise failure
        raise RuntimeError(f"train_mlm: rank 0 stopped the run after step {done}")
    return decision == distributed.STOP


def finish(
    run: StepsRun, streams: Streams, optimization: Optimization, config: TrainConfig, use_bf16: bool
) -> TrainResult:
    """The run's :class:`TrainResult`: ``final_loss`` is the mean of the last tenth of the step losses
    (one step's loss is noisy), NaN if no step ran."""
    tail = run.losses[-max(1, len(run.losses) // 10) :] if run.losses else [float("nan")]
    final_loss = sum(tail) / len(tail)
    return TrainResult(
        steps=optimization.start_step + len(run.losses),
        losses=run.losses,
        tokens=run.tokens,
        seconds=run.seconds,
        tokens_per_second=run.tokens / max(run.seconds, 1e-9),
        bf16=use_bf16,
        final_loss=final_loss,
        metrics={
            "train_loss": final_loss,
            "blocks_new": streams.new_blocks,
            "blocks_replay": streams.replay_blocks,
            "config": config.to_dict(),
            "first_step_seconds": run.step_seconds[0] if run.step_seconds else float("nan"),
            "median_step_seconds": statistics.median(run.step_seconds[1:])
            if len(run.step_seconds) > 1
            else float("nan"),
            "world_size": run.world_size,
            "compiled": run.compiled,
        },
    )


def _param_groups(named: list[tuple[str, torch.nn.Parameter]], config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and LayerNorm (as in BERT); the head's own layers at
    ``head_learning_rate`` when set."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for n, p in named:
        decays = p.dim() >= 2 and "LayerNorm" not in n
        head = config.head_learning_rate is not None and n.startswith("cls.")
        groups.setdefault((decays, head), []).append(p)
    return [
        {
            "params": params,
            "weight_decay": config.weight_decay if decays else 0.0,
            "lr": config.head_learning_rate if head else config.learning_rate,
        }
        for (decays, head), params in sorted(groups.items())
    ]


def _use_bf16(config: TrainConfig, device: torch.device) -> bool:
    """``config.bf16``, where the device runs bf16 natively (emulated bf16 is slower than float32)."""
    use_bf16 = bf16_supported(device) if config.bf16 is None else (config.bf16 and bf16_supported(device))
    if config.bf16 and not use_bf16:
        log.warning("bf16 requested but %s has no native bf16; training in float32", device)
    return use_bf16


# ----------------------------------------------------------------------------- what a run switches


@contextlib.contextmanager
def _training_mode(
    model: PreTrainedModel,
    config: TrainConfig,
    use_bf16: bool,
    device: torch.device,
    progress: bool,
    start_step: int,
    ranks: distributed.Ranks | None = None,
) -> Iterator[tuple[tqdm | None, TextIO | None]]:
    """The model in training mode with the run's attention, dropout and allocator settings; yields
    the progress bar and the JSONL log file (each ``None`` when off). Everything opened or changed
    is undone on the way out, in reverse order, whether the run ends or raises."""
    with contextlib.ExitStack() as run_scope:
        main = ranks is None or ranks.main  # one process writes the log
        log_file = (
            run_scope.enter_context(open(config.log_path, "a", encoding="utf-8")) if config.log_path and main else None
        )
        bar = None
        if progress:
            bar = tqdm(total=config.steps, initial=start_step, desc="MLM", unit="step", dynamic_ncols=True)
            run_scope.callback(bar.close)
        # Under CPU bf16, eager attention: two bf16 matmuls around a softmax beat the fused CPU kernels.
        run_scope.enter_context(attention_implementation(model, _training_attention(config, model, use_bf16, device)))
        # On CPU, freed memory stays in the process: vocabulary-sized tensors are not faulted in every step.
        run_scope.enter_context(heap_reuse(device.type == "cpu" if config.reuse_heap is None else config.reuse_heap))
        run_scope.enter_context(compiled_layers(model, use_compile(config.compile, device), config.compile_mode))
        model.train()
        run_scope.enter_context(dropout_probabilities(model, config.attention_dropout, config.hidden_dropout))
        run_scope.callback(model.eval)  # registered last: undone first
        yield bar, log_file


def _training_attention(config: TrainConfig, model: PreTrainedModel, use_bf16: bool, device: torch.device) -> str:
    """``config.train_attention``, or when unset: eager under bf16 autocast on CPU, else the model's own."""
    if config.train_attention:
        return config.train_attention
    if use_bf16 and device.type == "cpu":
        return "eager"
    return model.config._attn_implementation
