"""The loop that keeps the encoder current: update cycles, evaluation probes and gates, scheduling.

Components meet here (encoder, retrieval, knowledge); ``kecl`` wires it from settings. Public names
are listed in ``__all__``.
"""

from updater.cycle import CycleConfig, CycleContext, CycleReport, run_cycle
from updater.entity_ranks import CandidateSource, gold_rank
from updater.evaluation import EvalReport, KnowledgeSource, Metrics, evaluate
from updater.gates import GateConfig, decide
from updater.inbox import inbox_ready
from updater.locking import CYCLE_LOCK_NAME, CycleBusy, CycleLock, CycleLockLost, cycle_lock
from updater.probes import (
    GOOGLE_RE_TEMPLATES,
    Probe,
    fill_template,
    gold_token_id,
    load_lama_probes,
    probes_from_facts,
    read_relation_templates,
    single_token_filter,
)
from updater.scheduler import CYCLE_JOB_ID, build_scheduler, next_scheduled_run, run_daemon
from updater.texts import VERBALISATIONS, verbalise_fact

__all__ = [
    "CYCLE_JOB_ID",
    "CYCLE_LOCK_NAME",
    "GOOGLE_RE_TEMPLATES",
    "VERBALISATIONS",
    "CandidateSource",
    "CycleBusy",
    "CycleConfig",
    "CycleContext",
    "CycleLock",
    "CycleLockLost",
    "CycleReport",
    "EvalReport",
    "GateConfig",
    "KnowledgeSource",
    "Metrics",
    "Probe",
    "build_scheduler",
    "next_scheduled_run",
    "cycle_lock",
    "decide",
    "evaluate",
    "fill_template",
    "gold_rank",
    "gold_token_id",
    "inbox_ready",
    "load_lama_probes",
    "probes_from_facts",
    "read_relation_templates",
    "run_cycle",
    "run_daemon",
    "single_token_filter",
    "verbalise_fact",
]
