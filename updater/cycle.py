"""One update cycle: ingest → link → index → verbalise → reading → evaluate the active model → train
→ evaluate the candidate → decide → promote or reject.

:func:`run_cycle` takes the lock and :func:`_run_stages` reads top to bottom as that list: each stage
is a function returning a typed result, timed under its name in ``update_run.timings``; what each
stage counted and measured goes into the run's ``counts`` and ``metrics`` as soon as it finishes,
so a failed run records how far it got. The serving model and index are never touched until the
very end: training happens on a fresh copy of the active checkpoint, the candidate is saved as a
new version and only a passing gate moves the ``ACTIVE`` pointer. Any failure leaves the active
model serving and the run recorded as failed, with the error.

Continual-learning choices (named as in CKL, Jang et al. 2022, and REALM):
- new text = passages of the new documents + verbalised new and changed facts (several
  templates each), with salient-span masking on the mentions of the entities they concern;
- replay = a random sample of earlier passages and verbalised unchanged facts, mixed into every
  batch at ``replay_ratio`` (the guard against forgetting; the retention gate checks it worked);
- optional L2 pull of the weights towards the active model's (``l2_pull``, as in RecAdam / EWC
  without the Fisher term), or LoRA adapters over frozen weights (``train.lora_rank``, merged into
  the candidate; CKL's parameter-expansion guard), the new names' embedding rows trained in full;
- reading (K-BERT / REALM): with ``train.injection_probability`` a step trains on the new,
  changed and a sample of unchanged facts stated with the knowledge the query pipeline injects for
  them, so the model keeps reading injected text (:func:`reading_exercises`).
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from encoder import (
    MLMBundle,
    ReadingExample,
    SpanText,
    TrainConfig,
    TrainResult,
    grow_vocabulary,
    save_checkpoint,
    set_active,
    train_mlm,
    train_mlm_distributed,
)
from knowledge import ChunkEmbedder, FactView, IngestSummary, KnowledgeStore, Watermark, iter_input_files
from updater.entity_ranks import CandidateSource
from updater.evaluation import KnowledgeSource
from updater.gates import EvalSet, Evaluation, GateConfig, checkpoint_metrics, decide, evaluate_version
from updater.inbox import take_inbox, taken_by
from updater.locking import CycleBusy, CycleLock, cycle_lock
from updater.probes import probes_from_facts
from updater.recovery import recover_abandoned
from updater.texts import (
    HELDOUT_MODULO,
    VERBALISATIONS,
    FactChanges,
    changed_facts,
    reading_exercises,
    training_texts,
    verbalise_fact,
)

log = logging.getLogger("updater.cycle")


@dataclass
class CycleConfig:
    """Settings of a cycle: training, gates, and how much replay, probing and held-out text it uses."""

    train: TrainConfig = field(default_factory=TrainConfig)
    gates: GateConfig = field(default_factory=GateConfig)
    replay_passages: int = 2000
    replay_facts: int = 500
    replay_fact_patterns: int = 1  # each replayed fact stated in this many of the verbalisations
    retention_probes: int = 200  # unchanged facts probed for retention (a seeded sample)
    acquisition_probes: int = 300  # at most this many new (and changed) facts probed per group
    heldout_passages: int = 200
    eval_modes: tuple[str, ...] = ("closed-book", "concat")
    l2_pull: float = 0.0
    # Processes of the training stage: more than one trains data-parallel through
    # torch.distributed.run (encoder.launch); evaluation and gates stay in this process.
    train_nproc: int = 1
    work_dir: Path | None = None  # where a distributed training stage keeps its temporary files
    lease_seconds: float = 600.0
    min_train_texts: int = 1  # below this, nothing new to learn: evaluate and record only
    relink_max_passages: int = 200_000  # relink earlier text for new names up to this store size
    reading_unchanged: int = 300  # unchanged facts also read, so reading is not learned on new facts only
    evidence_boost: float = 0.0  # augmented evaluation's copy prior, as the query pipeline applies it
    normalisation: str = "mean"  # how entity-level scores are normalised by length (as the pipeline does)
    shortlist: int | None = None  # candidates scored in full per probe (as the pipeline does; None: all)
    length_branches: bool = True  # concat: candidate lengths as branches of one row (as the pipeline does)
    # New names learned as one token each (encoder.grow_vocabulary): names of the entities new to the
    # store since the active model's watermark that the tokenizer splits, met at least this often
    # in the text to learn; None: the vocabulary stays as it is.
    vocabulary_min_count: int | None = None
    # Patterns new facts are stated in for training, replayed facts in (the first) and reading
    # exercises in (see updater.VERBALISATIONS); fewer patterns: fewer sentences per fact.
    verbalisations: tuple[str, ...] = VERBALISATIONS


@dataclass
class CycleContext:
    """What a cycle works on. ``kecl`` builds it from settings; tests build it by hand."""

    store: KnowledgeStore
    checkpoints_dir: Path
    load_active: Callable[[], MLMBundle]  # a fresh copy of the active (or base) model
    add_to_index: Callable[[IngestSummary], None] | None = None  # put an ingest's new passages into the index
    embed_chunks: ChunkEmbedder | None = None  # vectors stored with new passages (other processes read them)
    knowledge: KnowledgeSource | None = None  # facts/passages for augmented evaluation
    candidates: CandidateSource | None = None  # answer candidates per probe: evaluation at entity level
    on_promote: Callable[[str], None] | None = None  # reload the serving model, re-embed if needed
    inbox_dir: Path | None = None
    holder: str | None = None


@dataclass
class CycleReport:
    """What a cycle did, as recorded in its ``update_run`` row (``run_id`` 0 when skipped)."""

    run_id: int
    status: str  # "succeeded" | "failed" | "skipped"
    decision: str | None = None  # "promote" | "reject" | "no-op"
    reasons: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    candidate: str | None = None
    error: str | None = None


# ----------------------------------------------------------------------------- stage results


@dataclass
class Ingested:
    """The files the cycle took in (moved out of the inbox) and what they added to the store."""

    files: list[Path]
    summary: IngestSummary

    def counts(self) -> dict[str, Any]:
        """The run row's counts: what the store added (non-zero only), files read, the first issues."""
        return {
            **{k: v for k, v in self.summary.counts().items() if v},
            "files": len(self.files),
            "issues": [str(i) for i in self.summary.issues][:100],
        }


@dataclass
class Taken:
    """What the cycle learns from: the store's changes between the active model's watermark
    (``since``) and the store's watermark when the cycle looked (``until``, recorded with the
    candidate)."""

    since: Watermark
    until: Watermark
    summary: IngestSummary

    def counts(self) -> dict[str, Any]:
        """The run row's account of what was taken: the two watermarks and what lies between."""
        return {
            "since": self.since.to_dict(),
            "until": self.until.to_dict(),
            "passages": len(self.summary.new_passage_ids),
            "facts": len(self.summary.new_fact_ids),
            "closed_facts": len(self.summary.closed_fact_ids),
            "entities": self.summary.entities_added,
        }


@dataclass
class TrainingData:
    """The text to learn (``texts``), the replay mixed into every batch, and the unchanged facts in
    this cycle's seeded order (replay, reading and retention probes take from the front)."""

    changes: FactChanges
    texts: list[SpanText]
    replay: list[SpanText]
    unchanged: list[FactView]

    def counts(self) -> dict[str, int]:
        """The run row's counts of facts and texts."""
        return {
            "new_facts": len(self.changes.new),
            "changed_facts": len(self.changes.changed),
            "train_texts": len(self.texts),
            "replay_texts": len(self.replay),
        }


# ----------------------------------------------------------------------------- the cycle


def run_cycle(
    ctx: CycleContext,
    config: CycleConfig | None = None,
    paths: Sequence[Path] | None = None,
    trigger: str = "manual",
    wait_seconds: float = 0.0,
) -> CycleReport:
    """Run one update cycle over ``paths`` (default: the files waiting in the inbox).

    Takes the database lock first (waiting up to ``wait_seconds``): if another process is running
    a cycle, returns a report with status "skipped" and records nothing. Runs a killed cycle left
    "running" are then marked failed and what they ingested is learnt by this cycle. Never raises for a failed stage: the report (and the
    ``update_run`` row) says "failed" with the error, and the active model keeps serving.
    """
    config = config or CycleConfig()
    try:
        with cycle_lock(
            ctx.store, holder=ctx.holder, lease_seconds=config.lease_seconds, wait_seconds=wait_seconds
        ) as lock:
            return _run_locked(ctx, config, paths, trigger, lock)
    except CycleBusy as busy:
        log.info("update cycle skipped: %s", busy)
        return CycleReport(run_id=0, status="skipped", reasons=[str(busy)])


class _Run:
    """The ``update_run`` row as the stages fill it: timings, counts, metrics, the candidate."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.timings: dict[str, float] = {}
        self.counts: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.candidate: str | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the stage under ``name``, also when it fails (the row shows where a run stopped)."""
        t0 = time.perf_counter()
        log.info("cycle stage: %s", name)
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - t0, 3)


def _run_locked(
    ctx: CycleContext, config: CycleConfig, paths: Sequence[Path] | None, trigger: str, lock: CycleLock
) -> CycleReport:
    store = ctx.store
    abandoned, recovered = recover_abandoned(store)
    run = _Run(store.start_run(trigger))
    if abandoned:
        run.counts["recovered_runs"] = abandoned
    decision: str | None = None
    reasons: list[str] = []
    error: str | None = None
    try:
        decision, reasons = _run_stages(ctx, config, paths, run, lock, recovered)
        status = "succeeded"
    except Exception as exc:  # noqa: BLE001 - recorded, never raised: the active model keeps serving
        log.exception("update cycle %d failed", run.run_id)
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        run.metrics["traceback"] = traceback.format_exc(limit=8)
    report = CycleReport(
        run.run_id, status, decision, reasons, run.timings, run.counts, run.metrics, run.candidate, error
    )
    store.finish_run(
        run.run_id,
        status=report.status,
        timings=report.timings,
        counts=report.counts,
        metrics=_jsonable(report.metrics),
        decision=report.decision,
        reasons=report.reasons,
        error=report.error,
        checkpoint_version=report.candidate,
    )
    log.info("update cycle %d %s: %s %s", run.run_id, report.status, report.decision, "; ".join(report.reasons))
    return report


def _run_stages(
    ctx: CycleContext,
    config: CycleConfig,
    paths: Sequence[Path] | None,
    run: _Run,
    lock: CycleLock,
    recovered: IngestSummary,
) -> tuple[str, list[str]]:
    """Every stage in order; returns the decision and its reasons. Raises whatever a stage raises.

    ``recovered``: what killed cycles ingested (already indexed, since the index is reconciled
    with the store on load), learnt together with this cycle's input."""
    store = ctx.store
    before_ingest = store.max_passage_id()  # passages up to here were linked before this cycle's names
    with run.stage("ingest"):
        ingested = ingest(ctx, paths, run.run_id)
        if ctx.inbox_dir is not None and run.counts.get("recovered_runs"):
            # a run killed mid-ingest stored only part of its files: ingest them again (what is
            # already stored counts as unchanged), so nothing taken from the inbox is lost
            again = [f for r in run.counts["recovered_runs"] for f in taken_by(ctx.inbox_dir, r)]
            if again:
                ingested.summary.merge(ctx.store.ingest_paths(again, embed=ctx.embed_chunks))
    run.counts.update(ingested.counts())
    with run.stage("link"):
        relinked = relink_earlier_text(store, ingested.summary, before_ingest, config.relink_max_passages)
    if relinked is not None:
        run.counts["mentions_relinked"] = relinked
    with run.stage("index"):
        indexed = index_new_passages(ctx, ingested.summary)
    if indexed:
        run.counts["indexed"] = indexed
    if recovered.passages_added or recovered.facts_added:
        # already in the store, so the watermark below takes them; counted so the run says so
        run.counts["recovered_from_dead_runs"] = recovered.passages_added + recovered.facts_added
    with run.stage("load_active"):
        model = ctx.load_active()  # our own fresh copy, not the serving model: trained in place below
        parent = model.version
    # Everything that entered the store since the active model was trained, by whatever path.
    taken = take_since(store, model.metadata.get("watermark"))
    run.counts["taken"] = taken.counts()
    summary = taken.summary
    watermark = taken.since.passage  # passages up to here are earlier text (replay, held-out)

    changes = changed_facts(store, summary)
    with run.stage("verbalise"):
        data = verbalise(store, summary, changes, watermark, config, run.run_id)
    run.counts.update(data.counts())
    reading: list[ReadingExample] = []
    if config.train.injection_probability > 0 and ctx.knowledge is not None and data.texts:
        with run.stage("reading"):
            fresh = changes.new + changes.changed
            reading = reading_exercises(
                fresh + data.unchanged[: config.reading_unchanged],
                ctx.knowledge,
                run.run_id,
                patterns=config.verbalisations,
            )
        run.counts["reading_exercises"] = len(reading)
    eval_set = build_eval_set(store, data, watermark, config, run.run_id)

    with run.stage("evaluate_active"):
        active = evaluate_version(
            model,
            eval_set,
            ctx.knowledge,
            config.eval_modes,
            config.evidence_boost,
            ctx.candidates,
            config.normalisation,
            config.shortlist,
            config.length_branches,
        )
    run.metrics["active"] = active.to_dict()
    if len(data.texts) < config.min_train_texts:
        return "no-op", ["nothing new to learn"]

    if config.vocabulary_min_count is not None:
        with run.stage("vocabulary"):
            grown = grow_names(store, model, taken, data, config.vocabulary_min_count)
        run.counts["vocabulary_added"] = len(grown)
        model.metadata["vocabulary_added"] = grown
    with run.stage("train"):
        trained = train_candidate(model, data, reading, config, lock)
    run.metrics["train"] = _train_metrics(trained)
    with run.stage("evaluate_candidate"):
        candidate = evaluate_version(
            model,
            eval_set,
            ctx.knowledge,
            config.eval_modes,
            config.evidence_boost,
            ctx.candidates,
            config.normalisation,
            config.shortlist,
            config.length_branches,
        )
    run.metrics["candidate"] = candidate.to_dict()
    decision, reasons = decide(config.gates, run.metrics["active"], run.metrics["candidate"])
    with run.stage("checkpoint"):
        run.candidate = save_candidate(ctx, model, parent, candidate, taken.until)
    if decision == "promote":
        with run.stage("promote"):
            promote(ctx, run.candidate)
    else:
        store.set_checkpoint_status(run.candidate, "rejected")
    return decision, reasons


# ----------------------------------------------------------------------------- the stages


def ingest(ctx: CycleContext, paths: Sequence[Path] | None, run_id: int) -> Ingested:
    """Read ``paths`` (default: take the inbox's files) into the store. Returns :class:`Ingested`;
    raises what reading or storing raises (a bad record is an issue in the summary, not an error)."""
    files = list(paths) if paths is not None else take_inbox(ctx.inbox_dir, run_id) if ctx.inbox_dir else []
    summary = (
        ctx.store.ingest_paths(list(iter_input_files(files)), embed=ctx.embed_chunks) if files else IngestSummary()
    )
    summary.merge(ctx.store.apply_due_facts())  # facts announced earlier whose day has come
    return Ingested(files, summary)


def take_since(store: KnowledgeStore, recorded: dict[str, Any] | None) -> Taken:
    """What entered the store between the active model's watermark (``recorded``, as its checkpoint
    holds it; none: the model learned nothing of the store yet) and the store's watermark now.
    Raises ValueError on a malformed recorded watermark."""
    since, until = Watermark.from_dict(recorded), store.watermark()
    return Taken(since, until, store.changes_between(since, until))


def grow_names(store: KnowledgeStore, bundle: MLMBundle, taken: Taken, data: TrainingData, min_count: int) -> list[str]:
    """Add the names of the entities new since the active model's watermark that the tokenizer
    splits and that the text to learn mentions at least ``min_count`` times to the vocabulary, one
    token each (:func:`encoder.grow_vocabulary`, initialised from their pieces); returns them."""
    names = []
    for entity_id in range(taken.since.entity + 1, taken.until.entity + 1):
        view = store.get_entity(entity_id)
        if view is not None:
            names.append(view.name)
    corpus = " ".join(t.text for t in data.texts).lower()
    frequent = [n for n in names if corpus.count(n.lower()) >= min_count]
    return grow_vocabulary(bundle, frequent)


def relink_earlier_text(
    store: KnowledgeStore, summary: IngestSummary, watermark: int | None, max_passages: int
) -> int | None:
    """New names (new entities, renames) may occur in text ingested earlier: relink the passages up to
    ``watermark``. Returns the mentions written, or ``None`` when nothing was relinked (no new names,
    no earlier text, or a store above ``max_passages``, where new names link in new text only)."""
    if not ((summary.entities_added or summary.entities_updated) and watermark):
        return None
    if watermark > max_passages:
        log.warning(
            "store too large to relink every passage in a cycle (%d); new names link in new text only", watermark
        )
        return None
    earlier = [p for batch in store.iter_passages() for p, _ in batch if p <= watermark]
    return store.relink_passages(earlier)


def index_new_passages(ctx: CycleContext, summary: IngestSummary) -> int:
    """Embed the new passages into the index (``ctx.add_to_index``); returns how many (0: none, or
    no index to keep current)."""
    if ctx.add_to_index is None or not summary.new_passage_ids:
        return 0
    ctx.add_to_index(summary)
    return len(summary.new_passage_ids)


def verbalise(
    store: KnowledgeStore,
    summary: IngestSummary,
    changes: FactChanges,
    watermark: int | None,
    config: CycleConfig,
    run_id: int,
) -> TrainingData:
    """The text to learn (:func:`training_texts`) and the replay: a seeded sample of earlier passages
    (never held-out ones) plus ``replay_fact_patterns`` statements of each of the first
    ``replay_facts`` unchanged facts."""
    texts = training_texts(store, summary, changes.focus, config.verbalisations)
    this_cycle = set(summary.new_fact_ids)
    unchanged = [f for f in store.facts(limit=None) if f.id not in this_cycle]
    random.Random(run_id).shuffle(unchanged)
    replay = [
        SpanText(t)
        for _, t in store.sample_passages(
            config.replay_passages, max_id=watermark or None, exclude_modulo=HELDOUT_MODULO, seed=run_id
        )
    ]
    for f in unchanged[: config.replay_facts]:
        replay.extend(verbalise_fact(f, config.verbalisations)[: config.replay_fact_patterns])
    return TrainingData(changes, texts, replay, unchanged)


def build_eval_set(
    store: KnowledgeStore, data: TrainingData, watermark: int | None, config: CycleConfig, run_id: int
) -> EvalSet:
    """Probes of new and changed facts (acquisition, a seeded sample) and of unchanged ones
    (retention), and the held-out passages that existed before this cycle."""

    def sample(facts: list[FactView], n: int) -> list[FactView]:
        facts = [f for f in facts if f.template]
        return facts if len(facts) <= n else random.Random(run_id).sample(facts, n)

    probes = {
        "new": probes_from_facts(sample(data.changes.new, config.acquisition_probes), group="new"),
        "changed": probes_from_facts(sample(data.changes.changed, config.acquisition_probes), group="changed"),
        "unchanged": probes_from_facts(
            [f for f in data.unchanged[: config.retention_probes] if f.template], group="unchanged"
        ),
    }
    heldout = [t for _, t in store.heldout_passages(config.heldout_passages, HELDOUT_MODULO, max_id=watermark or None)]
    return EvalSet(probes, heldout, data.changes.pairs)


def train_candidate(
    bundle: MLMBundle, data: TrainingData, reading: Sequence[ReadingExample], config: CycleConfig, lock: CycleLock
) -> TrainResult:
    """Train ``bundle`` in place on the new text with replay (and reading exercises), checking after
    every step that the lock is still ours. Raises ``CycleLockLost`` if another process took it
    over, and what :func:`encoder.train_mlm` raises; with ``config.train_nproc`` > 1, what
    :func:`encoder.launch.train_mlm_distributed` raises."""
    train_config = config.train
    if config.l2_pull > 0 and train_config.lora_rank > 0:
        # the pull anchors the weights LoRA freezes (by their names before peft wraps them): it would pull nothing
        raise ValueError("l2_pull and lora_rank are two forgetting guards that do not combine: choose one")
    grown = bundle.metadata.get("vocabulary_added") or []
    if train_config.lora_rank > 0 and grown:
        # the new names' rows have no pretrained value to keep: they train in full beside the adapters
        ids = bundle.tokenizer.convert_tokens_to_ids(list(grown))
        train_config = replace(train_config, trainable_tokens=tuple(ids if isinstance(ids, list) else [ids]))
    if config.train_nproc > 1:
        if config.l2_pull > 0 or train_config.lora_rank > 0:
            raise ValueError("l2_pull and LoRA need the single-process training stage (train_nproc=1)")
        return train_mlm_distributed(
            bundle,
            data.texts,
            data.replay,
            train_config,
            nproc=config.train_nproc,
            reading=reading,
            work_dir=config.work_dir,
            check=lock.check,  # stop the workers before promoting over another cycle's work
        )
    return train_mlm(
        bundle,
        data.texts,
        data.replay,
        train_config,
        progress=False,
        on_step=lambda step, m: lock.check(),  # stop before promoting over another cycle's work
        extra_loss=_l2_pull(bundle, config.l2_pull) if config.l2_pull > 0 else None,
        reading=reading,
    )


def save_candidate(
    ctx: CycleContext, bundle: MLMBundle, parent: str | None, evaluation: Evaluation, watermark: Watermark
) -> str:
    """Save the trained model as a new version with its flat metrics and the store watermark it was
    trained through, and record it as a candidate; returns the version."""
    metrics = checkpoint_metrics(evaluation)
    if bundle.metadata.get("vocabulary_added"):
        metrics["vocabulary_added"] = bundle.metadata["vocabulary_added"]  # the growth, with the weights
    version = save_checkpoint(
        bundle, ctx.checkpoints_dir, parent=parent, metrics=metrics, watermark=watermark.to_dict()
    )
    ctx.store.record_checkpoint(version, parent, "candidate", metrics, str(Path(ctx.checkpoints_dir) / version))
    return version


def promote(ctx: CycleContext, version: str) -> None:
    """Make ``version`` the active checkpoint and let the serving side reload it.

    The SQL row is the commit point (one transaction retires the previous active version); the
    ``ACTIVE`` file is only a cache written after it, so a crash at any step leaves one answer."""
    ctx.store.set_checkpoint_status(version, "active")
    try:
        set_active(ctx.checkpoints_dir, version)
    except OSError as exc:
        log.warning("could not update the ACTIVE cache file for %s: %s", version, exc)
    if ctx.on_promote is not None:
        ctx.on_promote(version)


# ----------------------------------------------------------------------------- helpers


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


def _train_metrics(result: TrainResult) -> dict[str, Any]:
    return {
        "steps": result.steps,
        "final_loss": result.final_loss,
        "tokens_per_second": result.tokens_per_second,
        "bf16": result.bf16,
        "processes": result.metrics.get("world_size", 1),
    }


def _jsonable(x: Any) -> Any:
    """JSON-safe for the run row: string keys, lists for tuples, NaN as null."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and x != x:
        return None
    return x
