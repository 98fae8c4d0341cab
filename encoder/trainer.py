"""Continued MLM training, built for speed on CPU and GPU.

Why our own loop and not ``transformers.Trainer``: the MLM head (a 384 × 30k matmul per token)
runs only on the ~15% masked positions, sequences are packed instead of padded, and bf16
autocast is on where the hardware has it. Everything else is the textbook recipe: AdamW,
warm-up then linear decay, gradient accumulation and clipping.

Runs are reproducible and resumable: the batch and the masking at step ``s`` depend only on
``(seed, s)``, and the optimizer/scheduler state is saved with the weights, so a run resumed
from step ``s`` continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import get_linear_schedule_with_warmup

from encoder.bundle import MLMBundle, bf16_supported
from encoder.injection import injected_training_batch
from encoder.masked_forward import hidden_at, last_hidden, supports_masked_forward
from encoder.masking import IGNORE_INDEX, mask_tokens
from encoder.packing import Blocks, TrainText, block_attention_mask, build_blocks
from encoder.reading_corpus import ReadingExample

log = logging.getLogger(__name__)

STATE_WEIGHTS = "model.safetensors"
STATE_FILE = "trainer_state.pt"
_TIED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")


@dataclass
class TrainConfig:
    """Settings of one MLM training run (names as in BERT / run_mlm.py / CKL)."""

    steps: int = 200
    batch_size: int = 16
    max_length: int = 128
    learning_rate: float = 1e-4
    # Learning rate of the MLM head's own layers (transform + output bias; the decoder is tied to
    # the word embeddings and stays with the encoder). None: ``learning_rate``. A fresh head (MiniLM
    # ships without one) is random while the encoder is pretrained, so it can take a larger rate.
    head_learning_rate: float | None = None
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    whole_word_mask: bool = False
    salient_probability: float | None = 0.5  # chance to mask an entity mention (None: like any word)
    replay_ratio: float = 0.5  # share of each batch drawn from the replay stream, when given
    # "grouped" (run_mlm.py, RoBERTa FULL-SENTENCES): no mask, the fastest kernel path; "packed": documents
    # packed best-fit (~1% padding), no attention across them via a block-diagonal 4-D mask, which sends
    # SDPA to a slower masked path (float32); under CPU bf16 the trainer's eager attention adds the mask
    # at no measurable cost, and the default adaptation trains packed (encoder.default).
    packing: str = "grouped"
    nsp: bool = False  # next-sentence prediction (BERT); off, as RoBERTa showed it does not help
    seed: int = 0
    bf16: bool | None = None  # None: on where the hardware supports it
    log_path: str | Path | None = None  # JSONL: step, loss, lr, tokens/s
    log_every: int = 10
    state_dir: str | Path | None = None  # where resumable training state is written
    save_every: int = 0  # steps between state saves (0: only at the end, if state_dir is set)
    max_seconds: float | None = None  # stop early (cleanly, after a full step) past this wall time
    # Knowledge injection (K-BERT / REALM style): with this probability a step trains on reading
    # exercises (``reading=`` of train_mlm) laid out by ``injection_strategy`` ("concat", "tree" or
    # "mixed": each injected step picks one), so the model learns to read injected knowledge.
    injection_probability: float = 0.0
    injection_strategy: str = "concat"
    injection_max_length: int = 128
    # Attention-probability dropout while training (None: the model's own, 0.1 for BERT). With any
    # dropout there, PyTorch's CPU SDPA cannot use its fused flash kernel and falls back to the
    # materialised math path; 0.0 keeps the fused kernel.
    attention_dropout: float | None = None
    # Dropout on hidden states (embeddings, attention output, feed-forward output) while training;
    # None: the model's own (0.1 for BERT). Single-pass pretraining recipes (Cramming, ModernBERT)
    # train without it; 0 also skips ~10% of a CPU step spent drawing dropout masks.
    hidden_dropout: float | None = None
    # Attention implementation while training ("sdpa", "eager", …); None: "eager" under bf16 autocast
    # on CPU, where two bf16 matmuls around a softmax beat both of PyTorch's fused CPU kernels
    # (forward + backward at 16 x 12 heads x 128 x 32: 8.5 ms vs 14.5 ms flash in float32, 34 ms
    # flash in bf16; BENCHMARKS.md), else the model's own. The model's setting is restored afterwards.
    train_attention: str | None = None
    # Keep freed memory in the process for the run (glibc only): see heap_reuse. None: on for CPU training.
    reuse_heap: bool | None = None
    # Run the encoder's last layer only at the masked positions (its keys and values everywhere):
    # the same loss and gradients for ~12% less compute on 6 layers (encoder.masked_forward). Off
    # with NSP, whose head reads [CLS], and for models that are not transformers' BERT.
    sparse_last_layer: bool = True


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

BatchHook = Callable[[dict[str, torch.Tensor], int], dict[str, torch.Tensor]]
"""Rewrites a masked batch before the forward pass (knowledge injection plugs in here)."""

LossHook = Callable[[torch.nn.Module], torch.Tensor]
"""Extra loss term on the model (e.g. an L2 pull towards the previous weights)."""


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


def _check_inputs(new: Sequence[TrainText], replay: Sequence[TrainText], config: TrainConfig) -> None:
    if config.steps < 1 or config.batch_size < 1 or config.grad_accum < 1:
        raise ValueError(
            f"steps, batch_size and grad_accum must be >= 1 (got {config.steps}, {config.batch_size}, {config.grad_accum})"
        )
    if not 0.0 <= config.replay_ratio < 1.0:
        raise ValueError(f"replay_ratio={config.replay_ratio} must be in [0, 1)")
    if not 0.0 < config.mlm_probability < 1.0:
        raise ValueError(f"mlm_probability={config.mlm_probability} must be in (0, 1)")
    if isinstance(new, (str, bytes)) or isinstance(replay, (str, bytes)):
        raise TypeError("new/replay must be sequences of texts, not a single string")
    if not 0.0 <= config.injection_probability <= 1.0:
        raise ValueError(f"injection_probability={config.injection_probability} must be in [0, 1]")
    for name in ("attention_dropout", "hidden_dropout"):
        p = getattr(config, name)
        if p is not None and not 0.0 <= p < 1.0:
            raise ValueError(f"{name}={p} must be in [0, 1)")
    if config.injection_strategy not in ("concat", "tree", "mixed"):
        raise ValueError(f"injection_strategy={config.injection_strategy!r}: expected concat, tree or mixed")


def _epoch_rows(n: int, per_step: int, seed: int, step: int) -> list[int]:
    """Rows ``step * per_step …`` of a stream that visits ``0..n-1`` in a fresh seeded order each epoch."""
    start = step * per_step
    index: list[int] = []
    while len(index) < per_step:
        epoch, offset = divmod(start + len(index), n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        index.extend(order[offset : offset + per_step - len(index)].tolist())
    return index


class _Stream:
    """Cycles through blocks in a seeded order; the rows for step ``s`` depend only on ``(seed, s)``."""

    def __init__(self, blocks: Blocks, per_step: int, seed: int):
        self.blocks, self.per_step, self.seed = blocks, per_step, seed

    def rows(self, step: int) -> Blocks:
        return self.blocks.select(torch.tensor(_epoch_rows(len(self.blocks), self.per_step, self.seed, step)))


def _reading_batch(
    tokenizer,
    examples: Sequence[ReadingExample],
    strategy: str,
    config: TrainConfig,
    generator: torch.Generator,
    attn: str,
) -> dict[str, torch.Tensor]:
    """An injected MLM batch: only the answer span is masked. Masking other text tokens as well would
    often hide the subject or the relation word, the very keys that say which statement to read."""
    return injected_training_batch(
        tokenizer,
        [e.text for e in examples],
        [list(e.facts) for e in examples],
        [list(e.passages) for e in examples],
        strategy=strategy,
        max_length=config.injection_max_length,
        mlm_probability=0.0,
        salient_probability=1.0,
        whole_word_mask=config.whole_word_mask,
        mask_replace_prob=config.mask_replace_prob,
        random_replace_prob=config.random_replace_prob,
        generator=generator,
        attn_implementation=attn,
    )


def _nsp_pairs(blocks: Blocks, tokenizer, generator: torch.Generator) -> tuple[Blocks, torch.Tensor]:
    """BERT's next-sentence task: split each block's first document in two halves; in 50% of
    rows the second half is replaced by the start of another row's document. Returns the new
    blocks (segment B gets token type 1 via ``segment_ids``) and labels (0 = is next)."""
    n, length = blocks.input_ids.shape
    ids = blocks.input_ids.clone()
    is_random = torch.rand(n, generator=generator) < 0.5
    partner = torch.randint(n, (n,), generator=generator)
    token_type = torch.zeros_like(ids)
    for r in range(n):
        doc = (blocks.segment_ids[r] == 0).nonzero().flatten()
        body = doc[1:-1]
        if body.numel() < 4:
            is_random[r] = False
            continue
        half = body[body.numel() // 2]
        end = int(doc[-1])
        if is_random[r] and partner[r] != r:
            src = blocks.input_ids[partner[r], 1:]
            k = end - int(half)
            ids[r, half:end] = src[:k].masked_fill(src[:k] == tokenizer.pad_token_id, tokenizer.sep_token_id)
        else:
            is_random[r] = False
        token_type[r, half : end + 1] = 1
    out = Blocks(ids, blocks.position_ids, blocks.segment_ids, blocks.unit_ids, blocks.salient)
    out.token_type_ids = token_type  # type: ignore[attr-defined]
    return out, is_random.long()


def _set_dropout(model: torch.nn.Module, attention: float | None, hidden: float | None) -> Callable[[], None]:
    """Set the attention-probability dropout of every self-attention module and/or every other
    dropout of the model (hidden states); returns an undo."""
    changed = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Dropout):
            continue
        p = attention if name.endswith("attention.self.dropout") else hidden
        if p is not None:
            changed.append((module, module.p))
            module.p = p

    def undo() -> None:
        for dropout, old in changed:
            dropout.p = old

    return undo


def _training_attention(config: TrainConfig, model: torch.nn.Module, use_bf16: bool, device: torch.device) -> str:
    """``config.train_attention``, or when unset: eager under bf16 autocast on CPU, else the model's own."""
    if config.train_attention:
        return config.train_attention
    if use_bf16 and device.type == "cpu":
        return "eager"
    return model.config._attn_implementation


def _set_attention_for_run(model: torch.nn.Module, implementation: str) -> Callable[[], None]:
    """Switch the model's attention implementation for the run; returns an undo."""
    previous = model.config._attn_implementation
    if implementation == previous:
        return lambda: None
    model.set_attn_implementation(implementation)
    return lambda: model.set_attn_implementation(previous)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # mallopt parameters, <malloc.h>
_heap_lock = threading.Lock()
_heap_users = 0


def _glibc() -> Any:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def heap_reuse(on: bool = True) -> Iterator[bool]:
    """Serve every allocation from the process heap and keep freed memory there, for the duration.

    Why: glibc hands each block above its mmap threshold (at most 32 MiB) straight to the kernel
    and returns it on free, so every step of a BERT run page-faults its vocabulary-sized tensors
    (the tied 30k x 384 embedding gradient and its bf16 copy, the masked logits) back in: about a
    seventh of a CPU step here (BENCHMARKS.md). Afterwards glibc's settings are put back where its
    own dynamic threshold would have taken them and the heap is trimmed (free pages go back to the
    system; free blocks stay in glibc's bins, so later allocations they can hold come from there).
    Yields whether the setting applies (glibc on Linux); nested and concurrent uses are counted.
    """
    global _heap_users
    libc = _glibc() if on else None
    if libc is None:
        yield False
        return
    with _heap_lock:
        if _heap_users == 0:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
        _heap_users += 1
    try:
        yield True
    finally:
        with _heap_lock:
            _heap_users -= 1
            if _heap_users == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
                libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
                libc.mallopt(_M_MMAP_MAX, 65536)
                libc.malloc_trim(0)


def _plain_batch(
    streams: list[_Stream],
    draw: int,
    gen: torch.Generator,
    tokenizer,
    config: TrainConfig,
    nsp_head,
    attn: str,
    device: torch.device,
):
    """The closed-book batch of ``draw``: ``(batch, n_tokens, nsp_labels)``."""
    blocks = Blocks.cat([s.rows(draw) for s in streams])
    nsp_labels = None
    token_type_ids = None
    if nsp_head is not None:
        blocks, nsp_labels = _nsp_pairs(blocks, tokenizer, gen)
        token_type_ids = blocks.token_type_ids.to(device)  # type: ignore[attr-defined]
    input_ids, labels = mask_tokens(
        blocks.input_ids,
        blocks.unit_ids,
        mask_token_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        mlm_probability=config.mlm_probability,
        mask_replace_prob=config.mask_replace_prob,
        random_replace_prob=config.random_replace_prob,
        salient=blocks.salient,
        salient_probability=config.salient_probability,
        generator=gen,
    )
    batch = {
        "input_ids": input_ids.to(device),
        "position_ids": blocks.position_ids.to(device),
        "attention_mask": block_attention_mask(blocks.segment_ids, attn),
        "labels": labels.to(device),
    }
    if batch["attention_mask"] is not None:
        batch["attention_mask"] = batch["attention_mask"].to(device)
    if token_type_ids is not None:
        batch["token_type_ids"] = token_type_ids
    return batch, int((blocks.segment_ids >= 0).sum()), nsp_labels


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
    _check_inputs(new, replay, config)
    model, tokenizer = bundle.model, bundle.tokenizer
    device = bundle.device

    new_blocks = build_blocks(tokenizer, new, config.max_length, config.packing, config.whole_word_mask)
    if len(new_blocks) == 0:
        raise ValueError("train_mlm: no trainable text in 'new' (empty or whitespace only)")
    replay_blocks = (
        build_blocks(tokenizer, replay, config.max_length, config.packing, config.whole_word_mask) if replay else None
    )
    n_replay = round(config.batch_size * config.replay_ratio) if replay_blocks is not None and len(replay_blocks) else 0
    streams = [_Stream(new_blocks, config.batch_size - n_replay, config.seed)]
    if n_replay:
        streams.append(_Stream(replay_blocks, n_replay, config.seed + 1))

    inject_p = config.injection_probability if reading else 0.0
    if config.injection_probability > 0 and not reading:  # e.g. `kecl train` on plain files: expected
        log.debug(
            "injection_probability=%.2f without reading exercises: every step is closed-book",
            config.injection_probability,
        )

    use_bf16 = bf16_supported(device) if config.bf16 is None else (config.bf16 and bf16_supported(device))
    if config.bf16 and not use_bf16:
        log.warning("bf16 requested but %s has no native bf16; training in float32", device)

    nsp_head = None
    if config.nsp:
        hidden = model.config.hidden_size
        nsp_head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 2)).to(
            device
        )

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if nsp_head is not None:
        named += [(f"nsp.{n}", p) for n, p in nsp_head.named_parameters()]
    optimizer = torch.optim.AdamW(
        _param_groups(named, config), lr=config.learning_rate, fused=device.type in ("cuda", "cpu")
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * config.steps), config.steps)

    start_step = 0
    if resume_from is not None:
        start_step = _load_state(Path(resume_from), model, optimizer, scheduler, nsp_head, config)
        log.info("resumed from %s at step %d", resume_from, start_step)

    # Everything the run opens or changes on the model is undone by closing this, in reverse order.
    run_scope = contextlib.ExitStack()
    log_file = run_scope.enter_context(open(config.log_path, "a", encoding="utf-8")) if config.log_path else None
    losses: list[float] = []
    tokens_seen = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=start_step, desc="MLM", unit="step", dynamic_ncols=True)
        run_scope.callback(bar.close)
    run_scope.callback(_set_attention_for_run(model, _training_attention(config, model, use_bf16, device)))
    attn = model.config._attn_implementation
    sparse_last_layer = config.sparse_last_layer and supports_masked_forward(model)
    run_scope.enter_context(heap_reuse(device.type == "cpu" if config.reuse_heap is None else config.reuse_heap))
    model.train()
    run_scope.callback(_set_dropout(model, config.attention_dropout, config.hidden_dropout))
    started = time.perf_counter()
    window_start, window_tokens = started, 0
    try:
        for step in range(start_step, config.steps):
            step_loss = 0.0
            for micro in range(config.grad_accum):
                # Data and masking for this step depend only on (seed, step): exact resume.
                draw = step * config.grad_accum + micro
                gen = torch.Generator().manual_seed(config.seed * 1_000_003 + draw)
                if inject_p and float(torch.rand(1, generator=gen)) < inject_p:
                    strategy = config.injection_strategy
                    if strategy == "mixed":
                        strategy = ("concat", "tree")[int(torch.randint(2, (1,), generator=gen))]
                    rows = _epoch_rows(len(reading), config.batch_size, config.seed + 2, draw)
                    batch = _reading_batch(tokenizer, [reading[i] for i in rows], strategy, config, gen, attn)
                    n_tokens = int((batch["input_ids"] != tokenizer.pad_token_id).sum())
                    batch = {k: v.to(device) for k, v in batch.items()}
                    nsp_labels = None
                else:
                    batch, n_tokens, nsp_labels = _plain_batch(
                        streams, draw, gen, tokenizer, config, nsp_head, attn, device
                    )
                if batch_hook is not None:
                    batch = batch_hook(batch, step)
                torch.manual_seed(config.seed * 1_000_003 + draw)  # dropout, reproducibly
                # The MLM head only where a token is masked: ~7x less head compute than all positions.
                predicted = batch["labels"] != IGNORE_INDEX
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    if sparse_last_layer and nsp_labels is None:
                        logits = model.cls(hidden_at(model, batch, predicted))
                    else:
                        hidden = last_hidden(model, batch)
                        logits = model.cls(hidden[predicted])
                loss = F.cross_entropy(logits.float(), batch["labels"][predicted])
                if nsp_head is not None and nsp_labels is not None:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        nsp_logits = nsp_head(hidden[:, 0])
                    loss = loss + F.cross_entropy(nsp_logits.float(), nsp_labels.to(device))
                if extra_loss is not None:
                    loss = loss + extra_loss(model)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"train_mlm: loss became {loss.item()} at step {step}; lower the learning rate"
                    )
                (loss / config.grad_accum).backward()
                step_loss += loss.item() / config.grad_accum
                tokens_seen += n_tokens
                window_tokens += n_tokens
            grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in named], config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            done = step + 1
            metrics = {"step": done, "loss": step_loss, "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm)}
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
                _save_state(Path(config.state_dir), model, optimizer, scheduler, nsp_head, done, config)
            if on_step is not None:
                on_step(done, metrics)
            if config.max_seconds is not None and time.perf_counter() - started > config.max_seconds:
                log.info("train_mlm: time budget of %.0f s reached after %d steps", config.max_seconds, done)
                break
    finally:
        model.eval()
        run_scope.close()
    seconds = time.perf_counter() - started
    tail = losses[-max(1, len(losses) // 10) :] if losses else [float("nan")]
    return TrainResult(
        steps=start_step + len(losses),
        losses=losses,
        tokens=tokens_seen,
        seconds=seconds,
        tokens_per_second=tokens_seen / max(seconds, 1e-9),
        bf16=use_bf16,
        final_loss=sum(tail) / len(tail),
        metrics={
            "train_loss": sum(tail) / len(tail),
            "blocks_new": len(new_blocks),
            "blocks_replay": len(replay_blocks) if replay_blocks is not None else 0,
            "config": _jsonable(config),
        },
    )


def _jsonable(config: TrainConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}


def _save_state(folder: Path, model, optimizer, scheduler, nsp_head, step: int, config: TrainConfig) -> None:
    """Weights + optimizer + scheduler, written to temporary names then renamed (never half-written)."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = {
        k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in _TIED
    }  # tied to the word embeddings / the head bias
    tmp_w, tmp_s = folder / (STATE_WEIGHTS + ".tmp"), folder / (STATE_FILE + ".tmp")
    save_file(weights, str(tmp_w))
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "nsp_head": nsp_head.state_dict() if nsp_head is not None else None,
            "config": _jsonable(config),
        },
        tmp_s,
    )
    os.replace(tmp_w, folder / STATE_WEIGHTS)
    os.replace(tmp_s, folder / STATE_FILE)


def _load_state(folder: Path, model, optimizer, scheduler, nsp_head, config: TrainConfig) -> int:
    weights_path, state_path = folder / STATE_WEIGHTS, folder / STATE_FILE
    if not (weights_path.is_file() and state_path.is_file()):
        raise FileNotFoundError(f"resume_from={folder}: expected {STATE_WEIGHTS} and {STATE_FILE} there")
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    if state["config"].get("steps") != config.steps:
        raise ValueError(
            f"resume_from={folder}: saved run had steps={state['config'].get('steps')}, this one {config.steps}"
        )
    missing, unexpected = model.load_state_dict(
        {k: v.to(next(model.parameters()).device) for k, v in load_file(str(weights_path)).items()}, strict=False
    )
    missing = [k for k in missing if k not in _TIED]
    if missing or unexpected:
        raise ValueError(
            f"resume_from={folder}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.tie_weights()
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if nsp_head is not None and state["nsp_head"] is not None:
        nsp_head.load_state_dict(state["nsp_head"])
    return int(state["step"])


def _labelled_logits(model, batch: dict[str, torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """The MLM head's logits at the labelled positions of ``batch`` (the head runs nowhere else),
    and the gold ids there."""
    predicted = batch["labels"] != IGNORE_INDEX
    return model.cls(hidden_at(model, batch, predicted)), batch["labels"][predicted]


def _heldout_predictions(
    bundle: MLMBundle,
    texts: Sequence[TrainText],
    max_length: int,
    batch_size: int,
    mlm_probability: float,
    seed: int,
    who: str,
    **mask_options: float,
):
    """Yield ``(logits, gold)`` at the masked positions of ``texts``, batch by batch, under a fixed
    seeded masking (the shared loop of the held-out metrics). Raises ``ValueError`` without text."""
    # Documents in their given order: the layout decides which tokens the seeded masking picks, so
    # this keeps the held-out numbers comparable across versions of the trainer's packing.
    blocks = build_blocks(bundle.tokenizer, texts, max_length, "packed", fit="sequential")
    if len(blocks) == 0:
        raise ValueError(f"{who}: no text")
    gen = torch.Generator().manual_seed(seed)
    model, device = bundle.model, bundle.device
    attn = model.config._attn_implementation
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(blocks), batch_size):
            part = blocks.select(torch.arange(start, min(start + batch_size, len(blocks))))
            input_ids, labels = mask_tokens(
                part.input_ids,
                part.unit_ids,
                mask_token_id=bundle.tokenizer.mask_token_id,
                vocab_size=len(bundle.tokenizer),
                mlm_probability=mlm_probability,
                generator=gen,
                **mask_options,
            )
            mask = block_attention_mask(part.segment_ids, attn)
            yield _labelled_logits(
                model,
                {
                    "input_ids": input_ids.to(device),
                    "position_ids": part.position_ids.to(device),
                    "attention_mask": mask.to(device) if mask is not None else None,
                    "labels": labels.to(device),
                },
            )


def masked_lm_loss(
    bundle: MLMBundle,
    texts: Sequence[TrainText],
    max_length: int = 128,
    batch_size: int = 32,
    mlm_probability: float = 0.15,
    seed: int = 0,
) -> float:
    """Held-out MLM loss (mean cross-entropy on masked tokens) with a fixed seeded masking."""
    total, count = 0.0, 0
    for logits, gold in _heldout_predictions(
        bundle, texts, max_length, batch_size, mlm_probability, seed, "masked_lm_loss"
    ):
        total += float(F.cross_entropy(logits.float(), gold, reduction="sum"))
        count += int(gold.numel())
    return total / max(count, 1)


def masked_token_accuracy(
    bundle: MLMBundle,
    texts: Sequence[TrainText],
    max_length: int = 128,
    batch_size: int = 32,
    mlm_probability: float = 0.15,
    seed: int = 0,
) -> float:
    """Held-out masked-token top-1 accuracy with a fixed seeded masking (all chosen tokens are
    replaced by [MASK], so it measures prediction, not copying)."""
    correct, count = 0, 0
    for logits, gold in _heldout_predictions(
        bundle,
        texts,
        max_length,
        batch_size,
        mlm_probability,
        seed,
        "masked_token_accuracy",
        mask_replace_prob=1.0,
        random_replace_prob=0.0,
    ):
        correct += int((logits.argmax(-1) == gold).sum())
        count += int(gold.numel())
    return correct / max(count, 1)


def reading_accuracy(
    bundle: MLMBundle,
    examples: Sequence[ReadingExample],
    strategy: str = "concat",
    max_length: int = 128,
    batch_size: int = 32,
) -> float:
    """Top-1 accuracy on the answer tokens of reading exercises, with their knowledge injected by
    ``strategy`` (``"closed-book"``: nothing injected — the answers are invented, so this stays
    near chance and the gap to it is what reading adds). Only the answer is masked, all [MASK]."""
    if not examples:
        raise ValueError("reading_accuracy: no examples")
    model, device = bundle.model, bundle.device
    attn = model.config._attn_implementation
    model.eval()
    correct, count = 0, 0
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            part = examples[start : start + batch_size]
            batch = injected_training_batch(
                bundle.tokenizer,
                [e.text for e in part],
                [list(e.facts) for e in part],
                [list(e.passages) for e in part],
                strategy=strategy,
                max_length=max_length,
                mlm_probability=0.0,
                salient_probability=1.0,
                mask_replace_prob=1.0,
                random_replace_prob=0.0,
                attn_implementation=attn,
            )
            logits, gold = _labelled_logits(model, {k: v.to(device) for k, v in batch.items()})
            correct += int((logits.argmax(-1) == gold).sum())
            count += int(gold.numel())
    return correct / max(count, 1)
