"""A usable model out of the box: adapt MiniLM's untrained MLM head on general English text.

MiniLM ships as a bare encoder, so its MLM head starts random and fill-mask would be noise. The
first ``kecl init`` (or first training) runs a short MLM fine-tune on the default corpus (see
:mod:`encoder.default_corpus`; nothing is downloaded) and saves the result as the first
checkpoint, made active.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from encoder.checkpoints import active_version, load_checkpoint, save_checkpoint, set_active
from encoder.default_corpus import EVERYDAY_PASSAGES, default_corpus, everyday_sentences
from encoder.model import MLMBundle, load_mlm
from encoder.reading_corpus import reading_examples
from encoder.trainer import TrainConfig, masked_lm_loss, masked_token_accuracy, reading_accuracy, train_mlm

log = logging.getLogger(__name__)

ADAPT_CONFIG = TrainConfig(steps=500, batch_size=16, max_length=128, learning_rate=5e-4, head_learning_rate=5e-3,
                           warmup_ratio=0.06, packing="grouped", injection_probability=0.6, injection_max_length=128)
"""Full fine-tuning, masked-only logits, bf16 where native. 40% of the steps are plain MLM on the
default corpus, 60% reading exercises (:mod:`encoder.reading_corpus`; shorter sequences, so
cheaper): without them the model never learns to use injected knowledge. The fresh head learns at 10x the
encoder's rate (held-out reading 0.41 vs 0.37, loss 3.62 vs 3.65 after 500 steps; BENCHMARKS.md).
Bounded by steps, not seconds: under a time budget a busy
machine got 19 steps and a head that predicted only "the" and "." (the quality of the first
checkpoint must not depend on load)."""
ADAPT_RECIPE = 3
"""Bumped whenever the recipe changes, so a cached adaptation of an older recipe is not reused
(2: reading exercises added; 3: the head's own learning rate)."""
READING_EXERCISES = 8000
HELDOUT_READING = 200


def adapt_default(
    checkpoints_dir: str | Path,
    name_or_path: str | None = None,
    config: TrainConfig | None = None,
    eval_every: int = 25,
    heldout_passages: int = 200,
    activate: bool = True,
    force: bool = False,
    progress: bool = True,
    device: str = "auto",
) -> tuple[str, MLMBundle]:
    """Produce (or reuse) the first usable checkpoint; returns ``(version, bundle)``.

    If a version is already active and ``force`` is false, that version is loaded and returned.
    Otherwise the model is trained on the default corpus (held-out passages excluded), the
    held-out masked-token top-1 accuracy (and, when the config trains on reading exercises, the
    held-out reading accuracy: answers read from injected knowledge about invented names) is
    measured every ``eval_every`` steps, and the result is saved with the curve in
    ``metrics.json`` and (``activate``) made active.
    """
    checkpoints_dir = Path(checkpoints_dir)
    current = active_version(checkpoints_dir)
    if current and not force:
        return current, load_checkpoint(checkpoints_dir / current, device=device)
    config = config or ADAPT_CONFIG
    texts = default_corpus(seed=config.seed, everyday=EVERYDAY_PASSAGES)
    heldout, train = texts[:heldout_passages], texts[heldout_passages:]
    eval_texts = heldout[:64]
    bundle = load_mlm(name_or_path, device=device)
    reading_held, reading = [], []
    if config.injection_probability > 0:
        # No filler passages: with them reading is learned more slowly (held-out 0.26 vs 0.30 after 500
        # steps here) and the freshness facts were not answered better with distractors injected.
        exercises = reading_examples(READING_EXERCISES + HELDOUT_READING, seed=config.seed, tokenizer=bundle.tokenizer)
        reading_held, reading = exercises[:HELDOUT_READING], exercises[HELDOUT_READING:]

    def measure() -> dict[str, float]:
        out = {"heldout_top1": masked_token_accuracy(bundle, eval_texts)}
        if reading_held:
            out["heldout_reading"] = reading_accuracy(bundle, reading_held[:100], "concat", config.injection_max_length)
        return out

    started = time.perf_counter()
    curve: list[dict[str, Any]] = [{"step": 0, "seconds": 0.0, **measure()}]
    eval_seconds = 0.0

    def on_step(step: int, metrics: dict[str, float]) -> None:
        nonlocal eval_seconds
        if step % eval_every == 0:
            t0 = time.perf_counter()
            point = measure()
            eval_seconds += time.perf_counter() - t0
            bundle.model.train()
            curve.append({"step": step, "seconds": round(time.perf_counter() - started - eval_seconds, 1),
                          **point, "loss": metrics["loss"]})
            log.info("adapt step %d: %s", step, point)

    result = train_mlm(bundle, train, config=config, progress=progress, on_step=on_step, reading=reading)
    final = masked_token_accuracy(bundle, heldout)
    everyday = set(everyday_sentences(EVERYDAY_PASSAGES, config.seed))  # the same ones default_corpus mixed in
    by_source = {"everyday": [t for t in heldout if t in everyday], "docstrings": [t for t in heldout if t not in everyday]}
    metrics = {
        "kind": "default-adaptation",
        "heldout_top1": final,
        # the generated everyday sentences are far easier than the standard library's technical prose
        "heldout_top1_by_source": {k: masked_token_accuracy(bundle, v) for k, v in by_source.items() if v},
        "heldout_loss": masked_lm_loss(bundle, heldout),
        "train_seconds": round(result.seconds - eval_seconds, 1),
        "steps": result.steps,
        "tokens_per_second": result.tokens_per_second,
        "bf16": result.bf16,
        "curve": curve,
        "corpus": {"passages": len(train), "heldout_passages": len(heldout), "reading_exercises": len(reading)},
    }
    if reading_held:
        metrics["reading_top1"] = {mode: reading_accuracy(bundle, reading_held, mode, config.injection_max_length)
                                   for mode in ("closed-book", "concat", "tree")}
    version = save_checkpoint(bundle, checkpoints_dir, parent=None, metrics=metrics)
    if activate:
        set_active(checkpoints_dir, version)
    return version, bundle
