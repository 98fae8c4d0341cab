"""One update cycle: ingest → link → verbalise → index → train → evaluate → gate → promote.

``run_cycle`` is the whole loop as one function. The serving model and index are never touched
until the very end: training happens on a fresh copy of the active checkpoint, the candidate is
saved as a new version and only a passing gate moves the ``ACTIVE`` pointer. Any failure leaves
the active model serving and the run recorded as failed, with the error. Every cycle is a row in
``update_run`` with the timing of each stage, counts, metrics, the decision and its reasons.

Continual-learning choices (named as in CKL, Jang et al. 2022, and REALM):
- new text = passages of the new documents + verbalised new and changed facts (several
  templates each), with salient-span masking on the mentions of the entities they concern;
- replay = a random sample of earlier passages and verbalised unchanged facts, mixed into every
  batch at ``replay_ratio`` (the guard against forgetting; its effect is measured, not assumed);
- optional L2 pull of the weights towards the active model's (``l2_pull``, as in RecAdam / EWC
  without the Fisher term);
- reading (K-BERT / REALM): with ``train.injection_probability`` a step trains on the new,
  changed and a sample of unchanged facts stated with the knowledge the query pipeline injects for
  them, so the model keeps reading injected text (:func:`reading_exercises`).
"""

from __future__ import annotations

import logging
import random
import shutil
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from encoder.checkpoints import save_checkpoint, set_active
from encoder.metrics import masked_lm_loss
from encoder.model import MLMBundle
from encoder.packing import SpanText
from encoder.predict import score_candidates
from encoder.reading_corpus import ReadingExample, fill_slots
from encoder.trainer import TrainConfig, train_mlm
from knowledge import FactView, IngestSummary, KnowledgeStore
from knowledge.readers import iter_input_files
from updater.evaluation import ALL, EvalReport, KnowledgeSource, evaluate
from updater.probes import gold_token_id, probes_from_facts

log = logging.getLogger("updater.cycle")

HELDOUT_MODULO = 10  # passages whose id is divisible by this are never trained on: held-out loss


@dataclass
class GateConfig:
    """When a candidate may replace the active model (all must hold)."""

    max_retention_drop: float = 0.02  # absolute P@1 drop on unchanged facts, closed-book
    max_loss_increase: float = 0.10  # relative held-out MLM loss increase
    min_acquisition: float = 0.0  # closed-book P@1 on new and changed facts


@dataclass
class CycleConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    gates: GateConfig = field(default_factory=GateConfig)
    replay_passages: int = 2000
    replay_facts: int = 500
    retention_probes: int = 200  # unchanged facts probed for retention (a seeded sample)
    acquisition_probes: int = 300  # at most this many new (and changed) facts probed per group
    heldout_passages: int = 200
    eval_modes: tuple[str, ...] = ("closed-book", "concat")
    l2_pull: float = 0.0
    lease_seconds: float = 600.0
    min_train_texts: int = 1  # below this, nothing new to learn: evaluate and record only
    relink_max_passages: int = 200_000  # relink earlier text for new names up to this store size
    reading_unchanged: int = 300  # unchanged facts also read, so reading is not learned on new facts only
    evidence_boost: float = 0.0  # augmented evaluation's copy prior, as the query pipeline applies it


@dataclass
class CycleContext:
    """What a cycle works on. ``kecl`` builds it from settings; tests build it by hand."""

    store: KnowledgeStore
    checkpoints_dir: Path
    load_active: Callable[[], MLMBundle]  # a fresh copy of the active (or base) model
    add_to_index: Callable[[list[int]], None] | None = None  # embed new passages into the index
    knowledge: KnowledgeSource | None = None  # facts/passages for augmented evaluation
    on_promote: Callable[[str], None] | None = None  # reload the serving model, re-embed if needed
    inbox_dir: Path | None = None
    holder: str | None = None


@dataclass
class CycleReport:
    run_id: int
    status: str  # "succeeded" | "failed" | "skipped"
    decision: str | None = None  # "promote" | "reject" | "no-op"
    reasons: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    candidate: str | None = None
    error: str | None = None


# ----------------------------------------------------------------------------- stages


def take_inbox(inbox_dir: Path, run_id: int) -> list[Path]:
    """Move the files waiting in the inbox into ``inbox/processed/run-<id>/`` and return them.

    Moving first means a file dropped during the cycle waits for the next one, and a file is
    never ingested twice by two cycles.
    """
    from updater.scheduler import inbox_ready

    waiting = inbox_ready(inbox_dir, quiet_seconds=0)  # the scheduler's rule for what is a candidate
    if not waiting:
        return []
    target = inbox_dir / "processed" / f"run-{run_id:05d}"
    target.mkdir(parents=True, exist_ok=True)
    moved = []
    for p in waiting:
        dest = target / p.name
        shutil.move(str(p), dest)
        moved.append(dest)
    return moved


VERBALISATIONS = (
    "{template}",
    "The {label} of [X] is [Y] .",
    "[X]'s {label} is [Y] .",
    "[Y] is the {label} of [X] .",
)


def verbalise_fact(fact: FactView) -> list[SpanText]:
    """Several sentences stating ``fact`` (its relation's template and paraphrases of the label),
    each with the object's character span as a salient span for entity-span masking."""
    out, seen = [], set()
    for pattern in VERBALISATIONS:
        template = pattern.format(template=fact.template or "[X] {label} [Y] .", label=fact.relation)
        if "[X]" not in template or "[Y]" not in template:
            continue
        text, span = fill_slots(template, fact.subject, fact.object)
        if text not in seen:
            seen.add(text)
            out.append(SpanText(text, [span]))
    return out


def training_texts(store: KnowledgeStore, summary: IngestSummary, focus_entities: set[int]) -> list[SpanText]:
    """New passages (entity mentions of the focus entities as salient spans) + verbalised facts."""
    mentions = store.passage_mentions(summary.new_passage_ids)
    texts = store.passage_texts(summary.new_passage_ids)
    out = []
    for pid in sorted(texts):
        if pid % HELDOUT_MODULO == 0:
            continue  # kept aside: the held-out MLM loss of later cycles is measured on these
        spans = [(a, b) for a, b, eid in mentions.get(pid, []) if eid in focus_entities] or [
            (a, b) for a, b, _ in mentions.get(pid, [])
        ]
        out.append(SpanText(texts[pid], spans))
    for fact in store.facts(ids=summary.new_fact_ids, include_closed=False, limit=None):
        out.extend(verbalise_fact(fact))
    return out


def reading_exercises(
    facts: Sequence[FactView], knowledge: KnowledgeSource, seed: int = 0, mode: str = "concat"
) -> list[ReadingExample]:
    """Reading exercises from the store's own facts, with exactly the knowledge the query pipeline
    injects (``knowledge``): the query states the fact in one of its paraphrases (never the
    relation's own template, which the acquisition probes use), the object masked. Where retrieval
    misses the fact, the exercise still counts: the model then learns to fall back on memory.
    """
    rng = random.Random(seed)
    queries, items = [], []
    for fact in facts:
        forms = verbalise_fact(fact)
        if not forms:
            continue
        form = rng.choice(forms[1:] or forms)
        ((start, end),) = form.salient_spans
        queries.append(form.text[:start] + "[MASK]" + form.text[end:])
        items.append((form, start, end - start - len("[MASK]"), fact.object))
    if not queries:
        return []
    fact_lists, passage_lists = knowledge(queries, mode)
    out = []
    for (form, at, shift, answer), facts_i, passages_i in zip(items, fact_lists, passage_lists):
        # The pipeline's fact spans are offsets in the query with "[MASK]"; move those after it.
        moved = tuple(
            f if f.span is None or f.span[0] < at else replace(f, span=(f.span[0] + shift, f.span[1] + shift))
            for f in facts_i
        )
        out.append(ReadingExample(form, moved, tuple(passages_i), answer))
    return out


def changed_pairs(
    store: KnowledgeStore, summary: IngestSummary
) -> tuple[list[FactView], list[FactView], list[tuple[FactView, FactView]]]:
    """Split this cycle's current new facts into brand-new and changed (with the fact they closed)."""
    closed = {
        (f.subject_id, f.relation_id): f
        for f in store.facts(ids=summary.closed_fact_ids, include_closed=True, limit=None)
    }
    new, changed, pairs = [], [], []
    for f in store.facts(ids=summary.new_fact_ids, limit=None):
        old = closed.get((f.subject_id, f.relation_id))
        if old is not None and old.object != f.object:
            changed.append(f)
            pairs.append((old, f))
        else:
            new.append(f)
    return new, changed, pairs


def outranks(bundle: MLMBundle, pairs: Sequence[tuple[FactView, FactView]]) -> dict[str, Any]:
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
    return {"n": n, "new_outranks_old": wins / n if n else None}


def evaluate_model(
    bundle: MLMBundle,
    probes: dict[str, list],
    modes: Sequence[str],
    knowledge: KnowledgeSource | None,
    heldout: list[str],
    evidence_boost: float = 0.0,
) -> dict[str, Any]:
    """P@1/P@10/MRR per group and mode, and held-out MLM loss."""
    all_probes = [p for group in probes.values() for p in group]
    modes = [m for m in modes if m == "closed-book" or knowledge is not None]
    report: EvalReport = evaluate(bundle, all_probes, modes=modes, knowledge=knowledge, evidence_boost=evidence_boost)
    out: dict[str, Any] = {"modes": {}}
    for mode in modes:
        out["modes"][mode] = {g: vars(m) for g, m in report.metrics[mode].items()}
    out["dropped"] = report.dropped
    out["heldout_loss"] = masked_lm_loss(bundle, heldout) if heldout else None
    return out


def _p1(metrics: dict[str, Any], mode: str, group: str) -> float | None:
    m = metrics["modes"].get(mode, {}).get(group)
    return m["p_at_1"] if m and m["n"] else None


def decide(gates: GateConfig, active: dict[str, Any], candidate: dict[str, Any]) -> tuple[str, list[str]]:
    """The gate: promote only if retention, held-out loss and acquisition all hold."""
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


# ----------------------------------------------------------------------------- the cycle


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        log.info("cycle stage: %s", name)
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - t0, 3)


def run_cycle(
    ctx: CycleContext,
    config: CycleConfig | None = None,
    paths: Sequence[Path] | None = None,
    trigger: str = "manual",
) -> CycleReport:
    """Run one update cycle over ``paths`` (default: the files waiting in the inbox).

    Takes the database lock first: if another process is running a cycle, returns a report with
    status "skipped" and records nothing. Never raises for a failed stage: the report (and the
    ``update_run`` row) says "failed" with the error, and the active model keeps serving.
    """
    from updater.locking import CycleBusy, cycle_lock

    config = config or CycleConfig()
    store = ctx.store
    try:
        with cycle_lock(store, holder=ctx.holder, lease_seconds=config.lease_seconds) as lock:
            return _run_locked(ctx, config, paths, trigger, lock)
    except CycleBusy as busy:
        log.info("update cycle skipped: %s", busy)
        return CycleReport(run_id=0, status="skipped", reasons=[str(busy)])


def _run_locked(
    ctx: CycleContext, config: CycleConfig, paths: Sequence[Path] | None, trigger: str, lock: Any
) -> CycleReport:
    store = ctx.store
    run_id = store.start_run(trigger)
    timer = _Timer()
    report = CycleReport(run_id=run_id, status="running")
    counts: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    try:
        watermark = store.max_passage_id()
        with timer.stage("ingest"):
            files = list(paths) if paths is not None else take_inbox(ctx.inbox_dir, run_id) if ctx.inbox_dir else []
            summary = store.ingest_paths(list(iter_input_files(files))) if files else IngestSummary()
            counts.update({k: v for k, v in summary.counts().items() if v})
            counts["files"] = len(files)
            counts["issues"] = [str(i) for i in summary.issues][:100]
        with timer.stage("link"):
            # New names (new entities, renames) may occur in text ingested earlier: relink it.
            if (summary.entities_added or summary.entities_updated) and watermark:
                if watermark <= config.relink_max_passages:
                    earlier = [p for batch in store.iter_passages() for p, _ in batch if p <= watermark]
                    counts["mentions_relinked"] = store.relink_passages(earlier)
                else:
                    log.warning(
                        "store too large to relink every passage in a cycle (%d); new names link in new text only",
                        watermark,
                    )
        with timer.stage("index"):
            if ctx.add_to_index is not None and summary.new_passage_ids:
                ctx.add_to_index(summary.new_passage_ids)
                counts["indexed"] = len(summary.new_passage_ids)

        new, changed, pairs = changed_pairs(store, summary)
        focus = {f.subject_id for f in new + changed} | {f.object_id for f in new + changed if f.object_id}
        with timer.stage("verbalise"):
            new_texts = training_texts(store, summary, focus)
            this_cycle = set(summary.new_fact_ids)
            unchanged = [f for f in store.facts(limit=None) if f.id not in this_cycle]
            rng = random.Random(run_id)
            rng.shuffle(unchanged)
            replay = [
                SpanText(t)
                for _, t in store.sample_passages(
                    config.replay_passages, max_id=watermark or None, exclude_modulo=HELDOUT_MODULO, seed=run_id
                )
            ]
            for f in unchanged[: config.replay_facts]:
                replay.extend(verbalise_fact(f)[:1])
            counts.update(
                new_facts=len(new), changed_facts=len(changed), train_texts=len(new_texts), replay_texts=len(replay)
            )
        reading: list[ReadingExample] = []
        if config.train.injection_probability > 0 and ctx.knowledge is not None and new_texts:
            with timer.stage("reading"):
                reading = reading_exercises(
                    new + changed + unchanged[: config.reading_unchanged], ctx.knowledge, seed=run_id
                )
                counts["reading_exercises"] = len(reading)

        def sample(facts: list[FactView], n: int) -> list[FactView]:
            facts = [f for f in facts if f.template]
            return facts if len(facts) <= n else random.Random(run_id).sample(facts, n)

        probes = {
            "new": probes_from_facts(sample(new, config.acquisition_probes), group="new"),
            "changed": probes_from_facts(sample(changed, config.acquisition_probes), group="changed"),
            "unchanged": probes_from_facts(
                [f for f in unchanged[: config.retention_probes] if f.template], group="unchanged"
            ),
        }
        heldout = [
            t for _, t in store.heldout_passages(config.heldout_passages, HELDOUT_MODULO, max_id=watermark or None)
        ]

        with timer.stage("evaluate_active"):
            active = ctx.load_active()
            parent = active.version
            metrics["active"] = evaluate_model(
                active, probes, config.eval_modes, ctx.knowledge, heldout, config.evidence_boost
            )
            metrics["active"]["changed_outranks"] = outranks(active, pairs)

        if len(new_texts) < config.min_train_texts:
            report.decision, report.reasons = "no-op", ["nothing new to learn"]
        else:
            with timer.stage("train"):
                candidate = active  # trained in place: ``active`` is our own fresh copy, not the serving model
                extra_loss = _l2_pull(candidate, config.l2_pull) if config.l2_pull > 0 else None
                result = train_mlm(
                    candidate,
                    new_texts,
                    replay,
                    config.train,
                    progress=False,
                    on_step=lambda step, m: _keep_lock(lock),
                    extra_loss=extra_loss,
                    reading=reading,
                )
                metrics["train"] = {
                    "steps": result.steps,
                    "final_loss": result.final_loss,
                    "tokens_per_second": result.tokens_per_second,
                    "bf16": result.bf16,
                }
            with timer.stage("evaluate_candidate"):
                metrics["candidate"] = evaluate_model(
                    candidate, probes, config.eval_modes, ctx.knowledge, heldout, config.evidence_boost
                )
                metrics["candidate"]["changed_outranks"] = outranks(candidate, pairs)
            decision, reasons = decide(config.gates, metrics["active"], metrics["candidate"])
            with timer.stage("checkpoint"):
                version = save_checkpoint(
                    candidate, ctx.checkpoints_dir, parent=parent, metrics=_flat_metrics(metrics["candidate"])
                )
                store.record_checkpoint(
                    version,
                    parent,
                    "candidate",
                    _flat_metrics(metrics["candidate"]),
                    str(Path(ctx.checkpoints_dir) / version),
                )
                report.candidate = version
            if decision == "promote":
                with timer.stage("promote"):
                    set_active(ctx.checkpoints_dir, version)
                    store.set_checkpoint_status(version, "active")
                    if ctx.on_promote is not None:
                        ctx.on_promote(version)
            else:
                store.set_checkpoint_status(version, "rejected")
            report.decision, report.reasons = decision, reasons
        report.status = "succeeded"
    except Exception as exc:  # noqa: BLE001 - recorded, never raised: the active model keeps serving
        log.exception("update cycle %d failed", run_id)
        report.status = "failed"
        report.error = f"{type(exc).__name__}: {exc}"
        metrics["traceback"] = traceback.format_exc(limit=8)
    report.timings, report.counts, report.metrics = timer.timings, counts, metrics
    store.finish_run(
        run_id,
        status=report.status,
        timings=report.timings,
        counts=counts,
        metrics=_jsonable(metrics),
        decision=report.decision,
        reasons=report.reasons,
        error=report.error,
        checkpoint_version=report.candidate,
    )
    log.info("update cycle %d %s: %s %s", run_id, report.status, report.decision, "; ".join(report.reasons))
    return report


def _keep_lock(lock: Any) -> None:
    """Stop training if another process took the lock over (our lease ran out)."""
    lock.check()


def _l2_pull(bundle: MLMBundle, strength: float) -> Callable[[torch.nn.Module], torch.Tensor]:
    """``strength/2 · ||θ − θ_active||²`` over the encoder weights."""
    anchor = {n: p.detach().clone() for n, p in bundle.model.named_parameters() if p.requires_grad}

    def loss(model: torch.nn.Module) -> torch.Tensor:
        total = torch.zeros((), device=next(model.parameters()).device)
        for n, p in model.named_parameters():
            if n in anchor:
                total = total + (p - anchor[n]).pow(2).sum()
        return 0.5 * strength * total

    return loss


def _flat_metrics(m: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"heldout_loss": m.get("heldout_loss")}
    for mode, groups in m.get("modes", {}).items():
        for group, values in groups.items():
            if values["n"]:
                out[f"{mode}/{group}/p_at_1"] = round(values["p_at_1"], 4)
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and x != x:
        return None
    return x


__all__ = ["run_cycle", "CycleConfig", "CycleContext", "CycleReport", "GateConfig", "verbalise_fact", "decide", "ALL"]
