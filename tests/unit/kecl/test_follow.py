"""Processes that share a store follow each other through SQL: the passage event log, published
index generations and the active checkpoint. Two :class:`Kecl` objects on one home stand in for
two processes here (the integration tier runs real ones)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from encoder import save_checkpoint
from kecl import wiring
from kecl.follow import IndexFollower
from kecl.health import check_readiness
from kecl.publish import GENERATION_PREFIX, publish_once
from kecl.services import Kecl
from knowledge import DocumentRecord
from tests.factories import tiny_bundle, tiny_settings

TEXTS = [
    "The Zorvath river floods every spring.",
    "Quorra Belt was crowned in Dunmere in 1402.",
    "Violins have four strings tuned in fifths.",
]


@pytest.fixture()
def pair(tmp_path: Path, tiny_embedder_dir: Path):
    """Two services on one home, each with its index loaded (A ingests, B follows)."""
    settings = tiny_settings(tmp_path / "home", tiny_embedder_dir, processes={"gc_grace_seconds": 0})
    a, b = Kecl(settings), Kecl(settings.model_copy(deep=True))
    a.ingest_documents([DocumentRecord(text="Bananas are a yellow fruit.")])
    _ = b.index
    yield a, b
    for k in (a, b):
        k.close()


def top_id(k: Kecl, text: str) -> int:
    _scores, ids = k.index.search_texts([text], 1)
    return int(ids[0, 0])


def follower(k: Kecl, **kw) -> IndexFollower:
    return IndexFollower(k.store, k.index, k.watermark(), **kw)


def test_passages_added_and_removed_elsewhere_reach_the_follower(pair) -> None:
    a, b = pair
    f = follower(b)
    summary = a.ingest_documents([DocumentRecord(text=t) for t in TEXTS])
    assert len(b.index.index) == 1
    f.catch_up()
    assert len(b.index.index) == 4
    for pid, text in zip(summary.new_passage_ids, TEXTS, strict=True):
        assert top_id(b, text) == pid  # dense search on B finds what A stored
    assert f.watermark == b.store.max_passage_event_id()

    doc = b.store.passage_info([summary.new_passage_ids[0]])[summary.new_passage_ids[0]].document_id
    a.delete_document(doc)
    f.catch_up()
    assert summary.new_passage_ids[0] not in set(b.index.index.ids().tolist())
    assert len(b.index.index) == len(a.index.index) == 3


def counting_encodes(k: Kecl, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many texts each call of ``k``'s index embedder encoded (the embedder itself still runs)."""
    embedder = k.index.embedder
    calls: list[int] = []
    encode = embedder.encode

    def counted(texts):
        calls.append(len(texts))
        return encode(texts)

    monkeypatch.setattr(embedder, "encode", counted)
    return calls


def test_a_follower_reads_the_vectors_the_receiving_process_stored(pair, monkeypatch) -> None:
    a, b = pair
    f = follower(b)
    b_encodes = counting_encodes(b, monkeypatch)
    summary = a.ingest_documents([DocumentRecord(text=t) for t in TEXTS])
    stored = a.store.passage_vectors(a.index.embedder.version, summary.new_passage_ids)
    assert set(stored) == set(summary.new_passage_ids)
    f.catch_up()
    assert b_encodes == []  # nothing embedded on B: it took A's vectors
    for pid, text in zip(summary.new_passage_ids, TEXTS, strict=True):
        assert top_id(b, text) == pid
        # A's vector for the text, up to the float rounding of the batch it was made in
        np.testing.assert_allclose(
            np.frombuffer(stored[pid], dtype="<f4"), a.index.embedder.encode([text])[0], atol=1e-5
        )


def test_the_receiving_process_indexes_what_it_embedded_without_reading_it_back(pair, monkeypatch) -> None:
    a, _b = pair
    a_encodes = counting_encodes(a, monkeypatch)
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    sa.event.listen(a.store.engine, "before_cursor_execute", record)
    try:
        summary = a.ingest_documents([DocumentRecord(text=t) for t in TEXTS])
    finally:
        sa.event.remove(a.store.engine, "before_cursor_execute", record)
    assert a_encodes == [len(TEXTS)]  # each new passage embedded once, before the write
    assert any("INSERT INTO passage_vector" in q for q in statements)
    assert not [q for q in statements if q.lstrip().upper().startswith("SELECT") and "passage_vector" in q]
    for pid, text in zip(summary.new_passage_ids, TEXTS, strict=True):
        assert top_id(a, text) == pid


def test_without_a_stored_vector_of_its_own_embedder_a_follower_embeds(
    tmp_path, tiny_embedder_dir, monkeypatch
) -> None:
    """Vectors stored under another embedder's version are never read, and a home that does not
    share vectors stores none: either way the follower embeds the text itself."""
    settings = tiny_settings(tmp_path / "home", tiny_embedder_dir, processes={"share_vectors": False})
    a, b = Kecl(settings), Kecl(settings.model_copy(deep=True))
    try:
        a.ingest_documents([DocumentRecord(text="Bananas are a yellow fruit.")])
        f = follower(b)
        b_encodes = counting_encodes(b, monkeypatch)
        summary = a.ingest_documents([DocumentRecord(text=t) for t in TEXTS])
        assert a.store.passage_vectors(a.index.embedder.version, summary.new_passage_ids) == {}
        with a.store.session() as s, s.begin():  # well-formed vectors of some other embedder
            for pid in summary.new_passage_ids:
                s.execute(
                    sa.text("insert into passage_vector (passage_id, embedder, vector) values (:p, 'other@0', :v)"),
                    {"p": pid, "v": np.ones(a.index.embedder.dim, dtype="<f4").tobytes()},
                )
        f.catch_up()
        assert b_encodes == [len(TEXTS)]
        for pid, text in zip(summary.new_passage_ids, TEXTS, strict=True):
            assert top_id(b, text) == pid
    finally:
        a.close()
        b.close()


def test_replaying_events_twice_changes_nothing(pair) -> None:
    a, b = pair
    a.ingest_documents([DocumentRecord(text=t) for t in TEXTS])
    f = IndexFollower(b.store, b.index, 0)  # from the very start: every add is already there or new
    f.catch_up()
    before = b.index.index.ids().copy()
    IndexFollower(b.store, b.index, 0).catch_up()
    assert np.array_equal(b.index.index.ids(), before)
    assert sorted(before.tolist()) == sorted(a.index.index.ids().tolist())


def test_a_missing_event_id_holds_the_watermark_until_it_is_given_up(pair) -> None:
    a, b = pair
    f = follower(b, gap_seconds=0.3)
    a.ingest_documents([DocumentRecord(text=TEXTS[0])])
    f.catch_up()
    top = f.watermark
    pid = a.store.max_passage_id()
    with a.store.session() as s, s.begin():  # an id skipped, as an open transaction's would be
        s.execute(
            sa.text(
                "INSERT INTO passage_event (id, passage_id, kind, created_at) VALUES (:i, :p, 'added', CURRENT_TIMESTAMP)"
            ),
            {"i": top + 2, "p": pid},
        )
    f.catch_up()
    assert f.watermark == top  # event top+2 is applied, but top+1 may still commit
    time.sleep(0.35)
    f.catch_up()
    assert f.watermark == top + 2


def test_a_published_generation_is_what_a_new_process_loads(pair, tiny_embedder_dir) -> None:
    a, b = pair
    a.ingest_documents([DocumentRecord(text=t) for t in TEXTS])
    assert publish_once(a.settings, a.store, a.index, a.watermark)
    generation = a.store.latest_generation()
    assert generation is not None and generation.vectors == 4
    folder = a.settings.index_dir / generation.folder
    assert (folder / "manifest.json").is_file() and not (a.settings.index_dir / "manifest.json").exists()
    c = Kecl(a.settings)
    assert sorted(c.index.index.ids().tolist()) == sorted(a.index.index.ids().tolist())
    c.close()


def test_only_the_lease_holder_publishes_and_old_generations_are_collected(pair) -> None:
    a, b = pair
    b.follow(publish=True)  # B's publisher takes the lease at once
    deadline = time.monotonic() + 10
    while not (b.publisher is not None and b.publisher.holding) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.publisher is not None and b.publisher.holding
    a._index_dirty = True
    assert not publish_once(a.settings, a.store, a.index, a.watermark)  # refused: B holds the lease
    b.publisher.stop(publish=False)
    b.publisher = None
    for text in TEXTS:
        a.ingest_documents([DocumentRecord(text=text)])
        assert publish_once(a.settings, a.store, a.index, a.watermark)
    folders = sorted(p.name for p in a.settings.index_dir.iterdir() if p.name.startswith(GENERATION_PREFIX))
    assert folders == sorted(g.folder for g in a.store.generations())
    assert len(folders) == a.settings.processes.keep_generations


def test_a_copy_for_saving_never_blocks_searches_and_holds_back_writers(pair) -> None:
    a, _b = pair
    handle = a.index
    vec = handle.embedder.encode(["a passage added during the copy"])
    searched = threading.Event()
    added = threading.Event()

    def during_copy() -> int:
        threading.Thread(target=lambda: (handle.search(vec, 1), searched.set()), daemon=True).start()
        threading.Thread(target=lambda: (handle.add([999], vec), added.set()), daemon=True).start()
        assert searched.wait(5), "a search waited for the copy"
        assert not added.wait(0.3), "an add ran while the copy was being taken"
        return 7

    frozen, marker = handle.frozen_copy(during_copy)
    assert marker == 7 and 999 not in set(frozen.ids().tolist())
    assert added.wait(5) and 999 in set(handle.index.ids().tolist())


def test_a_checkpoint_made_active_elsewhere_is_loaded_in_the_background(pair) -> None:
    a, b = pair
    v1 = save_checkpoint(tiny_bundle(max_positions=256, seed=1), a.settings.checkpoints_dir)
    wiring.promote_checkpoint(a.settings, a.store, v1)
    assert b.encoder.version == v1
    v2 = save_checkpoint(tiny_bundle(max_positions=256, seed=2), a.settings.checkpoints_dir)
    b.follow(publish=False)
    assert check_readiness(b).ready
    wiring.promote_checkpoint(a.settings, a.store, v2)
    deadline = time.monotonic() + 20
    while b.serving_checkpoint() != v2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.serving_checkpoint() == v2
    assert check_readiness(b).checkpoint_loaded


def test_readiness_reports_an_index_behind_sql(pair) -> None:
    a, b = pair
    b.settings.processes.ready_max_lag_passages = 1
    a.ingest_documents([DocumentRecord(text=t) for t in TEXTS])
    state = check_readiness(b)
    assert not state.ready and state.passages_behind == 3 and state.snapshot_lag_seconds >= 0
    follower(b).catch_up()
    state = check_readiness(b)
    assert state.passages_behind == 0 and state.store_writable


def test_an_event_committed_after_a_higher_one_is_still_applied(pair) -> None:
    a, b = pair
    f = follower(b, gap_seconds=3600)
    f.catch_up()
    top = f.watermark
    (p1,) = a.ingest_documents([DocumentRecord(text=TEXTS[0])]).new_passage_ids
    (p2,) = a.ingest_documents([DocumentRecord(text=TEXTS[1])]).new_passage_ids
    hide = "UPDATE passage_event SET id = :to WHERE id = :frm"
    with a.store.session() as s, s.begin():  # event top+1 not visible yet: its transaction is "open"
        s.execute(sa.text(hide), {"frm": top + 1, "to": -(top + 1)})
    f.catch_up()
    ids = set(b.index.index.ids().tolist())
    assert p2 in ids and p1 not in ids and f.watermark == top
    with a.store.session() as s, s.begin():  # ... and now it commits, below an applied one
        s.execute(sa.text(hide), {"frm": -(top + 1), "to": top + 1})
    f.catch_up()
    assert p1 in set(b.index.index.ids().tolist()) and f.watermark == top + 2


def test_the_listening_connection_never_serves_queries(
    tmp_path: Path, tiny_embedder_dir: Path, pg_schema_url: str
) -> None:
    """On PostgreSQL the follower waits on a LISTEN connection of its own: if that connection went
    back to the pool, queries would run on it and queue behind each wait (every request slowed by
    up to the poll interval)."""
    k = Kecl(tiny_settings(tmp_path / "home", tiny_embedder_dir, database_url=pg_schema_url))
    _ = k.index
    f = follower(k, poll_seconds=0.2)
    f.start()
    try:

        def listeners() -> set[int]:
            with k.store.session() as s:
                rows = s.execute(
                    sa.text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND query = 'LISTEN kecl_passage_events' AND pid <> pg_backend_pid()"
                    )
                )
                return {int(r[0]) for r in rows}

        deadline = time.monotonic() + 10
        while not listeners() and time.monotonic() < deadline:
            time.sleep(0.05)
        listening = listeners()
        assert listening, "the follower is not listening"
        used = set()
        for _ in range(30):
            with k.store.session() as s:
                used.add(int(s.scalar(sa.text("SELECT pg_backend_pid()"))))
            time.sleep(0.01)
        assert not used & listening
        assert f.last_error is None
    finally:
        f.stop()  # before the schema goes: a follower left running polls a dropped table
        k.close()
