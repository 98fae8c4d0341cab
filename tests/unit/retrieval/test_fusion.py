"""Reciprocal rank fusion."""

from __future__ import annotations

import pytest

from retrieval import reciprocal_rank_fusion


def test_rrf_scores_and_order():
    fused = reciprocal_rank_fusion({"dense": [1, 2, 3], "lexical": [3, 4]}, {"dense": 1.0, "lexical": 2.0}, rrf_k=10)
    scores = dict(fused)
    assert scores[3] == pytest.approx(1 / 13 + 2 / 11)
    assert scores[1] == pytest.approx(1 / 11)
    assert scores[4] == pytest.approx(2 / 12)
    assert [pid for pid, _ in fused] == [3, 4, 1, 2]


def test_rrf_weights_zero_missing_channel_padding_and_k():
    fused = reciprocal_rank_fusion({"dense": [5, -1, -1], "entity": [6, 5]}, {"entity": 0.0}, k=1)
    assert fused == [(5, pytest.approx(1 / 61))]
    assert reciprocal_rank_fusion({}, {}) == []
    # repeated id counts once, at its best rank
    assert dict(reciprocal_rank_fusion({"a": [7, 7]}))[7] == pytest.approx(1 / 61)
    with pytest.raises(ValueError):
        reciprocal_rank_fusion({"a": [1]}, {"a": -1.0})


def test_rrf_ties_broken_by_best_rank_then_id():
    fused = reciprocal_rank_fusion({"a": [1, 2], "b": [2, 1]})
    assert [pid for pid, _ in fused] == [1, 2]
