"""Held-out metrics of a masked LM: loss and top-1 accuracy on masked tokens, and reading accuracy.

Each runs under a fixed seeded masking (or on fixed answer spans), so two versions of a model are
compared on exactly the same predictions. Like the trainer, the MLM head runs only where a token
is predicted, and the last layer only there too (:func:`encoder.masked_forward.hidden_at`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, TypedDict

import torch
import torch.nn.functional as F
from transformers import BertForMaskedLM

from encoder.bundle import MLMBundle
from encoder.injection import Strategy, injected_training_batch
from encoder.masked_forward import hidden_at
from encoder.masking import IGNORE_INDEX, mask_tokens
from encoder.packing import TrainText, block_attention_mask, build_blocks
from encoder.reading_corpus import ReadingExample

if TYPE_CHECKING:
    from typing import Unpack


class _ReplaceSplit(TypedDict, total=False):
    """How :func:`encoder.masking.mask_tokens` replaces the chosen tokens (its defaults when left out)."""

    mask_replace_prob: float
    random_replace_prob: float


def _labelled_logits(
    model: BertForMaskedLM, batch: Mapping[str, torch.Tensor | None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The MLM head's logits at the labelled positions of ``batch`` (the head runs nowhere else),
    and the gold ids there."""
    labels = batch["labels"]
    if labels is None:
        raise ValueError("_labelled_logits: the batch has no labels")
    predicted = labels != IGNORE_INDEX
    return model.cls(hidden_at(model, batch, predicted)), labels[predicted]


def _heldout_predictions(
    bundle: MLMBundle,
    texts: Sequence[TrainText],
    max_length: int,
    batch_size: int,
    mlm_probability: float,
    seed: int,
    who: str,
    **mask_options: Unpack[_ReplaceSplit],
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
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
    """Held-out MLM loss (mean cross-entropy on masked tokens) with a fixed seeded masking.

    Raises ``ValueError`` if ``texts`` hold no text.
    """
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
    replaced by [MASK], so it measures prediction, not copying).

    Raises ``ValueError`` if ``texts`` hold no text.
    """
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
    strategy: Strategy = "concat",
    max_length: int = 128,
    batch_size: int = 32,
) -> float:
    """Top-1 accuracy on the answer tokens of reading exercises, with their knowledge injected by
    ``strategy`` (``"closed-book"``: nothing injected — the answers are invented, so this stays
    near chance and the gap to it is what reading adds). Only the answer is masked, all [MASK].

    Raises ``ValueError`` without examples.
    """
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
