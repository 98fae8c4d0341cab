"""Knowledge injection: K-BERT tree layout, concat budget, closed-book, and the model on them."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import BertForMaskedLM  # noqa: E402

from encoder.injection import (  # noqa: E402
    InjectedFact,
    InjectedPassage,
    build_injected_inputs,
    injected_training_batch,
)
from encoder.masking import IGNORE_INDEX  # noqa: E402
from encoder.model import MLMBundle  # noqa: E402
from encoder.packing import SpanText, to_backend_mask  # noqa: E402
from encoder.predict import fill_mask_encoded  # noqa: E402
from tests.factories import tiny_mlm  # noqa: E402

# K-BERT's running example (Liu et al. 2020, Fig. 2): two entities, three facts.
TEXT = "Tim Cook is visiting Beijing now ."
TIM, BEIJING = (0, 8), (21, 28)
FACTS = [
    InjectedFact("Tim Cook is the CEO of Apple .", "CEO Apple", TIM, score=0.9),
    InjectedFact("Beijing is the capital of China .", "capital China", BEIJING, score=0.8),
    InjectedFact("Beijing is a city .", "type city", BEIJING, score=0.7),
]


def tiny_model(tokenizer, layers: int = 2, attn: str = "sdpa", seed: int = 0) -> BertForMaskedLM:
    return tiny_mlm(len(tokenizer), seed=seed, attn=attn, layers=layers)


def tokens(tokenizer, ids: torch.Tensor) -> list[str]:
    return tokenizer.convert_ids_to_tokens(ids.tolist())


def test_tree_layout_soft_positions_and_visible_matrix_match_kbert(tokenizer):
    x = build_injected_inputs(tokenizer, [TEXT], [FACTS], strategy="tree", max_length=64)
    assert tokens(tokenizer, x.input_ids[0]) == [
        "[CLS]",
        "tim",
        "cook",
        "ceo",
        "apple",
        "is",
        "visiting",
        "beijing",
        "capital",
        "china",
        "type",
        "city",
        "now",
        ".",
        "[SEP]",
    ]
    # The sentence keeps 0..8 as if nothing were inserted; each branch continues from its mention.
    assert x.position_ids[0].tolist() == [0, 1, 2, 3, 4, 3, 4, 5, 6, 7, 6, 7, 6, 7, 8]
    assert x.token_type_ids[0].tolist() == [0] * 15
    assert x.attention_mask.shape == (1, 1, 15, 15) and x.attention_mask.dtype == torch.bool
    # Expected matrix written from the K-BERT rules with the indices spelled out by hand.
    sentence = [0, 1, 2, 5, 6, 7, 12, 13, 14]
    branches = {(3, 4): (1, 2), (8, 9): (7,), (10, 11): (7,)}  # branch tokens → mention tokens
    expected = torch.zeros(15, 15, dtype=torch.bool)
    for i in sentence:
        for j in sentence:
            expected[i, j] = True
    for branch, mention in branches.items():
        for i in branch:
            for j in branch + mention:
                expected[i, j] = expected[j, i] = True
    assert torch.equal(x.attention_mask[0, 0], expected)
    m = x.attention_mask[0, 0]
    assert not m[3, 7] and not m[7, 3]  # "ceo" (Tim Cook's branch) and "beijing": different entities
    assert not m[8, 10] and not m[10, 8]  # two branches of one mention do not see each other
    assert not m[5, 3] and m[1, 3] and m[2, 4]  # "is" does not see the branch; "tim", "cook" do
    assert x.texts == ["[CLS] Tim Cook {CEO Apple} is visiting Beijing {capital China} {type city} now . [SEP]"]
    assert x.used_facts == [[0, 1, 2]]
    assert x.text_mask[0].nonzero().flatten().tolist() == [1, 2, 5, 6, 7, 12, 13]


def test_tree_skips_facts_without_mention_and_appends_passages_as_segments(tokenizer):
    facts = [InjectedFact("Apple makes phones .", "makes phones", None, score=5.0), FACTS[1]]
    passage = InjectedPassage("Beijing hosted the Olympics .", score=0.1)
    x = build_injected_inputs(tokenizer, [TEXT], [facts], [[passage]], strategy="tree", max_length=64)
    assert x.used_facts == [[1]] and x.used_passages == [[0]]
    toks = tokens(tokenizer, x.input_ids[0])
    assert "makes" not in toks
    start = toks.index("[SEP]") + 1
    assert toks[start:] == ["beijing", "hosted", "the", "olympics", ".", "[SEP]"]
    # Passage positions continue after the sentence's own (9 soft positions: 0..8).
    assert x.position_ids[0, start:].tolist() == list(range(9, 15))
    assert x.token_type_ids[0, start:].tolist() == [1] * 6
    m = x.attention_mask[0, 0]
    branch = [toks.index("capital"), toks.index("china")]
    assert m[start:, :start][:, [i for i in range(start) if i not in branch]].all()  # passage ↔ sentence
    assert not m[start:, branch].any() and not m[branch, start:].any()  # passage ↮ branch


def test_concat_layout_segments_and_positions(tokenizer):
    passages = [InjectedPassage("Apple is based in Cupertino .", score=0.5)]
    x = build_injected_inputs(tokenizer, [TEXT], [FACTS[:2]], [passages], strategy="concat", max_length=64)
    toks = tokens(tokenizer, x.input_ids[0])
    first_sep = toks.index("[SEP]")
    assert toks[: first_sep + 1] == ["[CLS]", "tim", "cook", "is", "visiting", "beijing", "now", ".", "[SEP]"]
    assert toks[first_sep + 1 :] == (
        tokenizer.tokenize(FACTS[0].text)
        + [";"]
        + tokenizer.tokenize(FACTS[1].text)
        + ["[SEP]"]
        + tokenizer.tokenize(passages[0].text)
        + ["[SEP]"]
    )
    assert x.token_type_ids[0].tolist() == [0] * (first_sep + 1) + [1] * (len(toks) - first_sep - 1)
    assert x.position_ids[0].tolist() == list(range(len(toks)))
    assert x.attention_mask.shape == (1, len(toks)) and bool(x.attention_mask.all())
    assert x.texts[0] == f"[CLS] {TEXT} [SEP] {FACTS[0].text} ; {FACTS[1].text} [SEP] {passages[0].text} [SEP]"


def test_concat_budget_keeps_highest_scores_and_never_cuts_the_text(tokenizer):
    text = "The capital of [MASK] is Zagreb ."
    n_text = len(tokenizer.tokenize(text)) + 2
    long_fact = InjectedFact("Croatia " * 20, "x", None, score=0.95)  # 21 tokens with ";": never fits
    facts = [
        InjectedFact("Croatia capital Zagreb", "capital Zagreb", None, score=0.9),  # 4 + 1 tokens
        long_fact,
        InjectedFact("Croatia currency euro", "currency euro", None, score=0.2),  # 3 + 1
        InjectedFact("Croatia member EU", "member EU", None, score=0.1),
    ]
    passages = [InjectedPassage("Zagreb is the capital and largest city of Croatia , on the Sava river .", score=0.5)]
    max_length = n_text + 15
    x = build_injected_inputs(tokenizer, [text], [facts], [passages], strategy="concat", max_length=max_length)
    assert x.input_ids.shape[1] <= max_length
    # 0.95 does not fit whole and is dropped; 0.9 fits (5); the passage (0.5) is cut to the rest.
    assert x.used_facts == [[0]] and x.used_passages == [[0]] and x.truncated_passages == [[0]]
    assert x.input_ids.shape[1] == max_length  # a cut passage fills the budget exactly
    toks = tokens(tokenizer, x.input_ids[0])
    assert toks[1 : n_text - 1] == tokenizer.tokenize(text)
    assert toks[-1] == "[SEP]" and x.texts[0].endswith(" … [SEP]")
    # With more room the low-scored facts join; text still whole at the front.
    y = build_injected_inputs(tokenizer, [text], [facts], [passages], strategy="concat", max_length=n_text + 60)
    assert y.used_facts == [[1, 0, 2, 3]] and y.truncated_passages == [[]]  # in choice (score) order
    # A passage can lose to a fact only on score: equal scores put the fact first.
    tie = build_injected_inputs(
        tokenizer,
        [text],
        [[InjectedFact("Croatia capital Zagreb", "", None, score=0.5)]],
        [[InjectedPassage("Zagreb is big and old and nice .", score=0.5)]],
        strategy="concat",
        max_length=n_text + 5,
    )
    assert tie.used_facts == [[0]] and tie.used_passages == [[]]


@settings(max_examples=40, deadline=None)
@given(
    fact_lengths=st.lists(st.integers(1, 12), max_size=6),
    passage_lengths=st.lists(st.integers(1, 30), max_size=4),
    scores=st.lists(st.floats(0, 1), min_size=10, max_size=10),
    room=st.integers(0, 60),
    strategy=st.sampled_from(["concat", "tree"]),
)
def test_budget_properties(tokenizer, fact_lengths, passage_lengths, scores, room, strategy):
    text = "Alpha met Beta in [MASK] ."
    facts = [
        InjectedFact(" ".join(["red"] * n), " ".join(["red"] * n), (0, 5), score=scores[k])
        for k, n in enumerate(fact_lengths)
    ]
    passages = [InjectedPassage(" ".join(["blue"] * n), score=scores[6 + k]) for k, n in enumerate(passage_lengths)]
    n_text = len(tokenizer.tokenize(text)) + 2
    x = build_injected_inputs(tokenizer, [text], [facts], [passages], strategy=strategy, max_length=n_text + room)
    assert x.input_ids.shape[1] <= n_text + room
    ids = x.input_ids[0]
    assert ids[x.text_mask[0]].tolist() == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert int((ids == tokenizer.mask_token_id).sum()) == 1
    red = tokenizer.convert_tokens_to_ids("red")
    assert int((ids == red).sum()) == sum(fact_lengths[k] for k in x.used_facts[0])  # facts whole or absent
    cost = {k: n + (0 if strategy == "tree" else 1) for k, n in enumerate(fact_lengths)}
    left = n_text + room - x.input_ids.shape[1]
    # Greedy: a dropped fact was too big for what remained when it was considered, so it is too big now.
    for k in set(range(len(facts))) - set(x.used_facts[0]):
        assert cost[k] > left


def test_closed_book_is_plain_tokenisation(tokenizer):
    texts = [TEXT, "Short [MASK] ."]
    x = build_injected_inputs(
        tokenizer, texts, [FACTS, []], [[InjectedPassage("ignored .")], []], strategy="closed-book", max_length=64
    )
    plain = tokenizer(texts, padding=True, return_tensors="pt")
    assert torch.equal(x.input_ids, plain["input_ids"])
    assert torch.equal(x.token_type_ids, plain["token_type_ids"])
    assert torch.equal(x.attention_mask, plain["attention_mask"])
    assert x.used_facts == [[], []] and x.used_passages == [[], []]


@pytest.mark.parametrize("strategy", ["closed-book", "concat", "tree"])
def test_mask_positions_are_the_query_masks_only(tokenizer, strategy):
    text = "[MASK] Cook is visiting [MASK] now ."
    facts = [
        InjectedFact("the [MASK] of Apple", "CEO [MASK]", (7, 11)),
        InjectedFact("a [MASK]", "capital [MASK]", (24, 30)),
    ]
    x = build_injected_inputs(
        tokenizer,
        [text],
        [facts],
        [[InjectedPassage("text with [MASK] inside it .")]],
        strategy=strategy,
        max_length=64,
    )
    is_mask = x.input_ids[0] == tokenizer.mask_token_id
    assert int(is_mask.sum()) == 2
    assert bool(x.text_mask[0][is_mask].all())  # both masks are the query's own
    assert x.input_ids[0][x.text_mask[0]].tolist() == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_too_long_text_raises_with_lengths(tokenizer):
    text = "word " * 30
    with pytest.raises(ValueError, match=r"32 tokens .* max_length=16"):
        build_injected_inputs(tokenizer, [text], strategy="concat", max_length=16)


def test_bad_input_raises(tokenizer):
    with pytest.raises(ValueError, match="span"):
        build_injected_inputs(tokenizer, ["short"], [[InjectedFact("f", "f", (2, 40))]], strategy="tree")
    with pytest.raises(ValueError, match="strategy"):
        build_injected_inputs(tokenizer, ["short"], strategy="graph")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rows of facts"):
        build_injected_inputs(tokenizer, ["a", "b"], [[]])
    with pytest.raises(ValueError, match="single string"):
        build_injected_inputs(tokenizer, "a text")


@pytest.mark.parametrize("strategy", ["concat", "tree"])
def test_batch_rows_equal_single_rows_and_padding_is_safe(tokenizer, strategy):
    texts = [TEXT, "Beijing ."]
    facts = [FACTS, [InjectedFact("Beijing is big", "capital China", (0, 7))]]
    passages = [[], [InjectedPassage("Beijing is a large city .")]]
    batch = build_injected_inputs(tokenizer, texts, facts, passages, strategy=strategy, max_length=64)
    model = tiny_model(tokenizer)
    with torch.inference_mode():
        batch_logits = model(**batch.to_dict("sdpa")).logits
    assert torch.isfinite(batch_logits).all()  # padding rows see themselves: no NaN
    for r in range(2):
        one = build_injected_inputs(tokenizer, [texts[r]], [facts[r]], [passages[r]], strategy=strategy, max_length=64)
        n = one.input_ids.shape[1]
        assert torch.equal(batch.input_ids[r, :n], one.input_ids[0])
        assert torch.equal(batch.position_ids[r, :n], one.position_ids[0])
        assert bool((batch.input_ids[r, n:] == tokenizer.pad_token_id).all())
        if strategy == "tree":
            m = batch.attention_mask[r, 0]
            assert torch.equal(m[:n, :n], one.attention_mask[0, 0])
            assert not m[:n, n:].any()  # real tokens never see padding
            assert torch.equal(m[n:, n:], torch.eye(m.shape[0] - n, dtype=torch.bool))
        with torch.inference_mode():
            single = model(**one.to_dict("sdpa")).logits
        torch.testing.assert_close(batch_logits[r, :n], single[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("strategy", ["closed-book", "concat", "tree"])
def test_selected_rows_are_those_rows_built_alone(tokenizer, strategy):
    """``select`` (batches of similar lengths) gives exactly what building those rows alone gives."""
    texts = ["Beijing .", TEXT, "Beijing is the [MASK] ."]
    facts = [[InjectedFact("Beijing is big", "capital China", (0, 7))], FACTS, []]
    passages = [[InjectedPassage("Beijing is a large city .")], [InjectedPassage("Paris is far away .")], []]
    every = build_injected_inputs(tokenizer, texts, facts, passages, strategy=strategy, max_length=64)
    assert every.lengths == [int((every.input_ids[r] != tokenizer.pad_token_id).sum()) for r in range(3)]
    for rows in ([2, 0], [1], [0, 1, 2]):
        part = every.select(rows)
        alone = build_injected_inputs(
            tokenizer,
            [texts[r] for r in rows],
            [facts[r] for r in rows],
            [passages[r] for r in rows],
            strategy=strategy,
            max_length=64,
        )
        for name in ("input_ids", "token_type_ids", "position_ids", "attention_mask", "text_mask"):
            assert torch.equal(getattr(part, name), getattr(alone, name)), name
        assert (part.texts, part.used_facts, part.used_passages, part.lengths) == (
            alone.texts,
            alone.used_facts,
            alone.used_passages,
            alone.lengths,
        )


def test_sdpa_and_eager_agree_on_tree_inputs(tokenizer):
    x = build_injected_inputs(
        tokenizer,
        [TEXT.replace("Beijing", "[MASK]"), "Tim [MASK] ."],
        [FACTS[:1], [InjectedFact("f", "CEO Apple", (0, 3))]],
        strategy="tree",
        max_length=64,
    )
    sdpa = tiny_model(tokenizer, attn="sdpa")
    eager = tiny_model(tokenizer, attn="eager")
    assert torch.equal(sdpa.bert.embeddings.word_embeddings.weight, eager.bert.embeddings.word_embeddings.weight)
    with torch.inference_mode():
        a = sdpa(**x.to_dict("sdpa")).logits
        b = eager(**x.to_dict("eager")).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # fill_mask_encoded takes the boolean visibility matrix and converts it per backend.
    ra = fill_mask_encoded(MLMBundle(sdpa, tokenizer), x.to_dict(), top_k=3)
    rb = fill_mask_encoded(MLMBundle(eager, tokenizer), x.to_dict(), top_k=3)
    assert [[t.token_id for t in m.top_k] for r in ra for m in r.masks] == [
        [t.token_id for t in m.top_k] for r in rb for m in r.masks
    ]
    assert sum(len(r.masks) for r in ra) == 2


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_all_visible_tree_with_natural_positions_equals_plain_forward(tokenizer, attn):
    model = tiny_model(tokenizer, attn=attn)
    plain = build_injected_inputs(tokenizer, [TEXT, "Short ."], strategy="closed-book", max_length=64)
    n = plain.input_ids.shape[1]
    visible = torch.ones(2, 1, n, n, dtype=torch.bool)
    real = plain.attention_mask.bool()
    visible &= real[:, None, None, :]
    visible |= torch.eye(n, dtype=torch.bool) & ~real[:, None, :, None]
    with torch.inference_mode():
        expected = model(**plain.to_dict()).logits
        got = model(
            input_ids=plain.input_ids,
            token_type_ids=plain.token_type_ids,
            position_ids=torch.arange(n).expand(2, n),
            attention_mask=to_backend_mask(visible, attn),
        ).logits
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-4)


def test_branch_content_reaches_other_sentence_tokens_only_through_the_mention(tokenizer):
    x = build_injected_inputs(tokenizer, [TEXT], [FACTS], strategy="tree", max_length=64)
    toks = tokens(tokenizer, x.input_ids[0])
    tim_branch = [toks.index("ceo"), toks.index("apple")]
    mention = [toks.index("tim"), toks.index("cook")]
    changed = x.input_ids.clone()
    changed[0, tim_branch] = torch.tensor(tokenizer.convert_tokens_to_ids(["president", "microsoft"]))
    others = [i for i in range(len(toks)) if i not in tim_branch + mention]

    def hidden(model, ids):
        with torch.inference_mode():
            return model.bert(
                input_ids=ids,
                token_type_ids=x.token_type_ids,
                position_ids=x.position_ids,
                attention_mask=to_backend_mask(x.attention_mask, "sdpa"),
            ).last_hidden_state[0]

    one_layer = tiny_model(tokenizer, layers=1)
    before, after = hidden(one_layer, x.input_ids), hidden(one_layer, changed)
    # One layer: only the mention sees the branch; every other token (incl. Beijing's branches) is unchanged.
    torch.testing.assert_close(before[others], after[others], atol=1e-6, rtol=0)
    assert not torch.allclose(before[mention], after[mention])
    # Two layers: the knowledge flows on through the mention, as in K-BERT.
    two_layers = tiny_model(tokenizer, layers=2)
    before, after = hidden(two_layers, x.input_ids), hidden(two_layers, changed)
    sentence_others = [i for i in others if x.attention_mask[0, 0, i, mention[0]]]
    assert not torch.allclose(before[sentence_others], after[sentence_others])
    # Beijing's branches see neither Tim Cook nor his branch, in any layer.
    beijing_branches = [toks.index(t) for t in ("capital", "china", "type", "city")]
    assert not x.attention_mask[0, 0][beijing_branches][:, tim_branch + mention].any()


def test_training_batch_labels_only_the_text(tokenizer):
    texts = [SpanText(TEXT, [TIM, BEIJING]), SpanText("Beijing is big .", [(0, 7)])]
    facts = [FACTS, [InjectedFact("Beijing capital China", "capital China", (0, 7))]]
    plain = build_injected_inputs(tokenizer, [t.text for t in texts], facts, strategy="tree", max_length=64)
    for seed in range(5):
        batch = injected_training_batch(
            tokenizer,
            texts,
            facts,
            strategy="tree",
            max_length=64,
            mlm_probability=0.5,
            salient_probability=1.0,
            generator=torch.Generator().manual_seed(seed),
            attn_implementation="eager",
        )
        labelled = batch["labels"] != IGNORE_INDEX
        assert labelled.any() and not (labelled & ~plain.text_mask).any()
        assert torch.equal(batch["input_ids"][~plain.text_mask], plain.input_ids[~plain.text_mask])
        assert torch.equal(batch["labels"][labelled], plain.input_ids[labelled])
        # salient_probability=1: every entity mention token is chosen, as a whole.
        toks = tokens(tokenizer, plain.input_ids[0])
        assert all(labelled[0, toks.index(t)] for t in ("tim", "cook", "beijing"))
        assert batch["attention_mask"].is_floating_point()  # eager: additive form
    model = tiny_model(tokenizer, attn="eager")
    out = model(**batch)
    assert torch.isfinite(out.loss)
