"""Keep a process's in-memory index in step with SQL: replay the passage event log above a watermark.

Every serving process follows (DESIGN.md, "Several processes, one knowledge state"): passages
added or removed by any process (HTTP on another replica, ``kecl ingest``, an update cycle) reach
this process's index within a poll interval — on PostgreSQL a ``LISTEN`` wakes it at once.

The watermark is *low*: every event at or below it has been applied. Event ids come from a
sequence, and on PostgreSQL a transaction may commit a lower id after a higher one is visible,
so events above the watermark that were applied are remembered, and a missing id holds the
watermark back until it shows up or ``gap_seconds`` pass (a rolled-back transaction never fills
it). Replaying an event twice is harmless: an add skips passages the index already holds, a remove
of an absent id does nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection

from knowledge import KnowledgeStore, PassageEventView, PassageVectors
from retrieval import FetchTexts, FetchVectors, IndexHandle, PassageIndex, TextEmbedder, read_or_embed

log = logging.getLogger("kecl")

NOTIFY_CHANNEL = "kecl_passage_events"  # the channel the passage-event triggers notify (migration 0003_snapshots)


class VectorTally:
    """How the vectors a process put into its index came: read from SQL, or embedded by itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the request threads and the follower's thread both count
        self.read = 0
        self.embedded = 0

    def count(self, read: int, embedded: int) -> None:
        with self._lock:
            self.read += read
            self.embedded += embedded


def embed_into(
    handle: IndexHandle,
    ids: Sequence[int],
    fetch_texts: FetchTexts,
    fetch_vectors: FetchVectors | None = None,
    tally: VectorTally | None = None,
) -> int:
    """Add the passages ``ids`` (those that still exist) to the handle's index; returns how many.

    A vector stored in SQL by the handle's embedder (the process that received the passage made
    it) is read, not made again; the others are embedded from their text, outside the index's
    locks. If a rebuild swapped in another index (and embedder) meanwhile, starts again for the new
    one, so a vector never lands in an index of another embedder.
    """
    wanted = sorted(set(ids))
    if not wanted:
        return 0
    while True:
        generation, embedder = handle.generation, handle.embedder
        if embedder is None:
            raise RuntimeError("the passage index has no embedder to embed new passages with")
        found, vectors, read = read_or_embed(embedder, wanted, fetch_texts, fetch_vectors)
        if handle.generation == generation:
            if not found:
                return 0
            handle.add(np.array(found, dtype=np.int64), vectors)
            if tally is not None:
                tally.count(read, len(found) - read)
            return len(found)


def vector_bytes(vectors: np.ndarray) -> list[bytes]:
    """Each row of ``vectors`` as the bytes SQL stores (little-endian float32)."""
    return [row.tobytes() for row in np.ascontiguousarray(vectors, dtype="<f4")]


def embed_chunks(embedder: TextEmbedder, texts: list[str]) -> PassageVectors:
    """New chunks' vectors as the store keeps them with their passages (see
    :meth:`knowledge.KnowledgeStore.add_documents`'s ``embed``)."""
    return PassageVectors(embedder.version, dict(zip(texts, vector_bytes(embedder.encode(texts)), strict=True)))


def replay_events(
    index: PassageIndex | IndexHandle,
    embedder: TextEmbedder | None,
    events: Sequence[PassageEventView],
    fetch_texts: FetchTexts,
    fetch_vectors: FetchVectors | None = None,
    tally: VectorTally | None = None,
) -> tuple[int, int]:
    """Apply ``events`` in order to ``index`` (a handle, or a bare index with its ``embedder``):
    runs of adds put in the passages it lacks that still exist in SQL (their stored vectors when a
    handle's embedder made them), runs of removes delete. Returns (added, removed)."""
    added = removed = 0
    i = 0
    while i < len(events):
        kind = events[i].kind
        j = i
        while j < len(events) and events[j].kind == kind:
            j += 1
        ids = list(dict.fromkeys(e.passage_id for e in events[i:j]))
        if kind == "removed":
            removed += index.remove(ids)
        else:
            present = index.contains(ids) if isinstance(index, IndexHandle) else np.isin(np.asarray(ids), index.ids())
            missing = [pid for pid, there in zip(ids, present, strict=True) if not there]
            if isinstance(index, IndexHandle):
                added += embed_into(index, missing, fetch_texts, fetch_vectors, tally)
            elif missing and (texts := fetch_texts(missing)):
                if embedder is None:
                    raise RuntimeError("replaying onto a bare index needs its embedder")
                order = sorted(texts)
                index.add(np.array(order, dtype=np.int64), embedder.encode([texts[p] for p in order]))
                added += len(order)
        i = j
    return added, removed


class IndexFollower:
    """Applies the passage event log to ``handle`` above its watermark, in a background thread.

    ``start_from``: an event id every earlier event of which is already in the index (the index
    was reconciled with SQL after it was read). ``read_vectors``: use the vectors stored in SQL
    by the embedder of ``handle`` where there are some; ``tally`` counts how each vector came.
    ``on_tick`` runs every ``snapshot_poll_seconds``
    on the same thread (the service checks for a new checkpoint or index generation there).
    """

    def __init__(
        self,
        store: KnowledgeStore,
        handle: IndexHandle,
        start_from: int,
        *,
        poll_seconds: float = 0.2,
        snapshot_poll_seconds: float = 1.0,
        gap_seconds: float = 60.0,
        on_tick: Callable[[], Any] | None = None,
        read_vectors: bool = True,
        tally: VectorTally | None = None,
    ) -> None:
        self.store = store
        self.tally = tally
        # Vectors another process stored with its passages are read instead of embedded again.
        self.fetch_vectors: FetchVectors | None = store.passage_vectors if read_vectors else None
        self.handle = handle
        self.watermark = start_from
        self.poll_seconds = poll_seconds
        self.snapshot_poll_seconds = snapshot_poll_seconds
        self.gap_seconds = gap_seconds
        self.on_tick = on_tick
        self.lock = threading.Lock()  # one catch-up at a time; the publisher reads the watermark under it
        self._applied: set[int] = set()  # event ids above the watermark already applied
        self._gap_seen: dict[int, float] = {}  # missing event id -> when it was first missed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    # ---------------------------------------------------------------- catching up

    def catch_up(self, limit: int = 5000) -> int:
        """Apply the events above the watermark (at most ``limit`` per round, until none are left);
        returns how many events were applied."""
        total = 0
        with self.lock:
            while True:
                # Above the highest event applied: new ones. Between the watermark and it: ids
                # that were missing (still-open transactions) and may have committed since.
                top = max(self._applied, default=self.watermark)
                late = (
                    self.store.passage_events_after(self.watermark, limit, before_id=top)
                    if top > self.watermark + 1
                    else []
                )
                fresh = self.store.passage_events_after(top, limit)
                events = [e for e in late if e.id not in self._applied] + fresh
                if events:
                    replay_events(self.handle, None, events, self.store.passage_texts, self.fetch_vectors, self.tally)
                    self._applied.update(e.id for e in events)
                    total += len(events)
                self._advance()
                if len(fresh) < limit:
                    return total

    def _advance(self) -> None:
        now = time.monotonic()
        while self._applied:
            expected = self.watermark + 1
            if expected in self._applied:
                self._applied.discard(expected)
                self.watermark = expected
                continue
            for missing in range(expected, min(self._applied)):
                self._gap_seen.setdefault(missing, now)
            if now - self._gap_seen[expected] < self.gap_seconds:
                return
            log.warning("passage event %d never committed within %.0f s; skipping it", expected, self.gap_seconds)
            self._gap_seen.pop(expected, None)
            self.watermark = expected

    def pending_since(self) -> float | None:
        """Seconds since the oldest event not yet applied was written (None: fully caught up)."""
        first = self.store.first_event_time_after(self.watermark)
        if first is None:
            return None
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        return max((now - first).total_seconds(), 0.0)

    # ---------------------------------------------------------------- the thread

    def start(self) -> None:
        """Follow in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="kecl-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following (returns once the thread has finished its round)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        listener = self._listen()
        relisten = listener is not None  # LISTEN works here: after a lost connection, listen again
        next_tick = 0.0
        try:
            while not self._stop.is_set():
                try:
                    self.catch_up()
                    if self.on_tick is not None and time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + self.snapshot_poll_seconds
                        self.on_tick()
                    self.last_error = None
                except Exception as exc:  # noqa: BLE001 - a database blip must not end following; /readyz shows it
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("following SQL failed (retrying): %s", self.last_error, exc_info=True)
                if listener is not None:
                    listener = self._wait(listener)
                else:
                    self._stop.wait(self.poll_seconds)
                    if relisten and not self._stop.is_set():
                        listener = self._listen()
        finally:
            if listener is not None:
                listener.close()

    def _listen(self) -> Connection | None:
        """A connection that LISTENs for passage events (PostgreSQL), held by this thread alone;
        None elsewhere or when LISTEN fails (polling still follows)."""
        if self.store.dialect != "postgresql":
            return None
        conn: Connection | None = None
        try:
            # Kept checked out of the pool for the thread's life: a connection that went back to
            # the pool would be handed to queries while this thread waits on it, and every query
            # would queue behind the wait.
            conn = self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql(f"LISTEN {NOTIFY_CHANNEL}")
            return conn
        except Exception as exc:  # noqa: BLE001 - LISTEN is an optimisation; polling still follows
            if conn is not None:
                conn.close()  # closed, not dropped: its AUTOCOMMIT setting is undone on the way back
            log.warning("LISTEN %s failed (%s); polling every %.2f s", NOTIFY_CHANNEL, exc, self.poll_seconds)
            return None

    def _wait(self, listener: Connection) -> Connection | None:
        """Wait ``poll_seconds``, returning early on a notification; returns the listener, or None
        when its connection was lost (the database restarted)."""
        try:
            # A timeout all the same: a notification sent while this thread was catching up may
            # not be queued, and the snapshot checks and gap timeouts run on this thread too.
            driver: Any = listener.connection.driver_connection
            for _ in driver.notifies(timeout=self.poll_seconds, stop_after=1):
                pass
            return listener
        except Exception as exc:  # noqa: BLE001 - polled until the next LISTEN succeeds
            log.warning("LISTEN connection lost (%s); listening again", exc)
            listener.invalidate()
            listener.close()
            return None
