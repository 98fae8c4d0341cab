"""BERT masking: choose 15% of tokens, then 80% [MASK] / 10% random / 10% unchanged.

Masking works on *units* rather than tokens: a unit is one token (plain BERT), one whole word
(whole-word masking) or one entity mention (salient-span masking, REALM). All tokens of a chosen
unit are masked together; special tokens and padding belong to no unit (``-1``) and are never
chosen. ``unit_ids`` are built with the token ids by :mod:`encoder.packing`.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
"""Label of positions that are not predicted (PyTorch's cross-entropy default)."""


def mask_tokens(
    input_ids: torch.Tensor,
    unit_ids: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    salient: torch.Tensor | None = None,
    salient_probability: float | None = None,
    generator: torch.Generator | None = None,
    random_token_low: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a batch for MLM; returns ``(masked_input_ids, labels)``.

    ``input_ids`` and ``unit_ids`` are ``(batch, length)``; ``unit_ids`` groups tokens that are
    masked together (``-1``: never masked). Each unit is chosen with ``mlm_probability`` — or
    ``salient_probability`` for units flagged in ``salient`` (entity mentions) — so the expected
    share of masked tokens equals ``mlm_probability`` without salient spans. Of the chosen tokens
    ``mask_replace_prob`` become [MASK], ``random_replace_prob`` a random token and the rest stay.
    ``labels`` hold the original ids at chosen positions and ``IGNORE_INDEX`` elsewhere. At least
    one token per batch is chosen when any unit exists, so the loss is always defined.
    Raises ``ValueError`` on shapes that differ or probabilities outside [0, 1].
    """
    if input_ids.shape != unit_ids.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and unit_ids {tuple(unit_ids.shape)} differ")
    for name, p in (
        ("mlm_probability", mlm_probability),
        ("mask_replace_prob", mask_replace_prob),
        ("random_replace_prob", random_replace_prob),
    ):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}={p} is outside [0, 1]")
    if mask_replace_prob + random_replace_prob > 1.0 + 1e-9:
        raise ValueError("mask_replace_prob + random_replace_prob must be at most 1")
    device = input_ids.device
    batch, length = input_ids.shape
    candidate = unit_ids >= 0
    # Make unit ids unique across rows, then number them 0..U-1 so one draw per unit suffices.
    global_units = torch.where(
        candidate, unit_ids + torch.arange(batch, device=device)[:, None] * (unit_ids.max() + 1), -1
    )
    unique, inverse = torch.unique(global_units[candidate], return_inverse=True)
    num_units = unique.numel()
    chosen = torch.zeros_like(candidate)
    if num_units:
        unit_prob = torch.full((num_units,), mlm_probability, device=device)
        if salient is not None and salient_probability is not None:
            salient_units = torch.zeros(num_units, dtype=torch.bool, device=device)
            salient_units[inverse[salient[candidate]]] = True
            unit_prob[salient_units] = salient_probability
        draw = torch.rand(num_units, generator=generator, device="cpu").to(device)
        unit_chosen = draw < unit_prob
        if not unit_chosen.any():
            unit_chosen[int(torch.randint(num_units, (1,), generator=generator))] = True
        chosen[candidate] = unit_chosen[inverse]

    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    # Per token, as in BERT: one draw decides [MASK] / random / keep.
    action = torch.rand(batch, length, generator=generator, device="cpu").to(device)
    replace_mask = chosen & (action < mask_replace_prob)
    replace_random = chosen & (action >= mask_replace_prob) & (action < mask_replace_prob + random_replace_prob)
    masked = input_ids.clone()
    masked[replace_mask] = mask_token_id
    random_ids = torch.randint(random_token_low, vocab_size, (batch, length), generator=generator, device="cpu").to(
        device
    )
    masked[replace_random] = random_ids[replace_random]
    return masked, labels
