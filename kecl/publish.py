"""One writer of index files: the process holding the ``index-publisher`` lease in SQL.

A generation is written into a new folder ``index/gen-<time>-<random>/`` (never a shared file or
temporary name), then a row in SQL publishes it: the commit point. Folders no row names are
deleted once they are ``gc_grace_seconds`` old (a reader that read the previous row has loaded its
files by then). The copy to save is taken without blocking searches
(:meth:`retrieval.IndexHandle.frozen_copy`) and the files are written off the request path, in
the publisher's thread, at most every ``publish_interval_seconds``.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable

from kecl.settings import Settings
from knowledge import KnowledgeStore
from retrieval import IndexHandle, save_index
from updater import CycleLock

log = logging.getLogger("kecl")

PUBLISHER_LOCK = "index-publisher"
GENERATION_PREFIX = "gen-"


def publish_generation(
    settings: Settings, store: KnowledgeStore, handle: IndexHandle, watermark: Callable[[], int], holder: str
) -> int:
    """Write the handle's index as a new generation and publish it; returns the generation id.

    ``watermark()`` is read while no add or remove can run: the copy holds every event up to it.
    The caller holds the publisher lease."""
    frozen, through = handle.frozen_copy(watermark)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    folder = f"{GENERATION_PREFIX}{stamp}-{uuid.uuid4().hex[:8]}"
    manifest = save_index(frozen, settings.index_dir / folder)
    generation = store.publish_generation(
        folder, int(through), manifest.count, frozen.kind, frozen.embedder_version, holder
    )
    log.info(
        "published index generation %d (%d vectors, events through %d) in %s",
        generation,
        manifest.count,
        through,
        folder,
    )
    collect_garbage(settings, store)
    return generation


def collect_garbage(settings: Settings, store: KnowledgeStore) -> list[str]:
    """Forget all but the newest ``keep_generations`` rows and delete every generation folder no
    row names that is older than ``gc_grace_seconds``; returns the folders deleted."""
    p = settings.processes
    store.forget_generations(p.keep_generations)
    kept = {g.folder for g in store.generations()}
    deleted: list[str] = []
    if not settings.index_dir.is_dir():
        return deleted
    now = time.time()
    for child in settings.index_dir.iterdir():
        if not child.name.startswith(GENERATION_PREFIX) or child.name in kept:
            continue
        try:
            if now - child.stat().st_mtime < p.gc_grace_seconds:
                continue
        except FileNotFoundError:
            continue
        shutil.rmtree(child, ignore_errors=True)
        deleted.append(child.name)
    if deleted:
        log.info("deleted %d old index generation folders", len(deleted))
    return deleted


def publish_once(settings: Settings, store: KnowledgeStore, handle: IndexHandle, watermark: Callable[[], int]) -> bool:
    """A one-shot command's publish: take the lease if it is free, publish, give it back.
    Returns False (writing nothing) while another process holds it — that process publishes."""
    lock = CycleLock(store, name=PUBLISHER_LOCK, lease_seconds=settings.processes.publisher_lease_seconds)
    if not lock.acquire():
        log.info("index publisher lease held by %s; it publishes the index", store.lock_holder(PUBLISHER_LOCK))
        return False
    try:
        publish_generation(settings, store, handle, watermark, lock.holder)
        return True
    finally:
        lock.release()


class IndexPublisher:
    """In a long-running process (``kecl serve``, ``kecl worker``): take the publisher lease when it
    is free and, while holding it, publish a generation whenever the index changed, at most every
    ``publish_interval_seconds``."""

    def __init__(
        self,
        settings: Settings,
        store: KnowledgeStore,
        handle: Callable[[], IndexHandle],
        watermark: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.store = store
        self._handle = handle
        self._watermark = watermark
        self.lock = CycleLock(store, name=PUBLISHER_LOCK, lease_seconds=settings.processes.publisher_lease_seconds)
        self._last_key: tuple[int, int] | None = None  # (events through, handle generation) last published
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    @property
    def holding(self) -> bool:
        """Whether this process is the index publisher now."""
        return self.lock.acquired and not self.lock.lost.is_set()

    def start(self) -> None:
        """Publish in a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kecl-publisher", daemon=True)
            self._thread.start()

    def request(self) -> None:
        """Ask for a publish at the next opportunity (still at most once per interval)."""
        self._wake.set()

    def stop(self, publish: bool = True) -> None:
        """Stop; with ``publish``, write a last generation first if the index changed since."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        if publish and self.holding:
            self._publish_if_changed()
        self.lock.release()

    def _run(self) -> None:
        interval = self.settings.processes.publish_interval_seconds
        while not self._stop.is_set():
            try:
                if self.lock.lost.is_set():
                    self.lock.release()
                if not self.lock.acquired:
                    self.lock.acquire()
                if self.holding:
                    self._publish_if_changed()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - a failed publish is retried; serving goes on
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("publishing the index failed (retrying): %s", self.last_error, exc_info=True)
            self._wake.wait(interval)
            self._wake.clear()

    def _publish_if_changed(self) -> None:
        handle = self._handle()
        key = (self._watermark(), handle.generation)
        if key == self._last_key:
            return
        if self._last_key is None and handle.generation == 0:
            # Just started: nothing to write if the newest generation already covers this index.
            latest = self.store.latest_generation()
            if latest is not None and latest.events_through >= key[0] and latest.vectors == len(handle.index):
                self._last_key = key
                return
        publish_generation(self.settings, self.store, handle, self._watermark, self.lock.holder)
        self._last_key = key
