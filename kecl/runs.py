"""Starting an update cycle in the background and answering with its run id at once.

The cycle takes its lock under a holder name chosen here, so the caller can tell its own cycle's
``update_run`` row from a concurrent one and refuse (with the running run's id) instead of
answering "started" for a cycle that will be skipped.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from concurrent.futures import Future
from typing import TYPE_CHECKING

from updater import CYCLE_LOCK_NAME, CycleReport

if TYPE_CHECKING:
    from kecl.services import Kecl


class UpdateBusy(RuntimeError):
    """Another update cycle holds the lock; ``run_id`` is its run (None if its row is not visible yet)."""

    def __init__(self, holder: str | None, run_id: int | None) -> None:
        where = f"run {run_id}" if run_id is not None else "a run"
        super().__init__(f"an update cycle is already running: {where} (holder {holder or 'unknown'})")
        self.holder = holder
        self.run_id = run_id


class UpdateNotStarted(TimeoutError):
    """The cycle's thread started but its run row did not appear in time (it may still start)."""

    def __init__(self, wait_seconds: float, thread: threading.Thread) -> None:
        super().__init__(f"the update cycle did not start within {wait_seconds:.0f} s; it may still start")
        self.thread = thread


def running_run_id(kecl: Kecl) -> int | None:
    """The newest run still marked "running", or None."""
    return next((r["id"] for r in kecl.store.runs(limit=20) if r["status"] == "running"), None)


def start_update(kecl: Kecl, trigger: str = "api", wait_seconds: float = 60.0) -> tuple[int, threading.Thread]:
    """Start one update cycle in a daemon thread; returns its run id (once its row exists) and the thread.

    Raises :class:`UpdateBusy` if another cycle, in any process, holds the lock (or takes it first),
    and :class:`UpdateNotStarted` (a TimeoutError) if the cycle has not started within ``wait_seconds``.
    """
    holder = kecl.store.lock_holder(CYCLE_LOCK_NAME)
    if holder is not None:
        raise UpdateBusy(holder, running_run_id(kecl))
    mine = f"{socket.gethostname()}:{os.getpid()}:{trigger}-{uuid.uuid4().hex[:8]}"
    newest = kecl.store.runs(limit=1)
    before = newest[0]["id"] if newest else 0
    report: Future[CycleReport] = Future()

    def run() -> None:
        try:
            report.set_result(kecl.run_update(trigger=trigger, holder=mine))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            report.set_exception(exc)

    thread = threading.Thread(target=run, daemon=True, name="kecl-update")
    thread.start()
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if report.done():
            done = report.result()
            if done.status == "skipped":  # another holder took the lock between the check and the start
                raise UpdateBusy(kecl.store.lock_holder(CYCLE_LOCK_NAME), running_run_id(kecl))
            return done.run_id, thread
        if kecl.store.lock_holder(CYCLE_LOCK_NAME) == mine:
            # while our holder has the lock, only our cycle can write a new run row
            newest = kecl.store.runs(limit=1)
            if newest and newest[0]["id"] > before:
                return newest[0]["id"], thread
        time.sleep(0.02)
    raise UpdateNotStarted(wait_seconds, thread)
