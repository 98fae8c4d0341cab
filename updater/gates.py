"""The gate between a trained candidate and the serving model: both versions are measured on the
same probes and held-out text (:func:`evaluate_version`), then compared (:func:`decide`).

A candidate replaces the active model only if it kept what the active one knew (retention P@1 on
unchanged facts, closed-book), did not get worse at language in general (held-out MLM loss), and
learned what was new (acquisition P@1 on new and changed facts). Each check is skipped when there
is nothing to measure it on (no probes of that group, no held-out text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from encoder import MLMBundle, masked_lm_loss, score_entities
from knowledge import Candidate, FactView
from updater.entity_ranks import CandidateSource
from updater.evaluation import KnowledgeSource, evaluate
from updater.probes import Probe


@dataclass
class EvalSet:
    """What both models are measured on: probes per group (new, changed, unchanged), held-out
    passages for the MLM loss, and the changed facts' (old, new) pairs."""

    probes: dict[str, list[Probe]]
    heldout: list[str]
    pairs: list[tuple[FactView, FactView]]


@dataclass
class Outranks:
    """Of ``n`` changed facts, the share where the model scores the new object above the old one
    (whole objects, one [MASK] per word-piece)."""

    n: int
    new_outranks_old: float | None


@dataclass
class Evaluation:
    """One model version measured on an :class:`EvalSet`: ``modes[mode][group]`` holds P@1, P@10,
    MRR and n; probes dropped by LAMA's one-token rule; held-out MLM loss; changed-fact outranking."""

    modes: dict[str, dict[str, dict[str, Any]]]
    dropped: int
    heldout_loss: float | None
    changed_outranks: Outranks  # closed-book
    outranks_by_mode: dict[str, Outranks] = field(default_factory=dict)
    one_token: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # entity level: one-token probes
    level: str = "token"

    def to_dict(self) -> dict[str, Any]:
        """The form ``update_run.metrics`` and :func:`decide` read."""
        return {
            "modes": self.modes,
            "dropped": self.dropped,
            "heldout_loss": self.heldout_loss,
            "changed_outranks": asdict(self.changed_outranks),
            "outranks_by_mode": {m: asdict(o) for m, o in self.outranks_by_mode.items()},
            "one_token": self.one_token,
            "level": self.level,
        }


def evaluate_version(
    bundle: MLMBundle,
    eval_set: EvalSet,
    knowledge: KnowledgeSource | None,
    modes: Sequence[str],
    evidence_boost: float = 0.0,
    candidates: CandidateSource | None = None,
    normalisation: str = "mean",
    shortlist: int | None = None,
    length_branches: bool = True,
) -> Evaluation:
    """P@1/P@10/MRR per group in each of ``modes`` (augmented modes only with ``knowledge``, their
    evidence prior at ``evidence_boost``) — at entity level with ``candidates`` —, held-out MLM
    loss, and how often changed facts' new objects outrank the old, per mode.
    Raises what :func:`updater.evaluation.evaluate` raises."""
    all_probes = [p for group in eval_set.probes.values() for p in group]
    modes = [m for m in modes if m == "closed-book" or knowledge is not None]
    report = evaluate(
        bundle,
        all_probes,
        modes=modes,
        knowledge=knowledge,
        evidence_boost=evidence_boost,
        candidates=candidates,
        normalisation=normalisation,
        shortlist=shortlist,
        length_branches=length_branches,
    )
    by_mode = {
        m: outranks(bundle, eval_set.pairs, m, knowledge, evidence_boost, normalisation, length_branches) for m in modes
    }
    return Evaluation(
        modes={mode: {g: vars(m) for g, m in report.metrics[mode].items()} for mode in modes},
        dropped=report.dropped,
        heldout_loss=masked_lm_loss(bundle, eval_set.heldout) if eval_set.heldout else None,
        changed_outranks=by_mode.get("closed-book") or outranks(bundle, eval_set.pairs, normalisation=normalisation),
        outranks_by_mode=by_mode,
        one_token={mode: {g: vars(m) for g, m in per.items()} for mode, per in report.one_token.items()},
        level=report.level,
    )


def outranks(
    bundle: MLMBundle,
    pairs: Sequence[tuple[FactView, FactView]],
    mode: str = "closed-book",
    knowledge: KnowledgeSource | None = None,
    evidence_boost: float = 0.0,
    normalisation: str = "mean",
    length_branches: bool = True,
) -> Outranks:
    """For changed facts: how often the model scores the new object above the old one, both scored
    whole (one [MASK] per word-piece, :func:`encoder.score_entities`) in ``mode`` with the
    knowledge the pipeline injects (augmented modes need ``knowledge``), all pairs in one batch."""
    usable = [(old, new) for old, new in pairs if new.template and old.object != new.object]
    if not usable:
        return Outranks(0, None)
    texts = [new.template.replace("[X]", new.subject).replace("[Y]", "[MASK]") for _, new in usable]  # type: ignore[union-attr]
    candidates = [
        [Candidate(new.object, new.object_id, "fact"), Candidate(old.object, old.object_id, "fact")]
        for old, new in usable
    ]
    facts = passages = None
    if mode != "closed-book" and knowledge is not None:
        facts, passages = knowledge(texts, mode)
    ranked = score_entities(
        bundle,
        texts,
        candidates,
        facts,
        passages,
        strategy=mode,
        evidence_boost=evidence_boost if mode != "closed-book" else 0.0,
        normalisation=normalisation,
        max_pieces=64,  # every object is scored, however long
        length_branches=length_branches,
    )
    wins = 0
    for (old, new), answers in zip(usable, ranked):
        scores = {(a.entity_id, a.text): a.score for a in answers}
        new_score = scores.get((new.object_id, new.object), float("-inf"))
        old_score = scores.get((old.object_id, old.object), float("-inf"))
        wins += new_score > old_score
    return Outranks(len(usable), wins / len(usable))


def checkpoint_metrics(evaluation: Evaluation) -> dict[str, Any]:
    """Held-out loss and P@1 per mode and group (non-empty groups only), as checkpoint metrics."""
    out: dict[str, Any] = {"heldout_loss": evaluation.heldout_loss}
    for mode, groups in evaluation.modes.items():
        for group, values in groups.items():
            if values["n"]:
                out[f"{mode}/{group}/p_at_1"] = round(values["p_at_1"], 4)
    for mode, result in evaluation.outranks_by_mode.items():
        if result.new_outranks_old is not None:
            out[f"{mode}/changed/new_outranks_old"] = round(result.new_outranks_old, 4)
    return out


@dataclass
class GateConfig:
    """When a candidate may replace the active model (all must hold)."""

    max_retention_drop: float = 0.02  # absolute P@1 drop on unchanged facts, closed-book
    max_loss_increase: float = 0.10  # relative held-out MLM loss increase
    min_acquisition: float = 0.0  # closed-book P@1 on new and changed facts


def _p1(metrics: dict[str, Any], mode: str, group: str) -> float | None:
    m = metrics["modes"].get(mode, {}).get(group)
    return m["p_at_1"] if m and m["n"] else None


def decide(gates: GateConfig, active: dict[str, Any], candidate: dict[str, Any]) -> tuple[str, list[str]]:
    """``("promote", reasons)`` if retention, held-out loss and acquisition all hold, else
    ``("reject", reasons)``; one reason per check made, failed ones marked ``FAILED``.

    ``active`` and ``candidate`` are evaluations as ``update_run.metrics`` holds them
    (``{"modes": {mode: {group: {"n", "p_at_1", …}}}, "heldout_loss": …}``).
    """
    reasons, ok = [], True
    ret_a, ret_c = _p1(active, "closed-book", "unchanged"), _p1(candidate, "closed-book", "unchanged")
    if ret_a is not None and ret_c is not None:
        drop = ret_a - ret_c
        passed = drop <= gates.max_retention_drop
        ok &= passed
        reasons.append(
            f"retention P@1 {ret_a:.3f} → {ret_c:.3f} (drop {drop:+.3f}, allowed {gates.max_retention_drop:.3f})"
            + ("" if passed else ": FAILED")
        )
    la, lc = active.get("heldout_loss"), candidate.get("heldout_loss")
    if la is not None and lc is not None:
        rise = (lc - la) / la if la else 0.0
        passed = rise <= gates.max_loss_increase
        ok &= passed
        reasons.append(
            f"held-out MLM loss {la:.3f} → {lc:.3f} ({rise:+.1%}, allowed +{gates.max_loss_increase:.0%})"
            + ("" if passed else ": FAILED")
        )
    acq = [x for x in (_p1(candidate, "closed-book", "new"), _p1(candidate, "closed-book", "changed")) if x is not None]
    if acq:
        value = sum(acq) / len(acq)
        passed = value >= gates.min_acquisition
        ok &= passed
        reasons.append(
            f"acquisition P@1 {value:.3f} (needed {gates.min_acquisition:.3f})" + ("" if passed else ": FAILED")
        )
    return ("promote" if ok else "reject"), reasons
