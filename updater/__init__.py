"""The loop that keeps the encoder current: update cycles, evaluation probes and gates, scheduling.

Components meet here (encoder, retrieval, knowledge); ``kecl`` wires it from settings.
"""

from updater.cycle import CycleConfig, CycleContext, CycleReport, run_cycle
from updater.evaluation import EvalReport, Metrics, evaluate
from updater.gates import GateConfig, decide
from updater.inbox import inbox_ready
from updater.locking import CycleBusy, CycleLock, CycleLockLost, cycle_lock
from updater.probes import Probe, load_lama_probes, probes_from_facts, single_token_filter
from updater.scheduler import CYCLE_JOB_ID, build_scheduler, run_daemon
from updater.texts import verbalise_fact

__all__ = [
    "run_cycle",
    "CycleConfig",
    "CycleContext",
    "CycleReport",
    "GateConfig",
    "decide",
    "verbalise_fact",
    "evaluate",
    "EvalReport",
    "Metrics",
    "Probe",
    "load_lama_probes",
    "probes_from_facts",
    "single_token_filter",
    "cycle_lock",
    "CycleLock",
    "CycleBusy",
    "CycleLockLost",
    "build_scheduler",
    "run_daemon",
    "inbox_ready",
    "CYCLE_JOB_ID",
]
