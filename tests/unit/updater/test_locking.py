"""The update-cycle lock on SQLite and PostgreSQL: refusal, heartbeat, takeover, loss."""

from __future__ import annotations

import threading
import time

import pytest

from updater.locking import CYCLE_LOCK_NAME, CycleBusy, CycleLock, CycleLockLost, cycle_lock, default_holder


def test_second_holder_is_refused_until_release(store) -> None:  # type: ignore[no-untyped-def]
    with cycle_lock(store, lease_seconds=30) as first:
        assert first.acquired
        assert store.lock_holder(CYCLE_LOCK_NAME) == first.holder
        second = CycleLock(store, lease_seconds=30)
        assert not second.acquire()
        with pytest.raises(CycleBusy) as busy:
            with cycle_lock(store):
                pytest.fail("entered a lock that another holder has")
        assert busy.value.holder == first.holder
        # other names are independent locks
        with cycle_lock(store, name="other-job") as other:
            assert other.acquired
    assert not first.acquired
    assert store.lock_holder(CYCLE_LOCK_NAME) is None
    with cycle_lock(store) as again:  # free again once released
        assert again.acquired


def test_wait_seconds_takes_the_lock_when_the_holder_leaves(store) -> None:  # type: ignore[no-untyped-def]
    first = CycleLock(store, lease_seconds=30)
    assert first.acquire()
    threading.Timer(0.4, first.release).start()
    t0 = time.monotonic()
    with cycle_lock(store, wait_seconds=5) as second:
        assert second.acquired
        assert time.monotonic() - t0 >= 0.3
    with pytest.raises(CycleBusy):
        with cycle_lock(store, lease_seconds=30):
            with cycle_lock(store, wait_seconds=0.3):
                pass


def test_heartbeat_keeps_the_lock_past_its_lease(store) -> None:  # type: ignore[no-untyped-def]
    with cycle_lock(store, lease_seconds=0.6) as lock:
        deadline = time.monotonic() + 1.8  # three leases
        while time.monotonic() < deadline:
            assert not store.try_lock(CYCLE_LOCK_NAME, "intruder", 10), "lease expired while the holder was alive"
            time.sleep(0.1)
        assert lock.renewals >= 3
        assert not lock.lost.is_set()
        lock.check()
    assert store.lock_holder(CYCLE_LOCK_NAME) is None


def test_expired_lease_of_a_crashed_holder_is_taken_over(store) -> None:  # type: ignore[no-untyped-def]
    # A lease long enough that a loaded machine still tries within it, short enough to wait out.
    assert store.try_lock(CYCLE_LOCK_NAME, "crashed-host:1:dead", 2.0)  # never renewed, never released
    with pytest.raises(CycleBusy):
        with cycle_lock(store):
            pass
    time.sleep(2.2)
    with cycle_lock(store, lease_seconds=30) as lock:
        assert store.lock_holder(CYCLE_LOCK_NAME) == lock.holder


def test_lost_is_set_when_another_holder_takes_the_row(store) -> None:  # type: ignore[no-untyped-def]
    with cycle_lock(store, lease_seconds=0.6) as lock:
        # what happens when a holder stalls past its lease and another process takes over
        store.release_lock(CYCLE_LOCK_NAME, lock.holder)
        assert store.try_lock(CYCLE_LOCK_NAME, "thief", 30)
        assert lock.lost.wait(2.0)
        with pytest.raises(CycleLockLost):
            lock.check()
    # leaving must not delete the new holder's lock
    assert store.lock_holder(CYCLE_LOCK_NAME) == "thief"


def test_holders_are_unique_and_lease_must_be_positive(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from knowledge import KnowledgeStore

    assert default_holder() != default_holder()
    store = KnowledgeStore.open(f"sqlite:///{tmp_path / 'kecl.db'}")
    with pytest.raises(ValueError, match="lease_seconds"):
        CycleLock(store, lease_seconds=0)
    store.close()
