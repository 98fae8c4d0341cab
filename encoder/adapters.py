"""LoRA adapters for continued MLM training, through peft.

A run with ``TrainConfig.lora_rank`` > 0 trains low-rank adapters on every linear layer of the
encoder and the MLM head's transform (peft's ``"all-linear"``, which leaves the output projection
alone) while the pretrained weights stay frozen; the adapters are merged into the weights when the
run ends, so a checkpoint trained with LoRA is an ordinary model that loads, serves and trains like
any other. Frozen weights are the forgetting guard: the update is confined to a rank-r subspace per
layer (CKL's "LoRA" baseline; Hu et al., 2021).

Word pieces added by :func:`encoder.grow_vocabulary` have no pretrained row to keep, so their rows
of the (tied) word embedding train in full beside the adapters (peft's trainable tokens).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)


@contextmanager
def lora_adapters(
    model: torch.nn.Module,
    rank: int,
    alpha: int | None = None,
    trainable_tokens: Sequence[int] = (),
) -> Iterator[torch.nn.Module]:
    """Inject LoRA adapters of ``rank`` (scale ``alpha / rank``; ``alpha`` None: ``2 * rank``) into
    ``model`` in place and freeze everything else but the rows ``trainable_tokens`` of the word
    embedding; yields ``model`` (the same object, its linear layers wrapped). On a normal exit the
    adapters are merged into the weights; on an exception they are dropped unmerged. Either way the
    model leaves with its own modules and every parameter trainable again.

    Raises ValueError for a rank below 1."""
    if rank < 1:
        raise ValueError(f"lora_adapters: rank must be at least 1, got {rank}")
    from peft import LoraConfig, get_peft_model  # deferred: only LoRA runs need peft, and it is slow to import

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=0.0,
        target_modules="all-linear",
        bias="none",
        trainable_token_indices={"word_embeddings": sorted(set(trainable_tokens))} if trainable_tokens else None,
    )
    with warnings.catch_warnings():
        # peft asks transformers 5 for ``is_gradient_checkpointing``, which it has deprecated (FutureWarning)
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(model, config)  # wraps the layers of ``model`` itself
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA rank %d: %d trainable parameters", rank, trainable)
    merged = False
    try:
        yield model
        peft_model.merge_and_unload()
        merged = True
    finally:
        if not merged:
            peft_model.unload()
        # older peft leaves its config on the unloaded model: the next run would see a second adapter
        if "peft_config" in vars(model):
            del model.peft_config
        for p in model.parameters():
            p.requires_grad_(True)
