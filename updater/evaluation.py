"""LAMA-style evaluation of a masked-LM: P@1, P@10 and MRR of the gold object at the ``[MASK]``.

The same probes are scored in several modes side by side: ``closed-book`` (the weights alone),
``concat`` and ``tree`` (knowledge injected, see ``encoder.injection``). Where the knowledge comes
from is the caller's business: a :data:`KnowledgeSource` maps a batch of probe texts and a mode to
facts and passages per text (``kecl`` builds one from its query pipeline; a test builds one from
a list). This keeps ``updater`` free of ``kecl``.

Token level (LAMA, Petroni et al. 2019): only probes whose gold object is one token of the
model's vocabulary count (the rest are reported as dropped), the rank is over the whole
vocabulary, P@k = share of probes with the gold token in the top k, MRR = mean of 1/rank.

Entity level (with ``candidates``, see :mod:`updater.entity_ranks`): every probe counts, ranked
among the whole answers the query pipeline would give (graph candidates scored with one [MASK]
per word-piece, or decoded freely); the one-token probes are also reported on their own
(``EvalReport.one_token``), comparable with LAMA.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table
from tqdm.auto import tqdm

from encoder import STRATEGIES, InjectedFact, InjectedPassage, MLMBundle, rank_injected
from updater.entity_ranks import CandidateSource, entity_ranks
from updater.probes import Probe, gold_token_id

log = logging.getLogger(__name__)

KnowledgeSource = Callable[
    [Sequence[str], str], tuple[Sequence[Sequence[InjectedFact]], Sequence[Sequence[InjectedPassage]]]
]
"""``(texts, mode) → (facts per text, passages per text)`` for the augmented modes."""

ALL = "all"


@dataclass
class Metrics:
    """P@1, P@10 and MRR over ``n`` probes (NaN-free: all 0 when ``n`` is 0)."""

    n: int = 0
    p_at_1: float = 0.0
    p_at_10: float = 0.0
    mrr: float = 0.0

    @classmethod
    def from_ranks(cls, ranks: Sequence[int]) -> Metrics:
        """Metrics of a list of 1-based gold ranks. Raises ``ValueError`` for a rank below 1."""
        if any(r < 1 for r in ranks):
            raise ValueError(f"ranks are 1-based; got {min(ranks)}")
        n = len(ranks)
        if n == 0:
            return cls()
        return cls(n, sum(r <= 1 for r in ranks) / n, sum(r <= 10 for r in ranks) / n, sum(1.0 / r for r in ranks) / n)


@dataclass
class ProbeResult:
    """One probe in one mode: the gold token's rank and the model's top prediction."""

    probe_id: str
    group: str
    mode: str
    rank: int
    top1: str
    gold: str


@dataclass
class EvalReport:
    """Metrics per mode and group (plus ``"all"``), what was dropped and why, per-probe results.

    ``metrics[mode][group]`` is a :class:`Metrics`; ``dropped`` counts probes left out by LAMA's
    one-token rule (``dropped_reasons`` breaks it down); ``seconds[mode]`` is the time per mode.
    """

    modes: list[str]
    metrics: dict[str, dict[str, Metrics]]
    dropped: int = 0
    dropped_reasons: dict[str, int] = field(default_factory=dict)
    dropped_by_group: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    results: list[ProbeResult] = field(default_factory=list)
    one_token: dict[str, dict[str, Metrics]] = field(default_factory=dict)  # entity level: the one-token probes
    level: str = "token"  # "token" (LAMA: one [MASK], one word-piece) or "entity"

    @property
    def groups(self) -> list[str]:
        """Groups in sorted order, ``"all"`` last."""
        names = {g for per in self.metrics.values() for g in per if g != ALL}
        return sorted(names) + [ALL]

    def macro(self, mode: str) -> Metrics:
        """The mean over groups (LAMA's per-relation average), ``n`` = probes in all groups."""
        per = [m for g, m in self.metrics[mode].items() if g != ALL and m.n]
        if not per:
            return Metrics()
        k = len(per)
        return Metrics(
            sum(m.n for m in per),
            sum(m.p_at_1 for m in per) / k,
            sum(m.p_at_10 for m in per) / k,
            sum(m.mrr for m in per) / k,
        )

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per group: ``{"group", "n", "<mode> P@1", "<mode> P@10", "<mode> MRR", …}``."""
        out = []
        for g in self.groups:
            first = next(iter(self.metrics.values()), {})
            row: dict[str, Any] = {"group": g, "n": first.get(g, Metrics()).n}
            for mode in self.modes:
                m = self.metrics[mode].get(g, Metrics())
                row.update({f"{mode} P@1": m.p_at_1, f"{mode} P@10": m.p_at_10, f"{mode} MRR": m.mrr})
            out.append(row)
        return out

    def table(self, title: str | None = None) -> Any:
        """A ``rich.table.Table``: rows are groups, one column per mode holding "P@1 / P@10 / MRR"
        (compact enough for three modes side by side in an 80-column terminal)."""
        table = Table(
            title=title,
            caption=f"{self.dropped} probes dropped (object not one token)"
            + (f": {self.dropped_reasons}" if self.dropped_reasons else ""),
        )
        table.add_column("group")
        table.add_column("n", justify="right")
        for mode in self.modes:
            table.add_column(f"{mode}\nP@1 / P@10 / MRR", justify="right")
        for row in self.rows():
            table.add_row(
                row["group"],
                str(row["n"]),
                *[
                    f"{row[f'{mode} P@1']:.3f} / {row[f'{mode} P@10']:.3f} / {row[f'{mode} MRR']:.3f}"
                    for mode in self.modes
                ],
                end_section=row["group"] == ALL,
            )
        return table

    def to_dict(self, with_results: bool = False) -> dict[str, Any]:
        """JSON-ready: modes, metrics per mode and group, macro averages, dropped counts, timings."""
        out: dict[str, Any] = {
            "modes": self.modes,
            "metrics": {mode: {g: asdict(m) for g, m in per.items()} for mode, per in self.metrics.items()},
            "macro": {mode: asdict(self.macro(mode)) for mode in self.modes},
            "dropped": self.dropped,
            "dropped_reasons": self.dropped_reasons,
            "dropped_by_group": self.dropped_by_group,
            "seconds": self.seconds,
            "level": self.level,
        }
        if self.one_token:
            out["one_token"] = {mode: {g: asdict(m) for g, m in per.items()} for mode, per in self.one_token.items()}
        if with_results:
            out["results"] = [asdict(r) for r in self.results]
        return out

    def merge(self, other: EvalReport) -> EvalReport:
        """Both reports' columns in one (same probes assumed; ``other``'s mode names must differ)."""
        clash = set(self.modes) & set(other.modes)
        if clash:
            raise ValueError(
                f"EvalReport.merge: mode names {sorted(clash)} in both reports; pass a label to evaluate()"
            )
        return EvalReport(
            self.modes + other.modes,
            {**self.metrics, **other.metrics},
            self.dropped,
            self.dropped_reasons,
            self.dropped_by_group,
            {**self.seconds, **other.seconds},
            self.results + other.results,
            {**self.one_token, **other.one_token},
            self.level,
        )


def evaluate(
    bundle: MLMBundle,
    probes: Sequence[Probe],
    modes: Sequence[str] = ("closed-book",),
    knowledge: KnowledgeSource | None = None,
    batch_size: int = 32,
    max_length: int = 256,
    label: str | None = None,
    progress: bool = False,
    evidence_boost: float = 0.0,
    candidates: CandidateSource | None = None,
    normalisation: str = "mean",
    shortlist: int | None = None,
    length_branches: bool = True,
) -> EvalReport:
    """Score ``probes`` in each of ``modes`` (``"closed-book"``, ``"concat"``, ``"tree"``).

    Probes whose object is not one vocabulary token, whose text lacks exactly one ``[MASK]``, or
    whose text alone is longer than ``max_length`` tokens are dropped and counted. ``knowledge``
    supplies facts and passages for the augmented modes. ``label`` is appended to each mode's
    column name ("concat passages-only"), so reports of different knowledge sources can be
    :meth:`EvalReport.merge`-d. ``evidence_boost``: the augmented modes' copy prior
    (:func:`encoder.evidence_bias`), as the query pipeline applies it; 0 = off.
    ``candidates``: measure at entity level (every probe, multi-token objects too; scores
    normalised as ``normalisation`` says, the ``shortlist`` and ``length_branches`` of
    :func:`encoder.score_entities`; the
    evidence prior applies to whole candidates).
    Returns an :class:`EvalReport`. Raises ``ValueError`` for an unknown mode, or an augmented
    mode without ``knowledge``.
    """
    for mode in modes:
        if mode not in STRATEGIES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {STRATEGIES}")
        if mode != "closed-book" and knowledge is None:
            raise ValueError(f"mode {mode!r} injects knowledge: pass knowledge=(texts, mode) -> (facts, passages)")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    tokenizer = bundle.tokenizer

    kept: list[tuple[Probe, int]] = []
    reasons: dict[str, int] = {}
    dropped_by_group: dict[str, int] = {}
    for p in probes:
        gold = gold_token_id(tokenizer, p.obj_label)
        if gold is None and candidates is None:
            reason = "object not one token"
        elif p.text.count("[MASK]") != 1:
            reason = "not exactly one [MASK]"
        elif len(tokenizer(p.text, add_special_tokens=True)["input_ids"]) > max_length:
            reason = f"text over {max_length} tokens"
        else:
            kept.append((p, gold if gold is not None else -1))
            continue
        reasons[reason] = reasons.get(reason, 0) + 1
        dropped_by_group[p.group] = dropped_by_group.get(p.group, 0) + 1
    dropped = sum(reasons.values())
    if dropped:
        log.info("evaluate: %d of %d probes dropped (%s)", dropped, len(probes), reasons)

    names = [f"{mode} {label}" if label else mode for mode in modes]
    metrics: dict[str, dict[str, Metrics]] = {}
    one_token: dict[str, dict[str, Metrics]] = {}
    seconds: dict[str, float] = {}
    results: list[ProbeResult] = []
    bar = None
    if progress:
        bar = tqdm(total=len(kept) * len(modes), desc="eval", unit="probe", dynamic_ncols=True)
    try:
        for mode, name in zip(modes, names):
            started = time.perf_counter()
            ranks_by_group: dict[str, list[int]] = {}
            one_token_ranks: dict[str, list[int]] = {}
            for start in range(0, len(kept), batch_size):
                chunk = kept[start : start + batch_size]
                texts = [p.text for p, _ in chunk]
                facts = passages = None
                if mode != "closed-book":
                    facts, passages = knowledge(texts, mode)  # type: ignore[misc]
                if candidates is not None:
                    ranked = entity_ranks(
                        bundle,
                        [p for p, _ in chunk],
                        candidates(texts, mode),
                        facts,
                        passages,
                        mode,
                        max_length,
                        evidence_boost,
                        normalisation,
                        shortlist,
                        length_branches,
                    )
                else:
                    ranks = rank_injected(
                        bundle, texts, [g for _, g in chunk], facts, passages, mode, max_length, evidence_boost, top_k=1
                    ).ranks
                    ranked = [(r.rank, r.top_k[0].token if r.top_k else "") for r in ranks]
                for (p, gold), (rank, top1) in zip(chunk, ranked):
                    ranks_by_group.setdefault(p.group, []).append(rank)
                    if gold >= 0:
                        one_token_ranks.setdefault(p.group, []).append(rank)
                    results.append(ProbeResult(p.probe_id, p.group, name, rank, top1, p.obj_label))
                if bar is not None:
                    bar.update(len(chunk))
            per = {g: Metrics.from_ranks(r) for g, r in ranks_by_group.items()}
            per[ALL] = Metrics.from_ranks([r for rs in ranks_by_group.values() for r in rs])
            metrics[name] = per
            if candidates is not None:
                ones = {g: Metrics.from_ranks(r) for g, r in one_token_ranks.items()}
                ones[ALL] = Metrics.from_ranks([r for rs in one_token_ranks.values() for r in rs])
                one_token[name] = ones
            seconds[name] = time.perf_counter() - started
    finally:
        if bar is not None:
            bar.close()
    level = "entity" if candidates is not None else "token"
    return EvalReport(names, metrics, dropped, reasons, dropped_by_group, seconds, results, one_token, level)
