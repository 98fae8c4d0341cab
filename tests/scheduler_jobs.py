"""Scheduled-job stand-ins for the scheduler tests, importable as ``tests.scheduler_jobs:<name>``
with plain-data kwargs (as ``kecl.jobs`` is), by the test process and by scheduler subprocesses."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from knowledge import KnowledgeStore, make_engine
from updater.locking import CycleBusy, cycle_lock
from updater.scheduler import build_scheduler, inbox_ready

HERE = "tests.scheduler_jobs"

_stores: dict[str, KnowledgeStore] = {}


def store_for(db_url: str) -> KnowledgeStore:
    if db_url not in _stores:
        _stores[db_url] = KnowledgeStore(make_engine(db_url))
    return _stores[db_url]


def append_line(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:  # one small O_APPEND write: atomic across processes
        f.write(line + "\n")


def record_run(log_path: str) -> None:
    append_line(log_path, f"{time.time():.6f}")


def locked_cycle(db_url: str, log_path: str, tag: str, hold_seconds: float = 0.3) -> None:
    """A stand-in cycle: takes the lock, holds it, records [start, end] measured inside the lock."""
    try:
        with cycle_lock(store_for(db_url), lease_seconds=5):
            start = time.time()
            time.sleep(hold_seconds)
            append_line(log_path, f"{tag} {start:.6f} {time.time():.6f}")
    except CycleBusy:
        append_line(log_path, f"{tag} busy")
        return
    # like a real cycle's tail after the lock (writing logs): longer than the other scheduler's
    # 0.3 s interval, so it surely finds the lock free and the test can see a takeover
    time.sleep(0.5)


def slow_record(log_path: str) -> None:
    append_line(log_path, "start")
    time.sleep(1.0)
    append_line(log_path, "end")


def inbox_cycle(db_url: str, inbox: str, log_path: str) -> None:
    """A stand-in cycle that processes the inbox the way the real one does (moves files out)."""
    with cycle_lock(store_for(db_url), lease_seconds=5):
        done = Path(inbox) / "processed"
        done.mkdir(exist_ok=True)
        names = [p.name for p in inbox_ready(inbox, 0.0)]
        for name in names:
            os.replace(Path(inbox) / name, done / name)
        append_line(log_path, " ".join(names))


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def scheduler_process(db_url: str, tablename: str, log_path: str, tag: str, go_file: str, seconds: float) -> None:
    """Body of one scheduler process: its own job table, the shared cycle lock."""
    scheduler = build_scheduler(
        db_url,
        job_ref=f"{HERE}:locked_cycle",
        job_kwargs={"db_url": db_url, "log_path": log_path, "tag": tag},
        interval_minutes=0.3 / 60,
        tablename=tablename,
    )
    Path(f"{go_file}.{tag}.ready").touch()
    while not Path(go_file).exists():
        time.sleep(0.02)
    scheduler.start()
    time.sleep(seconds)
    scheduler.shutdown(wait=True)
