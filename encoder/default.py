"""A usable model out of the box: adapt MiniLM's untrained MLM head on general English text.

MiniLM ships as a bare encoder, so its MLM head starts random and fill-mask would be noise. The
first ``kecl init`` (or first training) runs a short MLM fine-tune on the default corpus (see
:mod:`encoder.default_corpus`; nothing is downloaded) and saves the result as the first
checkpoint, made active.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from encoder.bundle import MLMBundle
from encoder.checkpoints import active_version, load_checkpoint, save_checkpoint, set_active
from encoder.default_corpus import EVERYDAY_PASSAGES, default_corpus, everyday_sentences
from encoder.delta import apply_delta, read_delta_header, weights_fingerprint
from encoder.metrics import masked_lm_loss, masked_token_accuracy, reading_accuracy
from encoder.model import load_mlm
from encoder.reading_corpus import ReadingExample, reading_examples
from encoder.train_config import TrainConfig
from encoder.trainer import train_mlm

log = logging.getLogger(__name__)

ADAPT_PHASES = (
    TrainConfig(
        steps=530,
        batch_size=16,
        max_length=128,
        learning_rate=3.5e-4,
        head_learning_rate=5e-3,
        warmup_ratio=0.06,
        packing="packed",
        attention_dropout=0.0,
        hidden_dropout=0.0,
    ),
    TrainConfig(
        steps=300,
        batch_size=16,
        max_length=128,
        learning_rate=5e-4,
        head_learning_rate=5e-3,
        warmup_ratio=0.06,
        packing="grouped",
        injection_probability=0.6,
        injection_max_length=128,
    ),
)
"""Two runs, each with its own warm-up and decay; full fine-tuning, masked-only logits, bf16 where native.

1. Plain MLM on the default corpus without dropout (the trainer's fastest step), documents packed
   best-fit without attention across them (as the held-out passages and fill-mask queries are
   read): the fresh head and the encoder learn to predict words.
2. 60% reading exercises (:mod:`encoder.reading_corpus`; shorter sequences, so cheaper), 40% MLM
   grouped as run_mlm.py does, with the model's dropout: without the exercises the model never
   learns to use injected knowledge. The phase gives up a little masked top-1 for much better
   reading. On packed blocks (or at phase 1's learning rate) it would keep more top-1 but read far
   worse: attending across documents in the MLM blocks is what the reading exercises build on.

Plain MLM comes first because mixing reading in from the first step leaves the head much worse at
predicting words, for the same reading accuracy. The fresh head learns at 10x the encoder's rate:
it starts random while the encoder is pretrained. Bounded by steps, not seconds: under a time budget
a busy machine would run only a few steps and leave a head that predicts "the" and "." everywhere
(the quality of the first checkpoint must not depend on load)."""
ADAPT_RECIPE = 5
"""Version of the adaptation recipe (:data:`ADAPT_PHASES`, its corpus and exercises), recorded in the
checkpoint's metrics and part of the key under which an adapted checkpoint is cached: bump it
whenever the recipe changes, so an adaptation made by an older recipe is not reused."""
SHIPPED_DIR = Path(__file__).parent / "data" / "adaptations"
"""Adaptations shipped with kecl (see :mod:`encoder.delta`, made by ``scripts/make_default_delta.py``):
each applies only to the pretrained weights it was made from, whatever their name or path."""
READING_EXERCISES = 8000
HELDOUT_READING = 200


def adapt_default(
    checkpoints_dir: str | Path,
    name_or_path: str,
    phases: Sequence[TrainConfig] | None = None,
    eval_every: int | None = None,
    heldout_passages: int = 200,
    activate: bool = True,
    force: bool = False,
    progress: bool = True,
    device: str = "auto",
    name: str | None = None,
    bf16: bool = True,
    shipped_dir: str | Path | None = SHIPPED_DIR,
) -> tuple[str, MLMBundle]:
    """Produce (or reuse) the first usable checkpoint; returns ``(version, bundle)``.

    If a version is already active and ``force`` is false, that version is loaded and returned.
    Otherwise the model is trained on the default corpus (held-out passages excluded), one run per
    phase (:data:`ADAPT_PHASES`); the held-out masked-token top-1 accuracy (and, when a phase trains
    on reading exercises, the held-out reading accuracy: answers read from injected knowledge about
    invented names) is measured on all held-out passages at the end of each phase and, for a learning
    curve, every ``eval_every`` steps (None: no curve — each point costs about two training steps, and
    the first run of a machine without bf16 waits for all of them); the result is saved with the
    curve in ``metrics.json`` and (``activate``) made active.
    ``name_or_path`` is the base model (a Hugging Face id or a local folder), ``name`` how its
    metadata names it (default: ``name_or_path``). ``bf16=False`` trains in float32 even where
    bf16 is native (the phases' own ``bf16`` applies otherwise).

    With the default phases, an adaptation in ``shipped_dir`` made from the same pretrained weights
    and recipe is applied instead of training (seconds instead of minutes); its metrics are those
    measured when it was made. ``shipped_dir=None`` always trains.
    """
    checkpoints_dir = Path(checkpoints_dir)
    current = active_version(checkpoints_dir)
    if current and not force:
        return current, load_checkpoint(checkpoints_dir / current, device=device)
    if phases is not None and not phases:
        raise ValueError("adapt_default: no phases")
    bundle = load_mlm(name_or_path, device=device, name=name)
    # A shipped adaptation is the default recipe's result, so it stands in only for that recipe.
    shipped = apply_shipped_adaptation(bundle, shipped_dir) if phases is None and shipped_dir else None
    if shipped is not None:
        metrics = {**shipped_metrics(*shipped), "kind": "default-adaptation", "recipe": ADAPT_RECIPE}
        version = save_checkpoint(bundle, checkpoints_dir, parent=None, metrics=metrics)
        if activate:
            set_active(checkpoints_dir, version)
        return version, bundle
    phases = list(ADAPT_PHASES if phases is None else phases)
    if not bf16:
        phases = [dataclasses.replace(c, bf16=False) for c in phases]
    data = adaptation_data(
        bundle.tokenizer, phases[0].seed, heldout_passages, any(c.injection_probability > 0 for c in phases)
    )
    heldout, train, reading_held, reading = data.heldout, data.train, data.reading_held, data.reading
    eval_texts = heldout[:64]
    reading_length = max(c.injection_max_length for c in phases)

    def measure() -> dict[str, float]:
        out = {"heldout_top1": masked_token_accuracy(bundle, eval_texts)}
        if reading_held:
            out["heldout_reading"] = reading_accuracy(bundle, reading_held[:100], "concat", reading_length)
        return out

    curve: list[dict[str, Any]] = [{"step": 0, "seconds": 0.0, **measure()}] if eval_every else []
    done_steps, done_seconds = 0, 0.0
    phase_metrics: list[dict[str, Any]] = []
    results = []
    for config in phases:
        started, eval_seconds = time.perf_counter(), 0.0

        # The phase's offsets are bound as defaults: train_mlm calls this within the same iteration.
        def on_step(
            step: int,
            metrics: dict[str, float],
            started: float = started,
            done_steps: int = done_steps,
            done_seconds: float = done_seconds,
        ) -> None:
            nonlocal eval_seconds
            if eval_every and step % eval_every == 0:
                t0 = time.perf_counter()
                point = measure()
                eval_seconds += time.perf_counter() - t0
                bundle.model.train()
                seconds = done_seconds + time.perf_counter() - started - eval_seconds
                curve.append(
                    {"step": done_steps + step, "seconds": round(seconds, 1), **point, "loss": metrics["loss"]}
                )
                log.info("adapt step %d: %s", done_steps + step, point)

        result = train_mlm(bundle, train, config=config, progress=progress, on_step=on_step, reading=reading)
        results.append(result)
        done_steps += result.steps
        done_seconds += result.seconds - eval_seconds
        phase_metrics.append(
            {
                "steps": result.steps,
                "train_seconds": round(result.seconds - eval_seconds, 1),
                "reading": config.injection_probability > 0,
                "heldout_top1": masked_token_accuracy(bundle, heldout),
            }
        )
    metrics = {
        "kind": "default-adaptation",
        "recipe": ADAPT_RECIPE,
        **adaptation_scores(bundle, data, reading_length, heldout_top1=phase_metrics[-1]["heldout_top1"]),
        "train_seconds": round(done_seconds, 1),
        "steps": done_steps,
        "tokens_per_second": sum(r.tokens for r in results) / max(sum(r.seconds for r in results), 1e-9),
        "bf16": results[-1].bf16,
        "phases": phase_metrics,
        "curve": curve,
        "corpus": {"passages": len(train), "heldout_passages": len(heldout), "reading_exercises": len(reading)},
    }
    version = save_checkpoint(bundle, checkpoints_dir, parent=None, metrics=metrics)
    if activate:
        set_active(checkpoints_dir, version)
    return version, bundle


@dataclasses.dataclass
class AdaptationData:
    """The adaptation's text: training passages and reading exercises, and their held-out parts."""

    heldout: list[str]
    train: list[str]
    reading_held: list[ReadingExample]
    reading: list[ReadingExample]
    everyday: set[str]  # the generated everyday sentences among the passages


def adaptation_data(
    tokenizer: PreTrainedTokenizerBase,
    seed: int = ADAPT_PHASES[0].seed,
    heldout_passages: int = 200,
    reading: bool = True,
) -> AdaptationData:
    """The default corpus split into held-out and training passages, and (``reading``) the reading
    exercises likewise; the same for the same seed, so an adaptation is measured on what it never saw."""
    texts = default_corpus(seed=seed, everyday=EVERYDAY_PASSAGES)
    exercises = (
        # No filler passages: with them reading is learned more slowly, and facts are not answered
        # better with distractors injected.
        reading_examples(READING_EXERCISES + HELDOUT_READING, seed=seed, tokenizer=tokenizer) if reading else []
    )
    return AdaptationData(
        heldout=texts[:heldout_passages],
        train=texts[heldout_passages:],
        reading_held=exercises[:HELDOUT_READING],
        reading=exercises[HELDOUT_READING:],
        everyday=set(everyday_sentences(EVERYDAY_PASSAGES, seed)),  # the same ones default_corpus mixed in
    )


def adaptation_scores(
    bundle: MLMBundle, data: AdaptationData, reading_length: int = 128, heldout_top1: float | None = None
) -> dict[str, Any]:
    """How well ``bundle`` predicts held-out words (top-1, by source, loss) and, when ``data`` has
    reading exercises, reads answers from injected knowledge in each injection mode.
    ``heldout_top1``: the top-1 on ``data.heldout`` when the caller has just measured it."""
    by_source = {
        "everyday": [t for t in data.heldout if t in data.everyday],
        "docstrings": [t for t in data.heldout if t not in data.everyday],
    }
    scores: dict[str, Any] = {
        "heldout_top1": masked_token_accuracy(bundle, data.heldout) if heldout_top1 is None else heldout_top1,
        # the generated everyday sentences are far easier than the standard library's technical prose
        "heldout_top1_by_source": {k: masked_token_accuracy(bundle, v) for k, v in by_source.items() if v},
        "heldout_loss": masked_lm_loss(bundle, data.heldout),
    }
    if data.reading_held:
        scores["reading_top1"] = {
            mode: reading_accuracy(bundle, data.reading_held, mode, reading_length)
            for mode in ("closed-book", "concat", "tree")
        }
    return scores


def apply_shipped_adaptation(bundle: MLMBundle, shipped_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """Apply the adaptation in ``shipped_dir`` made for ``bundle``'s pretrained weights by this
    recipe, if there is one; returns its path and ``info`` (the bundle's model now adapted) or None
    (untouched).

    A file that cannot be read is logged and skipped: the caller then trains instead."""
    fingerprint = weights_fingerprint(bundle.model)
    for path in sorted(Path(shipped_dir).glob("*.safetensors")):
        try:
            base, info = read_delta_header(path)
            if base != fingerprint or info.get("recipe") != ADAPT_RECIPE:
                continue
            apply_delta(bundle.model, path, fingerprint)
        except Exception as exc:  # noqa: BLE001 - a damaged shipped file means training, never a failed init
            log.warning("shipped adaptation %s unusable (%s); training instead", path, exc)
            continue
        log.info("applied the shipped adaptation %s (no training needed)", path.name)
        return path, info
    return None


def shipped_metrics(path: Path, info: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint metrics of a shipped adaptation (its file and ``info``): those measured when it
    was made, and what was applied."""
    return {
        **info.get("metrics", {}),
        "shipped": {k: v for k, v in info.items() if k != "metrics"} | {"file": path.name},
    }
