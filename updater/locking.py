"""One update cycle at a time, across threads, processes and machines: a leased lock in SQL.

APScheduler's ``max_instances=1`` only stops one scheduler from overlapping its own runs. Two
schedulers (``kecl schedule`` next to ``kecl serve --scheduler``, or two API workers) — or a manual
``kecl update`` during a scheduled cycle — would still train and promote at the same time. The lock
is a row of the store's ``update_lock`` table (see :meth:`knowledge.KnowledgeStore.try_lock`): it
works the same on SQLite and PostgreSQL, and a lease lets a crashed holder's lock be taken over.

A cycle can outlive any fixed lease (training), so while the lock is held a daemon thread renews
the lease every third of it. If a renewal finds the row gone or owned by someone else, the lease
had run out and another process took over: :attr:`CycleLock.lost` is set, and the cycle should stop
before its next stage (:meth:`CycleLock.check`) rather than promote over the other cycle's work.

Leases are stamped with this machine's clock, so several machines sharing one database need
synchronised clocks (NTP) and a lease longer than their skew.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from types import TracebackType
from typing import Protocol

log = logging.getLogger(__name__)

CYCLE_LOCK_NAME = "update-cycle"


class LockStore(Protocol):
    """The part of :class:`knowledge.KnowledgeStore` the lock uses."""

    def try_lock(self, name: str, holder: str, lease_seconds: float) -> bool: ...
    def renew_lock(self, name: str, holder: str, lease_seconds: float) -> bool: ...
    def release_lock(self, name: str, holder: str) -> None: ...
    def lock_holder(self, name: str) -> str | None: ...


class CycleBusy(RuntimeError):
    """Another holder has the lock; ``holder`` names it (None if it was released meanwhile)."""

    def __init__(self, name: str, holder: str | None) -> None:
        super().__init__(f"lock {name!r} is held by {holder or 'another process'}; an update cycle is already running")
        self.name = name
        self.holder = holder


class CycleLockLost(RuntimeError):
    """The lease ran out and another holder took the lock over while this cycle was running."""


def default_holder() -> str:
    """``hostname:pid:random`` — unique per lock object, readable in ``update_lock`` rows and logs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class CycleLock:
    """A leased lock on one named row, renewed by a heartbeat thread while held.

    Use as a context manager (raises :class:`CycleBusy` if held elsewhere) or call
    :meth:`acquire` / :meth:`release` yourself. Not re-entrant: a second ``CycleLock`` in the same
    process is a different holder and is refused like any other.
    """

    def __init__(
        self,
        store: LockStore,
        holder: str | None = None,
        lease_seconds: float = 300.0,
        name: str = CYCLE_LOCK_NAME,
        wait_seconds: float = 0.0,
        poll_seconds: float = 0.5,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        self.store = store
        self.holder = holder or default_holder()
        self.lease_seconds = float(lease_seconds)
        self.name = name
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.acquired = False
        self.lost = threading.Event()  # set by the heartbeat when the lease was taken over
        self.renewals = 0
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # ------------------------------------------------------------------ take / give back

    def acquire(self) -> bool:
        """Take the lock, polling up to ``wait_seconds``; True if taken (the heartbeat then runs)."""
        if self.acquired:
            raise RuntimeError(f"{self.holder} already holds lock {self.name!r}")
        deadline = time.monotonic() + self.wait_seconds
        while not self.store.try_lock(self.name, self.holder, self.lease_seconds):
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self.poll_seconds, max(deadline - time.monotonic(), 0.0)))
        self.acquired = True
        self.lost.clear()
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._renew_loop, name=f"lock-heartbeat:{self.name}", daemon=True)
        self._heartbeat.start()
        log.info("lock %r taken by %s (lease %.0f s)", self.name, self.holder, self.lease_seconds)
        return True

    def release(self) -> None:
        """Stop the heartbeat and delete the row if it is still ours (a taken-over lock is left alone)."""
        if not self.acquired:
            return
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        self.acquired = False
        try:
            self.store.release_lock(self.name, self.holder)
        except Exception:  # noqa: BLE001 - the lease expires by itself; a failed release must not mask the cycle's result
            log.warning(
                "could not release lock %r held by %s; it expires with its lease", self.name, self.holder, exc_info=True
            )
        else:
            log.info("lock %r released by %s", self.name, self.holder)

    def check(self) -> None:
        """Raise :class:`CycleLockLost` if another holder took the lock over; call between stages."""
        if self.lost.is_set():
            raise CycleLockLost(f"lock {self.name!r} held by {self.holder} was taken over after its lease ran out")

    # ------------------------------------------------------------------ heartbeat

    def _renew_loop(self) -> None:
        every = max(self.lease_seconds / 3.0, 0.05)  # two renewals can fail before the lease runs out
        last_renewed = time.monotonic()
        while not self._stop.wait(every):
            try:
                still_ours = self.store.renew_lock(self.name, self.holder, self.lease_seconds)
            except Exception:  # noqa: BLE001 - a database blip: retry until the lease itself is gone
                log.warning("renewing lock %r failed; retrying", self.name, exc_info=True)
                if time.monotonic() - last_renewed > self.lease_seconds:
                    self._mark_lost("no renewal succeeded within the lease")
                    return
                continue
            if not still_ours:
                self._mark_lost("the row is gone or owned by another holder")
                return
            last_renewed = time.monotonic()
            self.renewals += 1

    def _mark_lost(self, why: str) -> None:
        log.error("lock %r lost by %s: %s", self.name, self.holder, why)
        self.lost.set()

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> CycleLock:
        if not self.acquire():
            raise CycleBusy(self.name, self.store.lock_holder(self.name))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def cycle_lock(
    store: LockStore,
    holder: str | None = None,
    lease_seconds: float = 300.0,
    name: str = CYCLE_LOCK_NAME,
    wait_seconds: float = 0.0,
) -> CycleLock:
    """The update-cycle lock as a context manager: ``with cycle_lock(store) as lock: ...``.

    Entering raises :class:`CycleBusy` if another holder keeps the lock past ``wait_seconds``.
    Inside, ``lock.lost`` is set (and ``lock.check()`` raises :class:`CycleLockLost`) if the lease
    was taken over; leaving releases the lock.
    """
    return CycleLock(store, holder=holder, lease_seconds=lease_seconds, name=name, wait_seconds=wait_seconds)
