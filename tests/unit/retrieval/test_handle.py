"""IndexHandle: searches during a background rebuild never fail nor mix two indexes."""

from __future__ import annotations

import threading
import time

import numpy as np

from retrieval import IndexHandle, build_from_passages, load_index
from tests.factories import passages


def test_searches_during_swap_see_one_index_or_the_other(tmp_path, tiny_embedder, other_embedder):
    old_rows = passages(200)
    new_rows = {pid + 10_000: text for pid, text in passages(200).items()}  # disjoint ids
    old = build_from_passages(tiny_embedder, [sorted(old_rows.items())])
    handle = IndexHandle(old, tiny_embedder, folder=tmp_path)
    handle.save()
    queries = list(old_rows.values())[:8]
    errors: list[BaseException] = []
    seen = {"old": 0, "new": 0}
    stop = threading.Event()

    def searcher():
        while not stop.is_set():
            try:
                _, ids = handle.search_texts(queries, 10)
                side = {"old" if i < 10_000 else "new" for i in ids.ravel() if i >= 0}
                assert len(side) == 1, f"mixed results {ids}"
                assert (ids >= 0).all()
                seen[side.pop()] += 1
            except BaseException as e:  # noqa: BLE001 - collected and re-raised below
                errors.append(e)
                return

    def slow_batches():
        for batch in [sorted(new_rows.items())[i : i + 20] for i in range(0, 200, 20)]:
            time.sleep(0.02)  # a rebuild takes a while; searches keep coming meanwhile
            yield batch

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    future = handle.rebuild_in_background(other_embedder, slow_batches)
    new = future.result(timeout=60)
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert seen["old"] > 0 and seen["new"] > 0
    assert handle.index is new and handle.embedder is other_embedder and handle.generation == 1
    assert load_index(tmp_path).embedder_version == other_embedder.version  # saved before the swap


def test_rebuild_catches_up_with_sql_written_meanwhile(tiny_embedder, other_embedder):
    rows = passages(50)
    handle = IndexHandle(build_from_passages(tiny_embedder, [sorted(rows.items())]), tiny_embedder)
    snapshot = sorted(rows.items())

    def batches():
        yield snapshot
        rows.update(passages(3, start=900))  # ingested while the rebuild runs
        del rows[0]

    future = handle.rebuild_in_background(
        other_embedder,
        batches,
        sql_ids=lambda: set(rows),
        fetch_texts=lambda ids: {i: rows[i] for i in ids if i in rows},
    )
    new = future.result(timeout=60)
    assert np.array_equal(new.ids(), np.array(sorted(rows)))


def test_failed_rebuild_keeps_serving_the_old_index(tiny_embedder, other_embedder):
    rows = passages(20)
    old = build_from_passages(tiny_embedder, [sorted(rows.items())])
    handle = IndexHandle(old, tiny_embedder)

    def broken():
        yield sorted(rows.items())[:5]
        raise OSError("database went away")

    future = handle.rebuild_in_background(other_embedder, broken)
    assert isinstance(future.exception(timeout=60), OSError)
    assert handle.index is old and handle.embedder is tiny_embedder
    assert handle.search_texts([rows[3]], 1)[1][0, 0] == 3


def test_searches_are_served_while_reconcile_fetches_and_embeds(tiny_embedder):
    rows = passages(30)
    handle = IndexHandle(build_from_passages(tiny_embedder, [sorted(rows.items())[:20]]), tiny_embedder)
    served = []

    def fetch_texts(ids):
        # a search from another thread must not wait for the reconcile to finish
        t = threading.Thread(target=lambda: served.append(handle.search_texts([rows[1]], 1)[1][0, 0]))
        t.start()
        t.join(timeout=10)
        return {i: rows[i] for i in ids}

    report = handle.reconcile(set(rows), fetch_texts)
    assert served == [1] and report.added == 10 and len(handle.index) == 30


class _GatedEmbedder:
    """An embedder whose ``encode`` waits for ``release`` (after setting ``entered``), so a test can
    act while a query is being embedded."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    def encode(self, texts):  # type: ignore[no-untyped-def]
        self.calls += 1
        self.entered.set()
        assert self.release.wait(timeout=30)
        return self.inner.encode(texts)


def test_an_add_does_not_wait_for_a_query_being_embedded(tiny_embedder):
    rows = passages(20)
    gated = _GatedEmbedder(tiny_embedder)
    handle = IndexHandle(build_from_passages(tiny_embedder, [sorted(rows.items())]), gated)
    found: list[int] = []
    search = threading.Thread(target=lambda: found.append(int(handle.search_texts([rows[3]], 1)[1][0, 0])))
    search.start()
    assert gated.entered.wait(timeout=10)
    extra = passages(1, start=500)
    add = threading.Thread(target=lambda: handle.add([500], tiny_embedder.encode([extra[500]])))
    add.start()
    add.join(timeout=10)
    try:
        assert not add.is_alive(), "the add waited for a search's embedding"
    finally:
        gated.release.set()
        search.join(timeout=30)
        add.join(timeout=30)
    assert found == [3] and len(handle.index) == 21


def test_a_query_embedded_across_a_swap_is_embedded_again_for_the_new_index(tiny_embedder, other_embedder):
    rows = passages(20)
    gated = _GatedEmbedder(tiny_embedder)
    handle = IndexHandle(build_from_passages(tiny_embedder, [sorted(rows.items())]), gated)
    new_rows = {pid + 10_000: text for pid, text in rows.items()}
    counted = _GatedEmbedder(other_embedder)
    counted.release.set()
    found: list[int] = []
    search = threading.Thread(target=lambda: found.append(int(handle.search_texts([rows[3]], 1)[1][0, 0])))
    search.start()
    assert gated.entered.wait(timeout=10)
    handle.swap(build_from_passages(other_embedder, [sorted(new_rows.items())]), counted)
    gated.release.set()
    search.join(timeout=30)
    assert found == [10_003]  # searched in the new index, with a vector of the new embedder
    assert gated.calls == 1 and counted.calls == 1
