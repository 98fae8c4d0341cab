"""Scheduler processes: a daemon stops cleanly on SIGTERM, and two scheduler processes on one
database never run cycles at once (real child processes)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.scheduler_jobs import HERE, lines, wait_for

REPO = Path(__file__).resolve().parents[2]


def test_daemon_stops_on_sigterm_after_the_running_cycle(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kecl.db'}"
    log_path = tmp_path / "runs.log"
    code = (
        "from updater.scheduler import run_daemon; "
        f"run_daemon({url!r}, job_ref='{HERE}:slow_record', job_kwargs={{'log_path': {str(log_path)!r}}}, "
        "interval_minutes=0.5 / 60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    try:
        assert wait_for(lambda: lines(log_path) == ["start"], timeout=30), lines(log_path)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert lines(log_path) == ["start", "end"]  # the running cycle finished; no new one started


def _run_two_schedulers(db_url: str, tables: tuple[str, str], tmp_path: Path, seconds: float):  # type: ignore[no-untyped-def]
    """Start scheduler processes A and B together on ``db_url``; their cycles and busy skips."""
    log_path = tmp_path / "cycles.log"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from {HERE} import scheduler_process as p; "
                f"p({db_url!r}, {table!r}, {str(log_path)!r}, {tag!r}, {str(go)!r}, {seconds})",
            ],
            cwd=REPO,
        )
        for tag, table in zip("AB", tables)
    ]
    try:
        started = wait_for(
            lambda: all(Path(f"{go}.{t}.ready").exists() for t in "AB") or any(p.poll() is not None for p in procs),
            timeout=60,
            step=0.1,
        )
        assert started and all(p.poll() is None for p in procs), "a scheduler process failed to start"
        go.touch()  # both start scheduling at the same moment, after their (slow) imports
        for p in procs:
            assert p.wait(timeout=60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logged = lines(log_path)
    cycles = sorted(
        (float(start), float(end), tag)
        for tag, *rest in (line.split() for line in logged)
        if rest != ["busy"]
        for start, end in [rest]
    )
    for (_, e1, t1), (s2, _, t2) in zip(cycles, cycles[1:]):
        assert s2 >= e1, f"cycle {t2} started at {s2} while {t1} ran until {e1}"
    return cycles, [line for line in logged if line.endswith("busy")]


def test_two_scheduler_processes_never_run_cycles_at_once(store, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The supported setup: each scheduler owns its job table (APScheduler cannot share one between
    # running schedulers); the cycle lock in the shared database keeps their cycles apart.
    cycles, busy = _run_two_schedulers(db_url, ("jobs_a", "jobs_b"), tmp_path, seconds=2.5)
    assert len(cycles) >= 3, cycles
    assert {tag for *_, tag in cycles} == {"A", "B"}, "the lock was never taken over by the other scheduler"
    assert busy, "the schedulers never collided, so the lock was not exercised"
    assert store.lock_holder("update-cycle") is None


def test_two_schedulers_on_one_job_table_still_never_overlap(tmp_path: Path) -> None:
    # The misconfiguration DESIGN.md warns about (e.g. a scheduler per web worker): both fire the
    # same stored job. APScheduler does not prevent it; the lock keeps the cycles apart anyway.
    from knowledge import KnowledgeStore

    url = f"sqlite:///{tmp_path / 'kecl.db'}"
    KnowledgeStore.open(url).close()  # the update_lock table
    # Whether the second scheduler sees the shared job due before the first has moved its next run
    # time on is a race (on a busy machine one scheduler can win every time): each attempt checks
    # that no cycles overlapped, and attempts go on until the schedulers collided at least once, so
    # the lock was exercised.
    for attempt in range(4):
        run_dir = tmp_path / f"attempt-{attempt}"
        run_dir.mkdir()
        cycles, busy = _run_two_schedulers(url, ("apscheduler_jobs", "apscheduler_jobs"), run_dir, seconds=2.5)
        assert cycles
        if busy:
            break
    assert busy, "the two schedulers never fired the shared job together in four attempts"
