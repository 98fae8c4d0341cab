"""``kecl worker``: the deployment's one background process — update cycles on a schedule and the
index publisher — next to any number of ``kecl serve`` replicas.

One per deployment, by a lease in SQL (``kecl-worker``): a second one is refused with the holder's
name. If the worker dies its lease runs out and a new one can start; replicas keep serving and
following SQL meanwhile, and one of them takes the index publisher's lease.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from kecl.home import open_store
from kecl.services import Kecl
from kecl.settings import Settings
from kecl.wiring import make_scheduler
from updater import CycleLock

log = logging.getLogger("kecl")

WORKER_LOCK = "kecl-worker"


class WorkerBusy(RuntimeError):
    """Another ``kecl worker`` holds the deployment's worker lease."""

    def __init__(self, holder: str | None, lease_seconds: float) -> None:
        super().__init__(
            f"another kecl worker is running for this database ({holder or 'its holder just left'}); "
            f"a deployment runs one worker. If it died, its lease expires within {lease_seconds:.0f} s."
        )
        self.holder = holder


def run_worker(
    settings: Settings, stop: threading.Event | None = None, on_ready: Callable[[], None] | None = None
) -> None:
    """Hold the worker lease, follow SQL, publish the index and run the scheduler until ``stop``
    is set or SIGINT/SIGTERM arrives. Raises :class:`WorkerBusy` when another worker holds the lease."""
    stop = stop or threading.Event()
    store = open_store(settings)
    lock = CycleLock(store, name=WORKER_LOCK, lease_seconds=settings.processes.worker_lease_seconds)
    if not lock.acquire():
        holder = store.lock_holder(WORKER_LOCK)
        store.close()
        raise WorkerBusy(holder, settings.processes.worker_lease_seconds)
    kecl = Kecl(settings, store=store)
    scheduler = None
    previous = {}
    try:
        kecl.register_serving()  # scheduled cycles run on this process's index and encoder
        kecl.follow(publish=True)
        scheduler = make_scheduler(settings)
        scheduler.start()

        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("%s received: the worker stops after any running cycle", signal.Signals(signum).name)
            stop.set()

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, handle)
        if on_ready is not None:
            on_ready()
        while not stop.wait(1.0):
            if lock.lost.is_set():
                log.error("the worker lease was taken over (this process stalled past it); stopping")
                break
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        kecl.close()
        lock.release()
