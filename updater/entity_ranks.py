"""Entity-level ranks of probes: where the gold entity comes among the ranked whole answers.

A probe's answer counts as right when a ranked answer names the gold entity (same entity id) or
reads the same as the gold label (case and accents aside, for a decoded string or a store without
ids). LAMA counts only one-token objects; here every probe counts, and the one-token ones are
also reported on their own so the numbers stay comparable with LAMA's.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

from encoder import EntityPrediction, InjectedFact, InjectedPassage, MLMBundle, score_entities
from updater.probes import Probe

CandidateSource = Callable[[Sequence[str], str], Sequence[Sequence[Any]]]
"""``(texts, mode) → candidates per text`` (``knowledge.Candidate``-like: ``text``, ``entity_id``,
``source``), as the query pipeline proposes them for that mode."""

MISSING_RANK = 1_000_000
"""The rank of a gold entity that no answer names (counts 0 towards P@k and ~0 towards MRR)."""


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def gold_rank(answers: Sequence[EntityPrediction], probe: Probe) -> int:
    """The 1-based rank of the first answer naming the probe's gold entity; :data:`MISSING_RANK`
    when none does."""
    gold = _plain(probe.obj_label)
    for rank, a in enumerate(answers, start=1):
        if (probe.obj_entity_id is not None and a.entity_id == probe.obj_entity_id) or _plain(a.text) == gold:
            return rank
    return MISSING_RANK


def entity_ranks(
    bundle: MLMBundle,
    probes: Sequence[Probe],
    candidates: Sequence[Sequence[Any]],
    facts: Sequence[Sequence[InjectedFact]] | None,
    passages: Sequence[Sequence[InjectedPassage]] | None,
    mode: str,
    max_length: int,
    evidence_boost: float,
    normalisation: str,
    shortlist: int | None = None,
    length_branches: bool = True,
) -> list[tuple[int, str]]:
    """``(rank of the gold entity, top answer)`` of each probe, all scored in one batch by
    :func:`encoder.score_entities` (every candidate ranked, so the rank is exact)."""
    answers = score_entities(
        bundle,
        [p.text for p in probes],
        candidates,
        facts,
        passages,
        strategy=mode,
        max_length=max_length,
        evidence_boost=evidence_boost,
        normalisation=normalisation,
        top_k=MISSING_RANK,
        shortlist=shortlist,
        length_branches=length_branches,
    )
    return [(gold_rank(a, p), a[0].text if a else "") for a, p in zip(answers, probes)]
