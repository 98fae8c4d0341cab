"""PassageIndex.state() / from_state(): taking an index apart and back gives the same index."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from retrieval import IndexConfig, IndexState, PassageIndex
from tests.factories import unit_vectors

DIM = 24
CONFIG = IndexConfig(ivf_train_min=1000, exact_filter_max=100, pq_nbits=6)


def make(kind: str, n: int = 1200, config: IndexConfig = CONFIG) -> tuple[PassageIndex, np.ndarray]:
    vectors = unit_vectors(n, DIM, seed=21)
    index = PassageIndex(kind, DIM, config, embedder_version="emb@21")
    index.add(np.arange(n) * 2 + 1, vectors)
    index.remove([1, 3, 5, 7])  # hnsw: four tombstones
    return index, vectors


def through_bytes(state: IndexState) -> IndexState:
    """``state`` as it comes back from disk: JSON meta, a deserialised faiss index, copied arrays."""
    return IndexState(
        json.loads(json.dumps(state.meta)),
        faiss.deserialize_index(faiss.serialize_index(state.faiss_index)),
        {name: array.copy() for name, array in state.extras.items()},
        state.embedder_version,
    )


def assert_same(restored: PassageIndex, index: PassageIndex, queries: np.ndarray) -> None:
    assert (restored.kind, restored.dim, restored.embedder_version) == (index.kind, index.dim, index.embedder_version)
    assert restored.config == index.config
    assert len(restored) == len(index) and restored.max_id == index.max_id
    assert np.array_equal(restored.ids(), index.ids())
    assert restored.tombstones == index.tombstones and restored.needs_compaction == index.needs_compaction
    assert restored.trained_count == index.trained_count and restored.needs_retrain == index.needs_retrain
    allowed_small, allowed_large = index.ids()[::40], index.ids()[::3]  # exact subset path, selector path
    for allowed in (None, allowed_small, allowed_large):
        want_scores, want_ids = index.search(queries, 7, allowed_ids=allowed)
        got_scores, got_ids = restored.search(queries, 7, allowed_ids=allowed)
        assert np.array_equal(got_ids, want_ids)
        np.testing.assert_array_equal(got_scores, want_scores)


CASES = {
    "flat": ("flat", 1200),
    "hnsw": ("hnsw", 1200),
    "ivfpq": ("ivfpq", 1200),
    "ivfpq-pending": ("ivfpq", 300),  # below ivf_train_min: the vectors wait in a flat index
}


@pytest.mark.parametrize("case", list(CASES))
def test_state_round_trip_gives_the_same_index(case):
    kind, n = CASES[case]
    index, vectors = make(kind, n)
    assert index.tombstones == (4 if kind == "hnsw" else 0)
    assert (index.trained_count == 0) == (case != "ivfpq")
    queries = vectors[:30]
    assert_same(PassageIndex.from_state(index.state()), index, queries)
    assert_same(PassageIndex.from_state(through_bytes(index.state())), index, queries)


@pytest.mark.parametrize("case", list(CASES))
def test_restored_index_is_independent_and_upserts(case):
    kind, n = CASES[case]
    index, vectors = make(kind, n)
    before = index.ids()
    restored = PassageIndex.from_state(through_bytes(index.state()))
    restored.add([9], vectors[100:101])  # id 9 exists: an upsert after restoring replaces it
    assert len(restored) == len(index) and (restored.ids() == 9).sum() == 1
    restored.remove([11, 13])
    restored.add([10**6], vectors[:1])
    assert len(restored) == len(index) - 1
    assert np.array_equal(index.ids(), before)  # the original is untouched


def test_pending_ivfpq_trains_after_restoring():
    index, vectors = make("ivfpq", 300)
    restored = PassageIndex.from_state(through_bytes(index.state()))
    assert restored.state().meta["pending"] and restored.trained_count == 0
    restored.add(np.arange(10_000, 10_800), unit_vectors(800, DIM, seed=22))
    assert not restored.state().meta["pending"] and restored.trained_count == 296 + 800


@pytest.mark.parametrize("case", list(CASES))
def test_state_has_the_manifest_meta_layout(case):
    kind, n = CASES[case]
    index, _ = make(kind, n)
    state = index.state()
    # The manifest's meta is written in this key order (format 1); saved files must not change.
    assert list(state.meta) == ["kind", "dim", "config", "trained_count", "pending", "max_added"]
    assert state.meta["kind"] == kind and state.meta["dim"] == DIM and state.meta["max_added"] == 2 * n - 1
    assert state.meta["config"] == json.loads(json.dumps(state.meta["config"]))
    assert IndexConfig(**state.meta["config"]) == CONFIG
    assert state.meta["pending"] == (case == "ivfpq-pending")
    assert sorted(state.extras) == (["alive", "labels"] if kind == "hnsw" else [])
    assert state.embedder_version == "emb@21"


def test_from_state_takes_a_given_config_and_copies_extras():
    index, vectors = make("hnsw")
    state = index.state()
    config = IndexConfig(hnsw_ef_search=16, exact_filter_max=0)
    restored = PassageIndex.from_state(state, config=config)
    assert restored.config is config
    restored.remove([9, 11])
    assert state.extras["alive"].sum() == len(index) == len(restored) + 2  # the arrays were copied


def test_from_state_rejects_incomplete_or_unknown_meta():
    index, _ = make("flat", 50)
    state = index.state()
    with pytest.raises(ValueError, match="lacks dim"):
        PassageIndex.from_state(IndexState({k: v for k, v in state.meta.items() if k != "dim"}, state.faiss_index))
    with pytest.raises(ValueError, match="unknown index kind"):
        PassageIndex.from_state(IndexState({**state.meta, "kind": "lsh"}, state.faiss_index))


def test_config_defaults_are_what_users_get():
    assert IndexConfig().hnsw_ef_search == 192  # benchmarks/bench_index.py: recall@10 0.958 at 1M vectors
