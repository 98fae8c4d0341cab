"""The settings of one MLM training run (:func:`encoder.trainer.train_mlm`).

Its own module so that the trainer and the batch builders (:mod:`encoder.batches`) can both read
it without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from encoder.packing import TrainText


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
    injection_strategy: Literal["concat", "tree", "mixed"] = "concat"
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
    # on CPU, where at BERT's short sequences two bf16 matmuls around a softmax beat both of PyTorch's
    # fused CPU kernels (flash in float32 and in bf16), else the model's own. The model's setting is
    # restored afterwards.
    train_attention: str | None = None
    # Keep freed memory in the process for the run (glibc only): see heap_reuse. None: on for CPU training.
    reuse_heap: bool | None = None
    # Run the encoder's last layer only at the masked positions (its keys and values everywhere):
    # the same loss and gradients for ~12% less compute on 6 layers (encoder.masked_forward). Off
    # with NSP, whose head reads [CLS], and for models that are not transformers' BERT.
    sparse_last_layer: bool = True
    # Where tokenised and packed blocks are kept between runs, keyed by corpus content, tokenizer,
    # block length and packing (encoder.block_cache); None: prepared afresh every run.
    block_cache_dir: str | Path | None = None
    # Build the batch of the next step on a background thread while this one runs. None: on for an
    # accelerator, off on CPU, where the step's matmuls already use every core. Batches are the
    # same either way (each depends only on the seed and its step).
    prefetch: bool | None = None
    # Run the encoder's layers compiled with torch.compile (encoder.compiled). None: on for CUDA,
    # off on CPU. The first step pays the compilation; the result's metrics report its time.
    compile: bool | None = None
    # torch.compile's mode for the layers (None: its default; "reduce-overhead": CUDA graphs, for
    # small models whose GPU steps are bound by kernel launches; "max-autotune": tuned kernels).
    compile_mode: str | None = None
    # LoRA adapters (encoder.adapters): > 0 trains rank-r adapters on every linear layer with the
    # pretrained weights frozen, merged into the weights when the run ends; 0: full fine-tuning.
    lora_rank: int = 0
    lora_alpha: int | None = None  # the adapters' scale is alpha / rank; None: 2 * rank
    # Word-piece ids whose embedding rows train in full beside the adapters (pieces new to the
    # vocabulary have no pretrained row to keep); ignored without LoRA, where every row trains.
    trainable_tokens: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as strings): recorded with the run's result and its saved state."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def check_inputs(new: Sequence[TrainText], replay: Sequence[TrainText], config: TrainConfig) -> None:
    """Refuse bad settings and a bare string before anything is tokenised or changed.

    Raises ``ValueError`` for a setting out of range, ``TypeError`` for a string given as ``new``/``replay``.
    """
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
    if config.lora_rank < 0:
        raise ValueError(f"lora_rank={config.lora_rank} must be >= 0 (0: full fine-tuning)")
    if config.injection_strategy not in ("concat", "tree", "mixed"):
        raise ValueError(f"injection_strategy={config.injection_strategy!r}: expected concat, tree or mixed")
