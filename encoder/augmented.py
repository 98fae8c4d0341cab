"""Predictions on knowledge-augmented inputs: inject → evidence bias → fill-mask (or gold ranks).

The query pipeline and the evaluation ask the model the same way: facts and passages injected by
a strategy (:func:`encoder.injection.build_injected_inputs`), the copy prior towards words of the
injected evidence added to the logits (:func:`encoder.predict.evidence_bias`), then the masked
positions read out. Doing it in one place keeps what is served and what is measured the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from encoder.bundle import MLMBundle
from encoder.injection import (
    InjectedFact,
    InjectedInputs,
    InjectedPassage,
    add_length_branches,
    as_strategy,
    build_injected_inputs,
    split_by_length,
)
from encoder.predict import FillMaskResult, RankResult, evidence_bias, fill_mask_encoded, masked_token_ranks

FactRows = Sequence[Sequence[InjectedFact]] | None
PassageRows = Sequence[Sequence[InjectedPassage]] | None


@dataclass
class InjectedPrediction:
    """Fill-mask on injected inputs: the inputs as built (which facts and passages fit the budget,
    each row rendered readably) and one :class:`FillMaskResult` per text. ``widened[row][n]``: with
    ``mask_lengths``, the ``(n, vocab)`` log-probabilities at the row's [MASK] widened to n masks."""

    inputs: InjectedInputs
    results: list[FillMaskResult]
    widened: list[dict[int, torch.Tensor]] = field(default_factory=list)


@dataclass
class InjectedRanks:
    """Gold ranks on injected inputs: the inputs as built and one :class:`RankResult` per text."""

    inputs: InjectedInputs
    ranks: list[RankResult]


def predict_injected(
    bundle: MLMBundle,
    texts: Sequence[str],
    facts: FactRows = None,
    passages: PassageRows = None,
    strategy: str = "concat",
    max_length: int = 256,
    evidence_boost: float = 0.0,
    top_k: int = 10,
    explain: bool = False,
    keep_log_probs: bool = False,
    mask_lengths: Sequence[Sequence[int]] | None = None,
) -> InjectedPrediction:
    """Top-k fillers for every ``[MASK]`` of ``texts`` with ``facts[i]`` / ``passages[i]`` injected
    into ``texts[i]`` by ``strategy`` (``"closed-book"``, ``"concat"``, ``"tree"``), within
    ``max_length`` tokens; ``evidence_boost`` > 0 adds the evidence copy prior; ``explain`` adds
    attention explanations; ``keep_log_probs`` keeps each [MASK]'s unbiased log-probabilities.
    ``mask_lengths[i]``: the same forward pass also asks text i with its one [MASK] widened to each
    of these lengths (:func:`~encoder.injection.add_length_branches`; closed-book and concat only,
    not with ``explain``), for entity-level scoring.

    Returns :class:`InjectedPrediction`. Raises ``ValueError`` as
    :func:`~encoder.injection.build_injected_inputs`, :func:`~encoder.injection.add_length_branches`
    and :func:`~encoder.predict.fill_mask_encoded` do.
    """
    inputs, bias = _inject(bundle, texts, facts, passages, strategy, max_length, evidence_boost)
    branched, branch_from = (
        add_length_branches(bundle.tokenizer, inputs, mask_lengths)
        if mask_lengths is not None and any(mask_lengths)
        else (inputs, None)
    )
    results = fill_mask_encoded(
        bundle,
        branched.to_dict(),
        top_k=top_k,
        explain=explain,
        texts=list(texts),
        logit_bias=bias,
        keep_log_probs=keep_log_probs,
        branch_from=branch_from,
    )
    if branch_from is None or mask_lengths is None:
        return InjectedPrediction(inputs, results)
    widened = [
        split_by_length(r.branch_log_probs, lengths) if r.branch_log_probs is not None else {}
        for lengths, r in zip(mask_lengths, results)
    ]
    return InjectedPrediction(inputs, results, widened)


def rank_injected(
    bundle: MLMBundle,
    texts: Sequence[str],
    gold_token_ids: Sequence[int],
    facts: FactRows = None,
    passages: PassageRows = None,
    strategy: str = "concat",
    max_length: int = 256,
    evidence_boost: float = 0.0,
    top_k: int = 1,
) -> InjectedRanks:
    """The rank of ``gold_token_ids[i]`` over the whole vocabulary at the one ``[MASK]`` of
    ``texts[i]``, with knowledge injected and the evidence prior added as in :func:`predict_injected`
    (so an evaluation measures what the query pipeline serves). The texts are one forward batch.

    Returns :class:`InjectedRanks`. Raises ``ValueError`` as
    :func:`~encoder.injection.build_injected_inputs` and :func:`~encoder.predict.masked_token_ranks`
    do (e.g. a text without exactly one ``[MASK]``).
    """
    inputs, bias = _inject(bundle, texts, facts, passages, strategy, max_length, evidence_boost)
    ranks = masked_token_ranks(
        bundle, inputs.to_dict(), gold_token_ids, top_k=top_k, batch_size=max(len(texts), 1), logit_bias=bias
    )
    return InjectedRanks(inputs, ranks)


def _inject(
    bundle: MLMBundle,
    texts: Sequence[str],
    facts: FactRows,
    passages: PassageRows,
    strategy: str,
    max_length: int,
    evidence_boost: float,
) -> tuple[InjectedInputs, torch.Tensor | None]:
    inputs = build_injected_inputs(
        bundle.tokenizer, texts, facts, passages, strategy=as_strategy(strategy), max_length=max_length
    )
    return inputs, evidence_bias(bundle.tokenizer, inputs, evidence_boost)
