"""reconcile heals drift between SQL and the index in both directions; builds from passages."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval import EmbedderMismatchError, PassageIndex, build_from_passages, load_index, reconcile, save_index
from tests.factories import passages


class FakeSql:
    """Stands in for the SQL store (outside retrieval/): ids and texts in a dict."""

    def __init__(self, rows: dict[int, str]):
        self.rows = dict(rows)
        self.fetched: list[int] = []

    def fetch(self, ids):
        self.fetched.extend(ids)
        return {i: self.rows[i] for i in ids if i in self.rows}

    def batches(self, size=50):
        items = sorted(self.rows.items())
        for i in range(0, len(items), size):
            yield items[i : i + size]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_reconcile_fixes_both_directions_of_drift(tiny_embedder, kind):
    sql = FakeSql(passages(120))
    index = build_from_passages(tiny_embedder, lambda: sql.batches(), kind=kind)
    assert np.array_equal(index.ids(), np.arange(120))
    # drift: SQL committed new passages the index never saw, and deleted some the index still has
    sql.rows.update(passages(30, start=500))
    for pid in range(10, 40):
        del sql.rows[pid]
    sql.fetched.clear()
    report = reconcile(index, tiny_embedder, set(sql.rows), sql.fetch)
    assert (report.added, report.removed, report.count) == (30, 30, 120)
    assert sorted(sql.fetched) == list(range(500, 530))  # only the missing ones are embedded
    assert np.array_equal(index.ids(), np.array(sorted(sql.rows)))
    new_vec = tiny_embedder.encode([sql.rows[512]])
    assert index.search(new_vec, 1)[1][0, 0] == 512
    again = reconcile(index, tiny_embedder, set(sql.rows), sql.fetch)
    assert not again.changed


def test_crash_after_sql_commit_heals_at_startup(tmp_path, tiny_embedder):
    sql = FakeSql(passages(60))
    index = build_from_passages(tiny_embedder, sql.batches)
    save_index(index, tmp_path)
    # a document is committed to SQL, and the process dies before the index is written
    sql.rows.update(passages(5, start=1000))
    restarted = load_index(tmp_path)
    report = reconcile(restarted, tiny_embedder, set(sql.rows), sql.fetch)
    assert report.added == 5 and len(restarted) == 65


def test_passages_deleted_while_reconciling_are_skipped(tiny_embedder):
    sql = FakeSql(passages(10))
    index = PassageIndex("flat", tiny_embedder.dim)
    ids = set(sql.rows)
    del sql.rows[3]  # gone between listing ids and fetching texts
    report = reconcile(index, tiny_embedder, ids, sql.fetch)
    assert report.added == 9 and report.missing_texts == 1
    assert index.embedder_version == tiny_embedder.version


def test_reconcile_refuses_another_embedders_index(tiny_embedder, other_embedder):
    sql = FakeSql(passages(5))
    index = build_from_passages(tiny_embedder, sql.batches)
    with pytest.raises(EmbedderMismatchError):
        reconcile(index, other_embedder, set(sql.rows), sql.fetch)


def test_reconcile_compacts_hnsw_when_tombstones_pile_up(tiny_embedder):
    sql = FakeSql(passages(100))
    index = build_from_passages(tiny_embedder, sql.batches, kind="hnsw")
    for pid in range(50):
        del sql.rows[pid]
    report = reconcile(index, tiny_embedder, set(sql.rows), sql.fetch)
    assert report.removed == 50 and report.compacted and index.tombstones == 0 and len(index) == 50


def test_stored_vectors_are_read_not_embedded(tiny_embedder):
    """Building and reconciling read the vectors stored for the embedder's version (another
    version's, or a vector of the wrong width, is ignored) and embed only the rest."""
    sql = FakeSql(passages(40))
    made = tiny_embedder.encode([sql.rows[i] for i in range(40)])
    stored = {tiny_embedder.version: {i: made[i].astype("<f4").tobytes() for i in range(0, 40, 2)}}
    stored["another@0"] = {1: made[1].astype("<f4").tobytes()}
    stored[tiny_embedder.version][3] = b"\0" * 8  # a damaged row: embedded instead
    embedded: list[str] = []

    class Counting:
        version, dim = tiny_embedder.version, tiny_embedder.dim

        def encode(self, texts):
            embedded.extend(texts)
            return tiny_embedder.encode(texts)

    def fetch_vectors(version, ids):
        return {i: v for i, v in stored.get(version, {}).items() if i in set(ids)}

    index = build_from_passages(Counting(), [sorted(sql.rows.items())[:20]], fetch_vectors=fetch_vectors)
    assert sorted(embedded) == sorted(sql.rows[i] for i in range(1, 20, 2))
    embedded.clear()
    sql.fetched.clear()
    report = reconcile(index, Counting(), set(sql.rows), sql.fetch, fetch_vectors=fetch_vectors)
    assert (report.added, report.read) == (20, 10)
    assert sorted(sql.fetched) == list(range(21, 40, 2))  # texts only of those it embeds
    assert sorted(embedded) == sorted(sql.rows[i] for i in range(21, 40, 2))
    for pid in (2, 3, 24, 25):  # read and embedded alike: each passage is its own nearest hit
        assert index.search(made[pid : pid + 1], 1)[1][0, 0] == pid
