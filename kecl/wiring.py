"""The composition root: every component that needs a model is built here from settings.

Model names become paths once (:func:`kecl.home.resolve_model_path`) and devices are resolved
once (:func:`device_for`); the encoder and retrieval packages take paths and concrete devices.
Holds no model, SQL or FAISS logic of its own.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from apscheduler.schedulers.base import BaseScheduler
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from encoder import (
    ADAPT_RECIPE,
    SHIPPED_DIR,
    CheckpointError,
    MLMBundle,
    TrainConfig,
    active_version,
    adapt_default,
    bf16_supported,
    fallback_version,
    list_checkpoints,
    load_checkpoint,
    load_mlm,
    resolve_device,
    set_active,
    temp_name,
    verify_checkpoint,
)
from kecl.home import current_index_folder, open_store, resolve_model_path
from kecl.settings import Settings
from knowledge import KnowledgeStore
from retrieval import (
    CoalescingEmbedder,
    Embedder,
    EmbedderMismatchError,
    FetchVectors,
    IndexConfig,
    IndexHandle,
    IndexLoadError,
    MeanPoolingEmbedder,
    PassageIndex,
    build_from_passages,
    choose_kind,
    load_index,
    reconcile,
)
from updater import CycleConfig, GateConfig, build_scheduler, run_daemon

log = logging.getLogger("kecl")

CYCLE_JOB_REF = "kecl.jobs:run_scheduled_cycle"
"""The scheduled cycle, as APScheduler stores it (an importable ``module:function``)."""


def device_for(settings: Settings) -> torch.device:
    """The device ``model.device`` names (``"auto"``: CUDA when available, else the CPU)."""
    return resolve_device(settings.model.device)


# ----------------------------------------------------------------------------- the encoder


def load_base_model(settings: Settings) -> MLMBundle:
    """The configured base model (``model.name_or_path``), with a fresh MLM head if it has none."""
    name = settings.model.name_or_path
    return load_mlm(resolve_model_path(name), device=device_for(settings), name=name)


def active_checkpoint(settings: Settings, store: KnowledgeStore) -> str | None:
    """The active version as SQL records it: the one answer. The ``ACTIVE`` file is a cache written
    after SQL commits; it is read only to adopt a home from before SQL recorded checkpoints (no
    checkpoint row at all), and never outvotes SQL."""
    version = store.active_checkpoint()
    if version is not None or store.checkpoints():
        if version is not None and active_version(settings.checkpoints_dir) != version:
            _cache_active(settings, version)
        return version
    cached = active_version(settings.checkpoints_dir)
    if cached is not None and (settings.checkpoints_dir / cached).is_dir():
        log.info("recording checkpoint %s (named by the ACTIVE file) as active in SQL", cached)
        store.record_checkpoint(cached, None, "active", {}, str(settings.checkpoints_dir / cached))
    return cached


def promote_checkpoint(settings: Settings, store: KnowledgeStore, version: str) -> None:
    """Make ``version`` the active checkpoint: verify its files, commit the row (the commit point:
    one transaction retires the previous one), then refresh the ``ACTIVE`` cache. Raises
    :class:`encoder.CheckpointError` for a missing or damaged checkpoint, changing nothing."""
    verify_checkpoint(settings.checkpoints_dir / version)
    store.set_checkpoint_status(version, "active")
    _cache_active(settings, version)


def _cache_active(settings: Settings, version: str) -> None:
    try:
        set_active(settings.checkpoints_dir, version)
    except (OSError, CheckpointError) as exc:  # only a cache: SQL has already decided
        log.warning("could not update the ACTIVE cache file for %s: %s", version, exc)


def load_encoder(settings: Settings, store: KnowledgeStore | None = None) -> MLMBundle:
    """The active checkpoint's encoder (as SQL records it), or the base model before any training
    (with a warning: its MLM head may be untrained), set to answer under bf16 where settings and
    hardware allow. Raises :class:`encoder.CheckpointError` when the active version's files are
    missing or damaged."""
    owned = store is None
    store = store or open_store(settings)
    try:
        version = active_checkpoint(settings, store)
    finally:
        if owned:
            store.close()
    bundle = _load_version(settings, version) if version else None
    if bundle is None:
        log.warning(
            "no active checkpoint in %s: serving the base model %s (run `kecl init` to adapt it)",
            settings.checkpoints_dir,
            settings.model.name_or_path,
        )
        bundle = load_base_model(settings)
    bundle.inference_bf16 = settings.model.bf16 and bf16_supported(bundle.device)
    return bundle


def load_training_copy(settings: Settings, store: KnowledgeStore) -> MLMBundle:
    """A fresh copy of the active (or base) model for a cycle to train."""
    version = active_checkpoint(settings, store)
    if version is None:
        return load_base_model(settings)
    return _load_version(settings, version)


def _load_version(settings: Settings, version: str) -> MLMBundle:
    """Load checkpoint ``version``. Raises :class:`encoder.CheckpointError` carrying the version
    and a parent that verifies, so the user is told which version to activate instead."""
    try:
        return load_checkpoint(settings.checkpoints_dir / version, device=device_for(settings))
    except CheckpointError as exc:
        raise CheckpointError(str(exc), version, fallback_version(settings.checkpoints_dir, version)) from exc


def ensure_default_checkpoint(settings: Settings, store: KnowledgeStore | None = None) -> str:
    """Make sure a checkpoint is active; returns its version.

    The default model's MLM head starts untrained, so a fresh home gets the adapted default
    (:func:`encoder.adapt_default`): the adaptation shipped with kecl where it was made from these
    weights (``model.shipped_adaptation``), else trained. A trained one is kept in
    ``settings.cache_dir`` (keyed by model and :data:`encoder.ADAPT_RECIPE`) and copied into later
    fresh homes instead of training again.
    """
    checkpoints = settings.checkpoints_dir
    owned = store is None
    store = store or open_store(settings)
    current = active_checkpoint(settings, store)
    if current:
        if owned:
            store.close()
        return current
    checkpoints.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", settings.model.name_or_path)
    cached = settings.cache_dir.expanduser() / f"adapted-{slug}-r{ADAPT_RECIPE}"
    version = None
    if cached.is_dir() and not list_checkpoints(checkpoints):
        try:
            manifest = verify_checkpoint(cached)
            shutil.copytree(cached, checkpoints / manifest["version"])
            version = manifest["version"]
            log.info("default checkpoint %s copied from the cache %s", version, cached)
        except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
            log.warning("cached default checkpoint %s unusable (%s); adapting again", cached, exc)
    if version is None:
        log.info("adapting the model's MLM head: the shipped adaptation where it fits, else trained once per machine")
        name = settings.model.name_or_path
        version, adapted = adapt_default(
            checkpoints,
            resolve_model_path(name),
            device=str(device_for(settings)),
            name=name,
            bf16=settings.model.bf16,
            shipped_dir=SHIPPED_DIR if settings.model.shipped_adaptation else None,
        )
        if "shipped" not in adapted.metadata["metrics"]:  # a shipped one is applied again in seconds
            _cache_checkpoint(checkpoints / version, cached)
    store.record_checkpoint(version, None, "active", {"kind": "default-adaptation"}, str(checkpoints / version))
    _cache_active(settings, version)
    if owned:
        store.close()
    return version


def _cache_checkpoint(folder: Path, cached: Path) -> None:
    try:
        tmp = cached.parent / temp_name()
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder, tmp)
        if cached.exists():
            shutil.rmtree(cached)
        tmp.rename(cached)
    except OSError as exc:
        log.warning("could not cache the adapted default in %s: %s", cached, exc)


def train_config(settings: Settings, steps: int | None = None) -> TrainConfig:
    """The encoder's ``TrainConfig`` from the ``train`` and ``model`` settings: the one mapping,
    used by ``kecl train``, the update cycle and the benchmarks."""
    t = settings.train
    return TrainConfig(
        steps=steps or t.steps,
        batch_size=t.batch_size,
        max_length=settings.model.max_length,
        learning_rate=t.learning_rate,
        warmup_ratio=t.warmup_ratio,
        weight_decay=t.weight_decay,
        grad_accum=t.grad_accum,
        max_grad_norm=t.max_grad_norm,
        mlm_probability=t.mlm_probability,
        replay_ratio=t.replay_ratio,
        seed=t.seed,
        bf16=None if settings.model.bf16 else False,
        injection_probability=t.injection_probability,
        injection_strategy=t.injection_strategy,
        attention_dropout=t.attention_dropout,
        hidden_dropout=t.hidden_dropout,
        injection_max_length=settings.model.max_injected_length,
        log_path=settings.runs_dir / "train.jsonl",
        block_cache_dir=settings.blocks_cache_dir,
        lora_rank=t.lora_rank,
        lora_alpha=t.lora_alpha,
    )


def cycle_config(settings: Settings, steps: int | None = None) -> CycleConfig:
    """An update cycle's training and gate settings."""
    g = settings.gates
    return CycleConfig(
        train=train_config(settings, steps),
        gates=GateConfig(g.max_retention_drop, g.max_loss_increase, g.min_acquisition),
        evidence_boost=settings.model.evidence_boost,
        normalisation=settings.answers.normalisation,
        train_nproc=settings.train.nproc,
        work_dir=settings.runs_dir,
        shortlist=settings.answers.shortlist,
        length_branches=settings.answers.length_branches,
        vocabulary_min_count=settings.train.vocabulary_min_count,
        l2_pull=settings.train.l2_pull,
    )


# ----------------------------------------------------------------------------- retrieval


def make_embedder(settings: Settings, encoder: MLMBundle | None = None) -> CoalescingEmbedder:
    """The embedder ``index.embedder`` names: a sentence-transformers id or path, or ``"encoder"``
    for mean pooling over the MLM encoder (``encoder``: the active checkpoint's bundle; without it
    the base model is loaded). Wrapped in a :class:`CoalescingEmbedder`, so concurrent queries
    embed together."""
    name = settings.index.embedder
    batch = settings.index.batch_size
    if name != "encoder":
        path = resolve_model_path(name)
        device = device_for(settings)
        bf16 = settings.index.bf16 and bf16_supported(device)
        return CoalescingEmbedder(
            Embedder(
                path, batch_size=batch, device=str(device), name=name, trace=settings.index.trace_embedder, bf16=bf16
            )
        )
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    if encoder is not None:
        model, tokenizer, version = encoder.model.bert, encoder.tokenizer, encoder.version or "base"
    else:
        path = resolve_model_path(settings.model.name_or_path)
        model, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        version = settings.model.name_or_path
    return CoalescingEmbedder(MeanPoolingEmbedder(model, tokenizer, version=version, batch_size=batch))


def index_config(settings: Settings) -> IndexConfig:
    """The FAISS parameters of ``index.*``."""
    return IndexConfig.from_settings(settings.index)


def stored_vectors_of(settings: Settings, store: KnowledgeStore) -> FetchVectors | None:
    """Where building or reconciling an index reads the vectors other processes stored with their
    passages (None when ``processes.share_vectors`` is off: everything is embedded here)."""
    return store.passage_vectors if settings.processes.share_vectors else None


def build_index_from_store(
    settings: Settings, store: KnowledgeStore, embedder: Any, kind: str | None = None
) -> PassageIndex:
    """A new index over every passage in the store (its kind by size unless given); a passage
    whose vector this embedder stored is read, not embedded again."""
    kind = kind or choose_kind(store.passage_count(), settings.index)
    vectors = stored_vectors_of(settings, store)
    index = build_from_passages(
        embedder,
        lambda: store.iter_passages(batch_size=1000),
        kind=kind,
        config=index_config(settings),
        fetch_vectors=vectors,
    )
    # passages committed while we embedded
    reconcile(index, embedder, store.passage_ids(), store.passage_texts, fetch_vectors=vectors)
    return index


def open_index(settings: Settings, store: KnowledgeStore, embedder: Any) -> IndexHandle:
    """The current index, reconciled with the store's passages (see :func:`load_current_index`)."""
    return load_current_index(settings, store, embedder)[0]


def load_current_index(settings: Settings, store: KnowledgeStore, embedder: Any) -> tuple[IndexHandle, int]:
    """Load the newest published index generation (else an index saved by an older kecl in
    ``settings.index_dir``, else build one), reconcile it with SQL's passages and return it with
    the event id to follow from: every passage event up to it is in the index. Writes no file:
    publishing is the index publisher's job (:mod:`kecl.publish`)."""
    # Read before the reconcile, and far enough back that no transaction open then is still open.
    start = store.settled_passage_event_id(settings.processes.gap_seconds)
    index: PassageIndex | None = None
    folder = current_index_folder(settings, store)
    try:
        index = load_index(folder)
        report = reconcile(
            index, embedder, store.passage_ids(), store.passage_texts, fetch_vectors=stored_vectors_of(settings, store)
        )
        if report.needs_retrain:
            log.info("the IVF-PQ index outgrew its training sample; rebuilding it")
            index = None
    except (IndexLoadError, EmbedderMismatchError) as why:
        log.info("building the index: %s", why)
        index = None
    if index is None:
        index = build_index_from_store(settings, store, embedder)
    return IndexHandle(index, embedder), start


def load_generation(settings: Settings, store: KnowledgeStore, folder: str, embedder: Any) -> PassageIndex:
    """A published generation's index, brought up to SQL's passages with ``embedder``. Raises
    :class:`retrieval.IndexLoadError` for missing or damaged files, and
    :class:`retrieval.EmbedderMismatchError` when ``embedder`` did not make it."""
    index = load_index(settings.index_dir / folder)
    reconcile(
        index, embedder, store.passage_ids(), store.passage_texts, fetch_vectors=stored_vectors_of(settings, store)
    )
    return index


# ----------------------------------------------------------------------------- the scheduler


def scheduler_options(settings: Settings) -> dict[str, Any]:
    """:func:`updater.build_scheduler`'s keywords from the ``scheduler`` settings: kecl's cycle as
    the job, for this home."""
    s = settings.scheduler
    return dict(
        job_ref=CYCLE_JOB_REF,
        job_kwargs={"home": str(settings.home.resolve())},
        interval_minutes=s.interval_minutes,
        cron=s.cron,
        inbox_dir=settings.inbox_dir,
        inbox_quiet_seconds=s.inbox_quiet_seconds,
        misfire_grace_seconds=s.misfire_grace_seconds,
    )


def make_scheduler(settings: Settings) -> BaseScheduler:
    """A background scheduler (not started) for this home's update cycles."""
    return build_scheduler(settings.db_url, **scheduler_options(settings), blocking=False)


def run_scheduler(settings: Settings) -> None:
    """Run this home's scheduler in the foreground until SIGINT/SIGTERM (``kecl schedule``)."""
    open_store(settings).close()  # migrate before the job store touches the database
    run_daemon(settings.db_url, **scheduler_options(settings))
