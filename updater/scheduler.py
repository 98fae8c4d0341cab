"""When update cycles run: an APScheduler 3.x scheduler with its jobs in the store's database.

Two jobs:

- **the periodic cycle** (id ``kecl-update-cycle``) — cron or interval from settings, kept in a
  ``SQLAlchemyJobStore`` in the same database as the knowledge store, so the schedule (including
  the next run time, or a pause) survives restarts. Jobs there are pickled, so the cycle is named
  by an importable ``module:function`` reference with plain-data kwargs; the caller (the layer
  that wires the cycle) passes that reference, and the job keeps a stable id across restarts.
- **the inbox watch** (id ``kecl-inbox-watch``) — polls ``KECL_HOME/inbox`` every few seconds and,
  once new files have sat unchanged for the quiet period, runs the cycle now as a one-shot job
  (id ``kecl-inbox-cycle``). It watches a local folder and holds a reference to its scheduler, so
  it lives in a process-local memory job store and is recreated at every start.

One cycle at a time. ``max_instances=1`` only covers one scheduler's own runs; the cycle job itself
must take :func:`updater.locking.cycle_lock`, which refuses a second cycle in any process or on
any machine sharing the database. The job store itself must belong to ONE running scheduler
(APScheduler does not coordinate schedulers that share a job table: each would fire the same due
job). Run ``kecl schedule`` or ``kecl serve --scheduler`` once, never per web worker. If two
schedulers do end up on one database anyway, the lock still keeps their cycles apart; the loser of
a race skips its run and the next one is scheduled as usual.

Timing choices: ``coalesce=True`` (missed runs after downtime collapse into one cycle — running
several back to back would retrain on the same data), ``max_instances=1``, and a misfire grace
from settings (default an hour: APScheduler's default of 1 s would silently drop a run that was
due while the previous cycle, or a restart, was in progress).
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import DatabaseError

from knowledge import KnowledgeStore, make_engine
from updater.inbox import inbox_ready
from updater.locking import CYCLE_LOCK_NAME

log = logging.getLogger(__name__)

CYCLE_JOB_ID = "kecl-update-cycle"
INBOX_WATCH_JOB_ID = "kecl-inbox-watch"
INBOX_CYCLE_JOB_ID = "kecl-inbox-cycle"
LOCAL_JOBSTORE = "local"  # process-local jobs (the inbox watch); never pickled


class InboxWatcher:
    """The inbox-watch job: triggers a cycle for files that are ready and not yet handed over.

    A file (by name, size and mtime) is handed to one cycle. The cycle moves what it processed to
    ``inbox/processed/``; a file still there ``retry_seconds`` later (the cycle failed on it, or
    was skipped because another process held the lock) is handed over again. While any process
    holds the cycle lock nothing is triggered: the running cycle may take the files itself.
    """

    def __init__(
        self,
        scheduler: BaseScheduler,
        inbox_dir: Path,
        quiet_seconds: float,
        job_ref: str,
        job_kwargs: dict[str, Any],
        misfire_grace_seconds: int,
        is_cycle_running: Callable[[], bool],
        retry_seconds: float = 600.0,
    ) -> None:
        self.scheduler = scheduler
        self.inbox_dir = inbox_dir
        self.quiet_seconds = quiet_seconds
        self.job_ref = job_ref
        self.job_kwargs = job_kwargs
        self.misfire_grace_seconds = misfire_grace_seconds
        self.is_cycle_running = is_cycle_running
        self.retry_seconds = retry_seconds
        self.handed: dict[tuple[str, int, int], float] = {}  # file signature -> when it was handed over

    def __call__(self) -> bool:
        """One poll; True if it triggered a cycle."""
        ready = inbox_ready(self.inbox_dir, self.quiet_seconds)
        signatures = {}
        for path in ready:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            signatures[(path.name, st.st_size, st.st_mtime_ns)] = path
        now = time.monotonic()
        self.handed = {sig: t for sig, t in self.handed.items() if sig in signatures}  # forget what left
        fresh = [sig for sig in signatures if now - self.handed.get(sig, -float("inf")) >= self.retry_seconds]
        if not fresh:
            return False
        try:
            if self.is_cycle_running():
                log.debug("inbox has %d new file(s); a cycle is running, waiting for it", len(fresh))
                return False
        except Exception:  # noqa: BLE001 - cannot tell: trigger anyway, the cycle's own lock decides
            log.warning("could not read the cycle lock; triggering anyway", exc_info=True)
        log.info("inbox: %d new file(s) quiet for %.0f s, triggering an update cycle", len(fresh), self.quiet_seconds)
        self.scheduler.add_job(
            self.job_ref,
            trigger="date",
            run_date=dt.datetime.now(self.scheduler.timezone),
            id=INBOX_CYCLE_JOB_ID,
            name="update cycle (inbox)",
            kwargs=dict(self.job_kwargs),
            jobstore=LOCAL_JOBSTORE,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=self.misfire_grace_seconds,
        )
        for sig in signatures:
            self.handed[sig] = now
        return True


# ----------------------------------------------------------------------------- the scheduler


def cycle_trigger(
    interval_minutes: float | None = None, cron: str | None = None, timezone: Any = None
) -> BaseTrigger | None:
    """The periodic trigger: ``cron`` (a crontab line) wins over ``interval_minutes``; None if neither.

    Raises ValueError for a crontab line that does not parse or a non-positive interval.
    """
    if cron:
        try:
            return CronTrigger.from_crontab(cron, timezone=timezone)
        except ValueError as exc:
            raise ValueError(
                f"scheduler.cron = {cron!r} is not a crontab line "
                f"(five fields: minute hour day month day_of_week, e.g. '0 3 * * *'): {exc}"
            ) from exc
    if interval_minutes is not None:
        if interval_minutes <= 0:
            raise ValueError(f"scheduler.interval_minutes must be positive, got {interval_minutes}")
        return IntervalTrigger(seconds=interval_minutes * 60.0, timezone=timezone)
    return None


def _peek_jobstore(engine: Any, tablename: str, timezone: Any) -> SQLAlchemyJobStore:
    """The job table as the previous run left it, readable without starting a scheduler."""
    peek = SQLAlchemyJobStore(engine=engine, tablename=tablename)
    try:
        peek.start(BackgroundScheduler(timezone=timezone), "default")  # creates the table if missing
    except DatabaseError:
        # two processes starting at once both saw no table and both ran CREATE TABLE; the loser's
        # second look finds the winner's table
        peek.start(BackgroundScheduler(timezone=timezone), "default")
    return peek


def next_scheduled_run(engine: Any, tablename: str = "apscheduler_jobs") -> dt.datetime | None:
    """When the stored schedule runs next (timezone-aware), read from the job table without a
    scheduler; None when nothing is scheduled or no scheduler ever created the table."""
    try:
        when: dt.datetime | None = SQLAlchemyJobStore(engine=engine, tablename=tablename).get_next_run_time()
    except DatabaseError:
        return None
    return when


def _stored_cycle_job(peek: SQLAlchemyJobStore) -> Job | None:
    try:
        return peek.lookup_job(CYCLE_JOB_ID)
    except Exception:  # noqa: BLE001 - an unreadable job (renamed function, old pickle) is replaced
        log.warning("stored job %r cannot be loaded; it will be replaced", CYCLE_JOB_ID, exc_info=True)
        return None


def build_scheduler(
    db_url: str,
    *,
    job_ref: str,
    job_kwargs: dict[str, Any] | None = None,
    interval_minutes: float | None = None,
    cron: str | None = None,
    inbox_dir: str | Path | None = None,
    inbox_quiet_seconds: float = 30.0,
    misfire_grace_seconds: int = 3600,
    blocking: bool = False,
    tablename: str = "apscheduler_jobs",
    inbox_poll_seconds: float = 5.0,
    inbox_retry_seconds: float = 600.0,
    timezone: Any = None,
) -> BaseScheduler:
    """A scheduler (not started) for update cycles, its jobs persisted in ``db_url``.

    ``job_ref`` is the cycle as an importable ``"module:function"`` (the caller's: updater names no
    module of the layers above it); it is called with
    ``**job_kwargs`` (plain data only: it is pickled into the job table) and must take
    :func:`updater.locking.cycle_lock` itself. The periodic job uses ``cron`` if given, else
    ``interval_minutes``; with neither there is no periodic job (and a stored one is removed).
    If the stored job has the same trigger, its next run time (or pause) is kept rather than
    recomputed from now, so restarts do not push the schedule back. ``inbox_dir`` (created if
    missing) adds the inbox watch. ``blocking=True`` gives a :class:`BlockingScheduler` whose
    ``start()`` runs until shutdown (see :func:`run_daemon`); otherwise a background one for
    running next to the API. ``timezone`` (name or tzinfo; default: local) is where cron
    expressions are read.

    Raises ValueError if there is nothing to schedule, for a bad cron line, or for job_kwargs that
    are not plain data.
    """
    job_kwargs = dict(job_kwargs or {})
    _check_plain_data(job_kwargs)
    if ":" not in job_ref:
        raise ValueError(f"job_ref must be an importable 'module:function', got {job_ref!r}")
    scheduler_cls = BlockingScheduler if blocking else BackgroundScheduler
    scheduler: BaseScheduler = scheduler_cls(
        timezone=timezone,
        executors={"default": ThreadPoolExecutor(max_workers=4)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": misfire_grace_seconds},
    )
    trigger = cycle_trigger(interval_minutes, cron, timezone=scheduler.timezone)
    if trigger is None and inbox_dir is None:
        raise ValueError("nothing to schedule: set scheduler.interval_minutes, scheduler.cron or an inbox folder")

    engine = make_engine(db_url)  # SQLite: WAL and a busy timeout, shared with the API's writes
    scheduler.add_jobstore(SQLAlchemyJobStore(engine=engine, tablename=tablename), "default")
    scheduler.add_jobstore(MemoryJobStore(), LOCAL_JOBSTORE)

    peek = _peek_jobstore(engine, tablename, scheduler.timezone)
    stored = _stored_cycle_job(peek)
    if trigger is None:
        if stored is not None:
            log.info("no periodic schedule configured; removing the stored job %r", CYCLE_JOB_ID)
            peek.remove_job(CYCLE_JOB_ID)
    else:
        options: dict[str, Any] = {}
        if stored is not None and _same_schedule(stored.trigger, trigger):
            options["next_run_time"] = stored.next_run_time  # None keeps a paused job paused
        scheduler.add_job(
            job_ref,
            trigger=trigger,
            id=CYCLE_JOB_ID,
            name="update cycle",
            kwargs=job_kwargs,
            jobstore="default",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=misfire_grace_seconds,
            **options,
        )

    if inbox_dir is not None:
        inbox = Path(inbox_dir)
        inbox.mkdir(parents=True, exist_ok=True)
        lock_store = KnowledgeStore(engine)  # only reads the lock row; migrations are the caller's job
        watcher = InboxWatcher(
            scheduler,
            inbox,
            inbox_quiet_seconds,
            job_ref,
            job_kwargs,
            misfire_grace_seconds,
            is_cycle_running=lambda: lock_store.lock_holder(CYCLE_LOCK_NAME) is not None,
            retry_seconds=inbox_retry_seconds,
        )
        scheduler.add_job(
            watcher,
            trigger=IntervalTrigger(seconds=inbox_poll_seconds),
            id=INBOX_WATCH_JOB_ID,
            name=f"watch {inbox}",
            jobstore=LOCAL_JOBSTORE,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(int(inbox_poll_seconds), 1),
        )
    return scheduler


def _same_schedule(a: BaseTrigger, b: BaseTrigger) -> bool:
    # str() is the schedule without its start date ("interval[1:00:00]", "cron[hour='3', ...]")
    return (str(a), str(getattr(a, "timezone", None))) == (str(b), str(getattr(b, "timezone", None)))


def _check_plain_data(value: Any, where: str = "job_kwargs") -> None:
    """Job kwargs are pickled into the database: allow only data any later version can read back."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain_data(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings, got {key!r}")
            _check_plain_data(item, f"{where}[{key!r}]")
        return
    raise ValueError(
        f"{where} = {value!r} ({type(value).__name__}) is not plain data; pass strings/numbers "
        "(e.g. a path as str) because jobs are pickled into the database"
    )


def run_daemon(db_url: str, *, job_ref: str, **options: Any) -> None:
    """Run the scheduler in the foreground until SIGINT or SIGTERM (``kecl schedule``).

    ``job_ref`` and ``options`` are :func:`build_scheduler`'s keywords (``blocking`` is forced on). The first
    signal stops scheduling new runs; a cycle already running is left to finish (its lock is
    released normally) before the process exits. A second signal interrupts at once.
    Raises what :func:`build_scheduler` raises.
    """
    options["blocking"] = True
    scheduler = build_scheduler(db_url, job_ref=job_ref, **options)
    previous: dict[signal.Signals, Any] = {}

    def stop(signum: int, _frame: Any) -> None:
        log.info("%s received: stopping the scheduler after any running cycle", signal.Signals(signum).name)
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # a second signal is not swallowed
        scheduler.pause()  # no new runs from here on
        # shutdown(wait=True) blocks until running jobs end: not inside a signal handler
        threading.Thread(target=scheduler.shutdown, kwargs={"wait": True}, daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, stop)
    try:
        log.info("scheduler starting with jobs: %s", ", ".join(j.id for j in scheduler.get_jobs()) or "none")
        scheduler.start()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
