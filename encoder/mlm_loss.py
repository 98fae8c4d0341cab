"""The training loss: cross-entropy at the masked positions (and NSP's), as a module DDP can wrap."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from transformers import BertForMaskedLM

from encoder.masked_forward import hidden_at, last_hidden
from encoder.masking import IGNORE_INDEX


class MaskedLMLoss(torch.nn.Module):
    """The training loss as a module (so that DDP can wrap it): the model's MLM loss at the masked
    positions, plus NSP's when the batch has labels for it. ``divisors`` (distributed runs): the
    global masked-token and NSP-row counts over the world size; ``None``: the batch's own means."""

    def __init__(
        self,
        model: BertForMaskedLM,
        nsp_head: torch.nn.Module | None,
        sparse_last_layer: bool,
        use_bf16: bool,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.model, self.nsp_head = model, nsp_head
        self.sparse_last_layer, self.use_bf16, self.device = sparse_last_layer, use_bf16, device

    def forward(
        self,
        batch: Mapping[str, torch.Tensor | None],
        nsp_labels: torch.Tensor | None,
        divisors: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """The loss of ``batch`` (see :func:`mlm_loss`)."""
        return mlm_loss(
            self.model,
            batch,
            nsp_labels,
            self.nsp_head,
            self.sparse_last_layer,
            self.use_bf16,
            self.device,
            divisors,
        )


def mlm_loss(
    model: BertForMaskedLM,
    batch: Mapping[str, torch.Tensor | None],
    nsp_labels: torch.Tensor | None,
    nsp_head: torch.nn.Module | None,
    sparse_last_layer: bool,
    use_bf16: bool,
    device: torch.device,
    divisors: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Cross-entropy at the masked positions, plus next-sentence prediction's on [CLS] when the
    batch has NSP labels: means over the batch, or sums over ``divisors`` when given."""
    labels = batch["labels"]
    if labels is None:
        raise ValueError("train_mlm: the batch's labels are None (a batch_hook must keep them)")
    # The MLM head only where a token is masked: ~7x less head compute than at every position.
    predicted = labels != IGNORE_INDEX
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):  # bf16 matmuls, float32 weights
        if sparse_last_layer and nsp_labels is None:
            # The last layer only there too (keys and values everywhere): same loss, ~12% less compute.
            logits = model.cls(hidden_at(model, batch, predicted))
        else:
            hidden = last_hidden(model, batch)
            logits = model.cls(hidden[predicted])
    # softmax over 30k words in float32
    if divisors is None:
        loss = F.cross_entropy(logits.float(), labels[predicted])
    else:
        loss = F.cross_entropy(logits.float(), labels[predicted], reduction="sum") / divisors[0]
    if nsp_head is not None and nsp_labels is not None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            nsp_logits = nsp_head(hidden[:, 0])
        if divisors is None:
            loss = loss + F.cross_entropy(nsp_logits.float(), nsp_labels.to(device))
        else:
            loss = loss + F.cross_entropy(nsp_logits.float(), nsp_labels.to(device), reduction="sum") / divisors[1]
    return loss
