"""The copy prior of augmented answers: which words it boosts, and that prediction applies it."""

from __future__ import annotations

import pytest
import torch

from encoder.injection import InjectedFact, InjectedPassage, build_injected_inputs
from encoder.predict import evidence_bias, fill_mask_encoded, masked_token_ranks
from tests.factories import tiny_bundle

QUERY = "The Osk river flows into the [MASK] sea ."
PASSAGE = "The Osk river flows into the Baltic sea, near Zorvexburg."


def _boosted(tokenizer, bias_row: torch.Tensor) -> set[str]:
    return set(tokenizer.convert_ids_to_tokens(bias_row.nonzero().flatten().tolist()))


@pytest.mark.parametrize("strategy", ["concat", "tree"])
def test_only_whole_evidence_words_not_in_the_query_are_boosted(tokenizer, strategy):
    facts = [InjectedFact("Osk river mouth Baltic sea", "mouth Baltic", span=(4, 13))]
    inputs = build_injected_inputs(
        tokenizer,
        [QUERY, "A [MASK] with nothing injected ."],
        [facts, []],
        [[InjectedPassage(PASSAGE)], []],
        strategy=strategy,
        max_length=64,
    )
    bias = evidence_bias(tokenizer, inputs, 6.0)
    assert bias.shape == (2, len(tokenizer))
    boosted = _boosted(tokenizer, bias[0])
    assert "baltic" in boosted and "mouth" in boosted and "near" in boosted
    split = tokenizer.tokenize("zorvexburg")
    assert len(split) > 1 and split[0] not in boosted  # only whole words: a first piece is not one
    query_tokens = set(tokenizer.tokenize(QUERY))
    assert not boosted & query_tokens  # "river", "sea", "the" … are the question, not the answer
    assert not any(t.startswith("##") or not t.isalnum() for t in boosted)  # no pieces, punctuation, [SEP]
    assert set(bias[0].unique().tolist()) == {0.0, 6.0}
    assert not bias[1].any()  # nothing injected, nothing boosted
    assert evidence_bias(tokenizer, inputs, 0.0) is None  # off
    closed = build_injected_inputs(tokenizer, [QUERY], None, None, strategy="closed-book", max_length=64)
    assert evidence_bias(tokenizer, closed, 6.0) is None  # closed-book is never boosted


def test_the_bias_moves_predictions_and_ranks_alike(tokenizer):
    bundle = tiny_bundle(tokenizer, seed=7)
    inputs = build_injected_inputs(
        tokenizer, [QUERY], None, [[InjectedPassage(PASSAGE)]], strategy="concat", max_length=64
    )
    baltic = tokenizer.convert_tokens_to_ids("baltic")
    plain = fill_mask_encoded(bundle, inputs.to_dict(), top_k=5)[0].masks[0].top_k
    bias = evidence_bias(tokenizer, inputs, 30.0)
    boosted = fill_mask_encoded(bundle, inputs.to_dict(), top_k=5, logit_bias=bias)[0].masks[0].top_k
    # a random model does not read; a large prior makes the answer one of the evidence words
    assert plain[0].token_id != baltic or plain[0].score < 0.5
    words = _boosted(tokenizer, bias[0])
    assert {t.token for t in boosted[: len(words)]} == words
    (rank_plain,) = masked_token_ranks(bundle, inputs.to_dict(), [baltic])
    (rank_boosted,) = masked_token_ranks(bundle, inputs.to_dict(), [baltic], logit_bias=bias)
    assert rank_boosted.rank < rank_plain.rank and rank_boosted.rank <= len(_boosted(tokenizer, bias[0]))
    assert boosted[0].token_id == rank_boosted.top_k[0].token_id
