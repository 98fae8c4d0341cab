"""A killed cycle blocks nothing: its lease is taken over at once on the same host, its row is
marked failed by the next cycle, and what it ingested is learnt by that cycle."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kecl.services import Kecl
from knowledge import holder_is_gone, read_paths
from tests.factories import activate_tiny_checkpoint, tiny_settings, write_jsonl
from tests.unit.updater.test_cycle import BASE, LATER, config
from updater.inbox import take_inbox
from updater.locking import CYCLE_LOCK_NAME, CycleLock


def dead_pid() -> int:
    """The pid of a process of this host that has exited (not python: the unit tier forbids it)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture()
def kecl(tmp_path: Path, tiny_embedder_dir: Path) -> Iterator[Kecl]:
    settings = tiny_settings(tmp_path / "home", tiny_embedder_dir)
    k = Kecl(settings)
    v = activate_tiny_checkpoint(settings)
    k.store.record_checkpoint(v, None, "active", {})
    k.ingest_batch(read_paths([write_jsonl(tmp_path / "base.jsonl", BASE)]))
    yield k
    k.close()


def test_a_lease_whose_holder_died_on_this_host_is_taken_over_at_once(store) -> None:  # type: ignore[no-untyped-def]
    host = socket.gethostname()
    dead = f"{host}:{dead_pid()}:killed"
    assert holder_is_gone(dead)
    assert store.try_lock(CYCLE_LOCK_NAME, dead, 600)
    t0 = time.monotonic()
    lock = CycleLock(store, lease_seconds=30)
    assert lock.acquire() and time.monotonic() - t0 < 10
    assert store.lock_holder(CYCLE_LOCK_NAME) == lock.holder
    lock.release()
    # a live holder on this host, and any holder elsewhere, keep their lease until it expires
    for holder in (f"{host}:1:init", "elsewhere.example:999999:x", "not-a-holder-name"):
        assert not holder_is_gone(holder)
        assert store.try_lock(CYCLE_LOCK_NAME, holder, 600)
        assert not CycleLock(store, lease_seconds=30).acquire()
        store.release_lock(CYCLE_LOCK_NAME, holder)


def test_the_next_cycle_fails_the_killed_run_and_learns_what_it_ingested(kecl: Kecl) -> None:
    """What a cycle killed after its ingest stage leaves: a "running" row, the inbox batch moved
    to processed/ and stored, and its lease. The next cycle must not wait, and must train on it."""
    store = kecl.store
    write_jsonl(kecl.settings.inbox_dir / "later.jsonl", LATER)
    killed = store.start_run("cli")
    assert store.try_lock(CYCLE_LOCK_NAME, f"{socket.gethostname()}:{dead_pid()}:killed", 600)
    files = take_inbox(kecl.settings.inbox_dir, killed)
    summary = store.ingest_paths(files)
    assert summary.facts_added == 2 and summary.facts_closed == 1

    report = kecl.run_update(config=config(max_retention_drop=1.0, max_loss_increase=10.0))
    assert report.status == "succeeded", report.error
    assert report.counts["recovered_runs"] == [killed]
    # everything since the active model's watermark is learnt, the killed run's batch included
    assert report.counts["new_facts"] >= 1 and report.counts["changed_facts"] == 1  # Rome; kuna → euro
    assert report.counts["train_texts"] > 0 and report.decision in ("promote", "reject")
    row = store.get_run(killed)
    assert row is not None and row["status"] == "failed" and "abandoned" in row["error"]
    # recovered once: the cycle after has nothing left over
    again = kecl.run_update(config=config(max_retention_drop=1.0, max_loss_increase=10.0))
    assert "recovered_runs" not in again.counts and again.decision == "no-op"


def test_files_a_run_took_but_never_stored_are_ingested_by_the_next_cycle(kecl: Kecl) -> None:
    """Killed inside its ingest stage: the batch left the inbox, nothing of it reached SQL."""
    store = kecl.store
    write_jsonl(kecl.settings.inbox_dir / "later.jsonl", LATER)
    killed = store.start_run("cli")
    assert take_inbox(kecl.settings.inbox_dir, killed)
    report = kecl.run_update(config=config(max_retention_drop=1.0, max_loss_increase=10.0))
    assert report.status == "succeeded", report.error
    assert report.counts["recovered_runs"] == [killed]
    assert report.counts["new_facts"] >= 1 and report.counts["changed_facts"] == 1
    assert [f.object for f in store.facts(subject=store.entity_id("italy"))] == ["Rome"]
