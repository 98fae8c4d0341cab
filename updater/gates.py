"""The gate between a trained candidate and the serving model: both versions are measured on the
same probes and held-out text (:func:`evaluate_version`), then compared (:func:`decide`).

A candidate replaces the active model only if it kept what the active one knew (retention P@1 on
unchanged facts, closed-book), did not get worse at language in general (held-out MLM loss), and
learned what was new (acquisition P@1 on new and changed facts). Each check is skipped when there
is nothing to measure it on (no probes of that group, no held-out text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from encoder import MLMBundle, masked_lm_loss, score_candidates
from knowledge import FactView
from updater.evaluation import KnowledgeSource, evaluate
from updater.probes import Probe, gold_token_id


@dataclass
class EvalSet:
    """What both models are measured on: probes per group (new, changed, unchanged), held-out
    passages for the MLM loss, and the changed facts' (old, new) pairs."""

    probes: dict[str, list[Probe]]
    heldout: list[str]
    pairs: list[tuple[FactView, FactView]]


@dataclass
class Outranks:
    """Of ``n`` changed facts, the share where the model scores the new object above the old one."""

    n: int
    new_outranks_old: float | None


@dataclass
class Evaluation:
    """One model version measured on an :class:`EvalSet`: ``modes[mode][group]`` holds P@1, P@10,
    MRR and n; probes dropped by LAMA's one-token rule; held-out MLM loss; changed-fact outranking."""

    modes: dict[str, dict[str, dict[str, Any]]]
    dropped: int
    heldout_loss: float | None
    changed_outranks: Outranks

    def to_dict(self) -> dict[str, Any]:
        """The form ``update_run.metrics`` and :func:`decide` read."""
        return {
            "modes": self.modes,
            "dropped": self.dropped,
            "heldout_loss": self.heldout_loss,
            "changed_outranks": asdict(self.changed_outranks),
        }


def evaluate_version(
    bundle: MLMBundle,
    eval_set: EvalSet,
    knowledge: KnowledgeSource | None,
    modes: Sequence[str],
    evidence_boost: float = 0.0,
) -> Evaluation:
    """P@1/P@10/MRR per group in each of ``modes`` (augmented modes only with ``knowledge``, their
    evidence prior at ``evidence_boost``), held-out MLM loss, and how often changed facts' new objects
    outrank the old. Raises what :func:`updater.evaluation.evaluate` raises."""
    all_probes = [p for group in eval_set.probes.values() for p in group]
    modes = [m for m in modes if m == "closed-book" or knowledge is not None]
    report = evaluate(bundle, all_probes, modes=modes, knowledge=knowledge, evidence_boost=evidence_boost)
    return Evaluation(
        modes={mode: {g: vars(m) for g, m in report.metrics[mode].items()} for mode in modes},
        dropped=report.dropped,
        heldout_loss=masked_lm_loss(bundle, eval_set.heldout) if eval_set.heldout else None,
        changed_outranks=outranks(bundle, eval_set.pairs),
    )


def outranks(bundle: MLMBundle, pairs: Sequence[tuple[FactView, FactView]]) -> Outranks:
    """For changed facts: how often the model scores the new object above the old one."""
    wins, n = 0, 0
    for old, new in pairs:
        if (
            not new.template
            or gold_token_id(bundle.tokenizer, new.object) is None
            or gold_token_id(bundle.tokenizer, old.object) is None
        ):
            continue
        text = new.template.replace("[X]", new.subject).replace("[Y]", "[MASK]")
        scores = score_candidates(bundle, text, [new.object, old.object])
        wins += scores[new.object] > scores[old.object]
        n += 1
    return Outranks(n, wins / n if n else None)


def checkpoint_metrics(evaluation: Evaluation) -> dict[str, Any]:
    """Held-out loss and P@1 per mode and group (non-empty groups only), as checkpoint metrics."""
    out: dict[str, Any] = {"heldout_loss": evaluation.heldout_loss}
    for mode, groups in evaluation.modes.items():
        for group, values in groups.items():
            if values["n"]:
                out[f"{mode}/{group}/p_at_1"] = round(values["p_at_1"], 4)
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
