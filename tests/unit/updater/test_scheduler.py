"""The update scheduler: persisted jobs across restarts, misfire/coalesce, the inbox watch, and
two scheduler processes on one database never running cycles at once."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.scheduler_jobs import HERE, lines, wait_for
from updater.locking import CYCLE_LOCK_NAME, cycle_lock
from updater.scheduler import (
    CYCLE_JOB_ID,
    INBOX_CYCLE_JOB_ID,
    INBOX_WATCH_JOB_ID,
    InboxWatcher,
    build_scheduler,
    inbox_ready,
)


def _set_stored_next_run(url: str, seconds_ago: float) -> None:
    """Move the stored cycle job's next run into the past, as if the process had been down.

    Done on the job table with no scheduler running: a stopping scheduler may still process a
    job that is due (APScheduler 3 runs one more _process_jobs after shutdown) and advance it.
    """
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    jobs = SQLAlchemyJobStore(url=url)
    jobs.start(BackgroundScheduler(timezone="UTC"), "default")
    job = jobs.lookup_job(CYCLE_JOB_ID)
    job.next_run_time = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)
    jobs.update_job(job)
    jobs.shutdown()


# ----------------------------------------------------------------------------- restarts


def test_job_survives_a_restart_with_its_next_run_time(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kecl.db'}"
    runs = tmp_path / "runs.log"
    options = dict(job_ref=f"{HERE}:record_run", job_kwargs={"log_path": str(runs)}, interval_minutes=2 / 60)

    first = build_scheduler(url, **options)
    first.start()
    next_run = first.get_job(CYCLE_JOB_ID).next_run_time
    first.shutdown(wait=False)
    time.sleep(0.3)  # a naive re-add would now compute a later next run time

    second = build_scheduler(url, **options)
    second.start()
    try:
        job = second.get_job(CYCLE_JOB_ID)
        assert job is not None and job.func_ref == f"{HERE}:record_run"
        assert job.next_run_time == next_run  # the schedule was restored, not restarted
        assert [j.id for j in second.get_jobs(jobstore="default")] == [CYCLE_JOB_ID]
        assert wait_for(lambda: len(lines(runs)) >= 1, timeout=6), "restored job never fired"
    finally:
        second.shutdown(wait=True)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select id from apscheduler_jobs")).scalars().all() == [CYCLE_JOB_ID]
    engine.dispose()


def test_a_paused_job_stays_paused_and_a_new_trigger_replaces_the_schedule(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kecl.db'}"
    options = dict(job_ref=f"{HERE}:record_run", job_kwargs={"log_path": str(tmp_path / "runs.log")})

    first = build_scheduler(url, interval_minutes=60, **options)
    first.start(paused=True)
    first.pause_job(CYCLE_JOB_ID)
    first.shutdown(wait=False)

    second = build_scheduler(url, interval_minutes=60, **options)
    second.start(paused=True)
    assert second.get_job(CYCLE_JOB_ID).next_run_time is None  # still paused after the restart
    second.shutdown(wait=False)

    before = dt.datetime.now(dt.UTC)
    third = build_scheduler(url, cron="0 3 * * *", **options)  # settings changed: new schedule
    third.start(paused=True)
    job = third.get_job(CYCLE_JOB_ID)
    assert job.next_run_time is not None and job.next_run_time > before
    assert (job.next_run_time.hour, job.next_run_time.minute) == (3, 0)
    third.shutdown(wait=False)

    fourth = build_scheduler(url, inbox_dir=tmp_path / "inbox", **options)  # inbox only: no periodic job
    fourth.start(paused=True)
    assert fourth.get_job(CYCLE_JOB_ID) is None
    assert fourth.get_job(INBOX_WATCH_JOB_ID) is not None
    fourth.shutdown(wait=False)


def test_missed_runs_coalesce_into_one_within_the_grace_time(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kecl.db'}"
    runs = tmp_path / "runs.log"
    options = dict(job_ref=f"{HERE}:record_run", job_kwargs={"log_path": str(runs)}, interval_minutes=5 / 60)

    down = build_scheduler(url, misfire_grace_seconds=120, **options)
    down.start(paused=True)
    job = down.get_job(CYCLE_JOB_ID)
    assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 120)
    down.shutdown(wait=False)
    # the process was down for 22 s: five runs (-22, -17, -12, -7, -2 s) were missed
    _set_stored_next_run(url, 22)

    up = build_scheduler(url, misfire_grace_seconds=120, **options)
    up.start()
    try:
        assert wait_for(lambda: len(lines(runs)) >= 1, timeout=1.5)  # at once, not at the next interval
        time.sleep(1.0)
        assert len(lines(runs)) == 1  # coalesced: one cycle, not five back to back
        assert up.get_job(CYCLE_JOB_ID).next_run_time > dt.datetime.now(up.timezone)
    finally:
        up.shutdown(wait=True)


def test_a_run_missed_beyond_the_grace_time_is_skipped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kecl.db'}"
    runs = tmp_path / "runs.log"
    options = dict(job_ref=f"{HERE}:record_run", job_kwargs={"log_path": str(runs)}, interval_minutes=1.0)

    down = build_scheduler(url, misfire_grace_seconds=5, **options)
    down.start(paused=True)
    down.shutdown(wait=False)
    _set_stored_next_run(url, 30)

    up = build_scheduler(url, misfire_grace_seconds=5, **options)
    up.start()
    try:
        assert up.get_job(CYCLE_JOB_ID).misfire_grace_time == 5
        assert wait_for(lambda: up.get_job(CYCLE_JOB_ID).next_run_time > dt.datetime.now(up.timezone), timeout=3)
        time.sleep(0.3)
        assert lines(runs) == []  # 30 s late with 5 s grace: dropped, next run on schedule
    finally:
        up.shutdown(wait=True)


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kecl.db'}"
    with pytest.raises(ValueError, match="nothing to schedule"):
        build_scheduler(url, job_ref=f"{HERE}:record_run")
    with pytest.raises(ValueError, match="crontab"):
        build_scheduler(url, job_ref=f"{HERE}:record_run", cron="every day")
    with pytest.raises(ValueError, match="plain data"):
        build_scheduler(url, job_ref=f"{HERE}:record_run", interval_minutes=5, job_kwargs={"home": tmp_path})
    with pytest.raises(ValueError, match="module:function"):
        build_scheduler(url, job_ref="record_run", interval_minutes=5)


# ----------------------------------------------------------------------------- the inbox


def test_inbox_ready_waits_for_quiet_and_ignores_partials(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    assert inbox_ready(inbox, 30) == []  # no folder yet
    inbox.mkdir()
    assert inbox_ready(inbox, 30) == []
    for name in ("b.jsonl", "a.txt", ".hidden", "c.tmp", "d.part", "e.TMP"):
        (inbox / name).write_text("x")
    (inbox / "processed").mkdir()
    (inbox / "processed" / "old.txt").write_text("x")
    now = time.time()
    assert inbox_ready(inbox, 30, now=now) == []  # just written: still within the quiet period
    assert inbox_ready(inbox, 30, now=now + 31) == [inbox / "a.txt", inbox / "b.jsonl"]
    assert inbox_ready(inbox, 0.0) == [inbox / "a.txt", inbox / "b.jsonl"]

    # one file still growing holds back the whole batch
    later = now + 100
    (inbox / "f.txt").write_text("y")
    os.utime(inbox / "f.txt", (later - 5, later - 5))
    assert inbox_ready(inbox, 30, now=later) == []
    assert [p.name for p in inbox_ready(inbox, 4, now=later)] == ["a.txt", "b.jsonl", "f.txt"]

    # only partial files: nothing to do
    for p in inbox.iterdir():
        if p.is_file() and p.name in {"a.txt", "b.jsonl", "f.txt"}:
            p.unlink()
    assert inbox_ready(inbox, 0.0) == []


def test_inbox_watcher_hands_each_file_over_once(tmp_path: Path) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    scheduler = BackgroundScheduler()
    from apscheduler.jobstores.memory import MemoryJobStore

    scheduler.add_jobstore(MemoryJobStore(), "local")
    running = {"cycle": False}
    watcher = InboxWatcher(
        scheduler,
        inbox,
        0.0,
        f"{HERE}:record_run",
        {"log_path": "x"},
        60,
        is_cycle_running=lambda: running["cycle"],
        retry_seconds=0.5,
    )
    assert not watcher()  # empty inbox
    (inbox / "a.txt").write_text("x")
    running["cycle"] = True
    assert not watcher()  # a cycle is running: wait for it instead of queueing another
    running["cycle"] = False
    assert watcher()
    assert scheduler.get_job(INBOX_CYCLE_JOB_ID).kwargs == {"log_path": "x"}
    assert not watcher()  # same file, already handed over
    (inbox / "b.txt").write_text("x")
    assert watcher()  # a new file triggers again
    time.sleep(0.55)
    assert watcher()  # still there after retry_seconds: the cycle failed or was skipped; hand over again


def test_inbox_files_trigger_a_locked_cycle(tmp_path: Path) -> None:
    from knowledge import KnowledgeStore

    url = f"sqlite:///{tmp_path / 'kecl.db'}"
    store = KnowledgeStore.open(url)
    inbox = tmp_path / "inbox"
    log_path = tmp_path / "cycles.log"
    scheduler = build_scheduler(
        url,
        job_ref=f"{HERE}:inbox_cycle",
        job_kwargs={"db_url": url, "inbox": str(inbox), "log_path": str(log_path)},
        inbox_dir=inbox,
        inbox_quiet_seconds=0.3,
        inbox_poll_seconds=0.1,
    )
    scheduler.start()
    try:
        assert inbox.is_dir()
        (inbox / "a.jsonl").write_text("{}")
        (inbox / "ignored.part").write_text("{}")
        assert wait_for(lambda: lines(log_path) == ["a.jsonl"], timeout=5), lines(log_path)
        assert (inbox / "processed" / "a.jsonl").exists() and (inbox / "ignored.part").exists()
        # the job writes its line while it still holds the lock: on a loaded host, wait for it
        assert wait_for(lambda: store.lock_holder(CYCLE_LOCK_NAME) is None, timeout=5)

        with cycle_lock(store, lease_seconds=30):  # another process is mid-cycle
            (inbox / "b.jsonl").write_text("{}")
            time.sleep(1.0)
            assert lines(log_path) == ["a.jsonl"]
        assert wait_for(lambda: lines(log_path) == ["a.jsonl", "b.jsonl"], timeout=5), lines(log_path)
    finally:
        scheduler.shutdown(wait=True)
        store.close()
