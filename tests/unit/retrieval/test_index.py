"""PassageIndex against exact numpy search: add, remove, upsert, filters, for every kind."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval import IndexConfig, PassageIndex, choose_kind
from tests.factories import exact_topk, unit_vectors

DIM = 32


def live_state(ids, vectors, removed):
    keep = ~np.isin(ids, list(removed))
    return ids[keep], vectors[keep]


def test_flat_matches_exact_numpy_after_adds_and_removes():
    rng = np.random.default_rng(1)
    vectors = unit_vectors(1500, DIM, seed=1)
    ids = rng.permutation(100_000)[:1500].astype(np.int64)
    index = PassageIndex("flat", DIM)
    for part in np.array_split(np.arange(1500), 3):
        index.add(ids[part], vectors[part])
    removed = set(ids[rng.choice(1500, 400, replace=False)].tolist())
    assert index.remove(list(removed)) == 400
    assert index.remove(list(removed)) == 0  # already gone
    live_ids, live_vecs = live_state(ids, vectors, removed)
    assert len(index) == len(live_ids)
    assert np.array_equal(index.ids(), np.sort(live_ids))
    queries = unit_vectors(50, DIM, seed=2)
    scores, got = index.search(queries, 10)
    want_scores, want_ids = exact_topk(live_vecs, live_ids, queries, 10)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert (got == want_ids).mean() > 0.99  # ties aside, the same ids in the same order


def test_flat_filter_matches_exact_over_allowed_ids():
    vectors = unit_vectors(3000, DIM, seed=3)
    ids = np.arange(3000, dtype=np.int64) * 3
    index = PassageIndex("flat", DIM, IndexConfig(exact_filter_max=100))
    index.add(ids, vectors)
    queries = unit_vectors(20, DIM, seed=4)
    for allowed in (ids[::7], ids[5:40]):  # large set: IDSelectorBatch; small set: exact subset path
        allowed_with_unknown = np.concatenate([allowed, [999_999]])
        scores, got = index.search(queries, 5, allowed_ids=allowed_with_unknown)
        keep = np.isin(ids, allowed)
        want_scores, want_ids = exact_topk(vectors[keep], ids[keep], queries, 5)
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)
        assert np.array_equal(got, want_ids)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_removed_ids_never_returned_and_filters_hold(kind):
    vectors = unit_vectors(3000, DIM, seed=5)
    ids = np.arange(10, 3010, dtype=np.int64)
    index = PassageIndex(kind, DIM, IndexConfig(ivf_train_min=2000, exact_filter_max=50, pq_nbits=6))
    index.add(ids, vectors)
    removed = ids[::3]
    index.remove(removed)
    assert len(index) == 3000 - len(removed)
    _, got = index.search(vectors[:200], 10)  # queries = the removed vectors themselves among others
    assert not np.isin(got, removed).any()
    assert (got >= 0).all()
    allowed = ids[1::3][:500]
    _, got = index.search(vectors[:50], 10, allowed_ids=allowed)
    assert np.isin(got[got >= 0], allowed).all()
    assert (got >= 0).sum() > 0


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_kinds_recall_against_exact(kind):
    vectors = unit_vectors(4000, DIM, seed=6)
    ids = np.arange(4000, dtype=np.int64) + 7
    cfg = IndexConfig(ivf_train_min=4000, ivf_nprobe=64, pq_m=16, pq_nbits=6)
    index = PassageIndex(kind, DIM, cfg)
    index.add(ids, vectors)
    queries = unit_vectors(100, DIM, seed=7)
    _, got = index.search(queries, 10)
    _, want = exact_topk(vectors, ids, queries, 10)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])
    assert recall >= (0.95 if kind == "hnsw" else 0.5), recall


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_add_existing_id_replaces_its_vector(kind):
    vectors = unit_vectors(2100, DIM, seed=8)
    ids = np.arange(2000, dtype=np.int64)
    index = PassageIndex(kind, DIM, IndexConfig(ivf_train_min=1000, ivf_nprobe=1000, pq_nbits=6))
    index.add(ids, vectors[:2000])
    new_vec = vectors[2050:2051]
    index.add([17], new_vec)  # passage 17 re-embedded
    assert len(index) == 2000 and (index.ids() == 17).sum() == 1
    _, got = index.search(new_vec, 10)
    assert got[0, 0] == 17 or (kind == "ivfpq" and 17 in got[0])  # PQ codes are coarse
    if kind != "ivfpq":
        _, got = index.search(vectors[17:18], 5)
        assert 17 not in got[0]  # the stale vector is gone


def test_hnsw_compact_drops_tombstones_and_keeps_results():
    vectors = unit_vectors(2000, DIM, seed=9)
    ids = np.arange(2000, dtype=np.int64)
    index = PassageIndex("hnsw", DIM, IndexConfig(compact_ratio=0.2))
    index.add(ids, vectors)
    index.remove(ids[:800])
    assert index.tombstones == 800 and index.needs_compaction
    queries = unit_vectors(30, DIM, seed=10)
    before = index.search(queries, 5)[1]
    index.compact()
    assert index.tombstones == 0 and len(index) == 1200
    after = index.search(queries, 5)[1]
    _, want = exact_topk(vectors[800:], ids[800:], queries, 5)
    assert (after == want).mean() > 0.9 and (before == want).mean() > 0.9


def test_ivfpq_trains_after_enough_vectors_and_flags_growth():
    index = PassageIndex("ivfpq", DIM, IndexConfig(ivf_train_min=1000, retrain_factor=2.0))
    vectors = unit_vectors(3000, DIM, seed=11)
    index.add(np.arange(500), vectors[:500])
    assert index.trained_count == 0 and len(index) == 500
    _, got = index.search(vectors[:3], 1)  # served exactly while waiting for training data
    assert list(got[:, 0]) == [0, 1, 2]
    index.add(np.arange(500, 1000), vectors[500:1000])
    assert index.trained_count == 1000 and not index.needs_retrain
    index.add(np.arange(1000, 2100), vectors[1000:2100])
    assert index.needs_retrain


def test_search_edge_cases_and_errors():
    index = PassageIndex("flat", DIM)
    scores, got = index.search(unit_vectors(2, DIM), 3)
    assert got.shape == (2, 3) and (got == -1).all() and np.isinf(scores).all()
    index.add([1, 2], unit_vectors(2, DIM))
    scores, got = index.search(unit_vectors(1, DIM), 5)
    assert sorted(got[0, :2]) == [1, 2] and (got[0, 2:] == -1).all() and np.isinf(scores[0, 2:]).all()
    assert (index.search(unit_vectors(1, DIM), 3, allowed_ids=[])[1] == -1).all()
    with pytest.raises(ValueError):
        index.add([3], unit_vectors(1, DIM + 1))
    with pytest.raises(ValueError):
        index.add([3, 3], unit_vectors(2, DIM))
    with pytest.raises(ValueError):
        PassageIndex("lsh", DIM)


def test_choose_kind_by_size_and_settings():
    class S:
        kind = "auto"
        flat_max = 100
        hnsw_max = 1000

    assert [choose_kind(n, S) for n in (0, 100, 101, 1000, 1001)] == ["flat", "flat", "hnsw", "hnsw", "ivfpq"]
    S.kind = "hnsw"
    assert choose_kind(5, S) == "hnsw"
    S.kind = "bogus"
    with pytest.raises(ValueError):
        choose_kind(5, S)
    assert choose_kind(10) == "flat"
