"""Entity-level scoring against references computed directly with the Hugging Face model: the
masked pseudo-log-likelihood of a candidate, batching, normalisation, the evidence prior and
X-FACTR-style free decoding."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from encoder import InjectedPassage, MLMBundle, decode_free, score_entities
from encoder.entity_scoring import normalise, word_pieces


@dataclass(frozen=True)
class Cand:
    text: str
    entity_id: int | None
    source: str = "type"


def reference_log_likelihood(bundle: MLMBundle, text: str, candidate: str) -> float:
    """Sum over the candidate's pieces of log p(piece) with every piece masked at once."""
    tok = bundle.tokenizer
    ids = tok(candidate, add_special_tokens=False)["input_ids"]
    masked = text.replace("[MASK]", " ".join(["[MASK]"] * len(ids)))
    enc = tok([masked], return_tensors="pt")
    with torch.no_grad():
        logits = bundle.model(**enc).logits[0].float()
    positions = (enc["input_ids"][0] == tok.mask_token_id).nonzero().flatten()
    logp = logits[positions].log_softmax(-1)
    return float(sum(logp[j, i] for j, i in enumerate(ids)))


TEXT = "The chief executive of Tesla is [MASK] ."
CANDIDATES = [Cand("Elon Musk", 1), Cand("musk", 1, "alias"), Cand("Paris", 2), Cand("Jean-Claude Juncker", 3)]


@pytest.mark.parametrize("normalisation", ["mean", "sqrt", "sum"])
def test_scores_equal_the_masked_log_likelihood_of_every_piece(tiny: MLMBundle, normalisation: str) -> None:
    (answers,) = score_entities(tiny, [TEXT], [CANDIDATES], normalisation=normalisation, top_k=10)
    by_entity = {a.entity_id: a for a in answers}
    assert set(by_entity) == {1, 2, 3}  # the two surfaces of entity 1 count once
    for cand in CANDIDATES:
        n = len(tiny.tokenizer(cand.text, add_special_tokens=False)["input_ids"])
        expected = normalise(reference_log_likelihood(tiny, TEXT, cand.text), n, normalisation)
        if cand.entity_id == 1:
            continue  # checked below: the better of its two surfaces
        assert by_entity[cand.entity_id].score == pytest.approx(expected, abs=1e-4)
    best_of_1 = max(
        normalise(
            reference_log_likelihood(tiny, TEXT, c.text), len(word_pieces(tiny.tokenizer, [c.text])[0]), normalisation
        )
        for c in CANDIDATES[:2]
    )
    assert by_entity[1].score == pytest.approx(best_of_1, abs=1e-4)
    assert [a.score for a in answers] == sorted((a.score for a in answers), reverse=True)


def test_a_batch_of_queries_scores_as_each_alone(tiny: MLMBundle) -> None:
    texts = [TEXT, "[MASK] is the capital of France .", "No mask here .", "Two [MASK] masks [MASK] ."]
    cands = [CANDIDATES, [Cand("Paris", 2), Cand("Lyon", 4), Cand("Saint-Étienne", 5)], CANDIDATES, CANDIDATES]
    together = score_entities(tiny, texts, cands, batch_size=3)
    assert together[2] == [] and together[3] == []  # entity answers need exactly one [MASK]
    for i in (0, 1):
        (alone,) = score_entities(tiny, [texts[i]], [cands[i]])
        assert [(a.entity_id, a.source) for a in together[i]] == [(a.entity_id, a.source) for a in alone]
        assert [a.score for a in together[i]] == pytest.approx([a.score for a in alone], abs=1e-4)


def test_candidates_longer_than_max_pieces_are_left_out(tiny: MLMBundle) -> None:
    (answers,) = score_entities(tiny, [TEXT], [CANDIDATES], max_pieces=2)
    short = {
        c.entity_id
        for c, ids in zip(CANDIDATES, word_pieces(tiny.tokenizer, [c.text for c in CANDIDATES]))
        if len(ids) <= 2
    }
    assert {a.entity_id for a in answers} == short and 2 in short and 3 not in short


def test_the_evidence_prior_lifts_candidates_the_row_read_in_augmented_modes_only(tiny: MLMBundle) -> None:
    passages = [[InjectedPassage("Jean-Claude Juncker led the company for years.", 1.0, 7)]]
    plain = {
        a.entity_id: a.score
        for a in score_entities(tiny, [TEXT], [CANDIDATES], passages=passages, strategy="concat")[0]
    }
    boosted = {
        a.entity_id: a.score
        for a in score_entities(tiny, [TEXT], [CANDIDATES], passages=passages, strategy="concat", evidence_boost=5.0)[0]
    }
    assert boosted[3] == pytest.approx(plain[3] + 5.0, abs=1e-4)
    assert boosted[2] == pytest.approx(plain[2], abs=1e-4) and boosted[1] == pytest.approx(plain[1], abs=1e-4)
    closed = score_entities(tiny, [TEXT], [CANDIDATES], passages=passages, strategy="closed-book", evidence_boost=5.0)
    assert {a.entity_id: a.score for a in closed[0]}[3] < plain[3] + 1.0


def reference_decode(bundle: MLMBundle, text: str, n: int) -> tuple[list[int], list[float]]:
    """Confidence-ordered filling of n masks, step by step with the plain model."""
    tok = bundle.tokenizer
    special = set(tok.all_special_ids)
    continuation = {i for t, i in tok.get_vocab().items() if t.startswith("##")}
    filled: list[int | None] = [None] * n
    chosen: list[float] = []
    for _ in range(n):
        parts = ["[MASK]" if p is None else tok.convert_ids_to_tokens(p) for p in filled]
        enc = tok([text.replace("[MASK]", " ".join(parts).replace(" ##", ""))], return_tensors="pt")
        with torch.no_grad():
            logp = bundle.model(**enc).logits[0].float().log_softmax(-1)
        positions = (enc["input_ids"][0] == tok.mask_token_id).nonzero().flatten().tolist()
        open_slots = [j for j, p in enumerate(filled) if p is None]
        best = None
        for slot, pos in zip(open_slots, positions):
            row = logp[pos].clone()
            row[sorted(special)] = -math.inf
            if slot == 0:
                row[sorted(continuation)] = -math.inf
            value, idx = row.max(-1)
            if best is None or float(value) > best[0]:
                best = (float(value), int(idx), slot)
        assert best is not None
        filled[best[2]] = best[1]
        chosen.append(best[0])
    return [p for p in filled if p is not None], chosen


def test_free_decoding_fills_the_most_confident_mask_first(tiny: MLMBundle) -> None:
    (answers,) = decode_free(tiny, [TEXT], [[]], [[]], max_pieces=3)
    assert all(a.source == "decoded" and a.entity_id is None for a in answers)
    expected = {}
    for n in (1, 2, 3):
        ids, chosen = reference_decode(tiny, TEXT, n)
        text = tiny.tokenizer.decode(ids).strip()
        expected.setdefault(text, sum(chosen) / n)
    assert {a.text: a.score for a in answers} == pytest.approx(expected, abs=1e-4)


def test_a_query_without_candidates_is_decoded_freely(tiny: MLMBundle) -> None:
    (answers,) = score_entities(tiny, [TEXT], [[]], decode_pieces=2)
    assert answers and {a.source for a in answers} == {"decoded"}
    (none,) = score_entities(tiny, [TEXT], [[]], decode_pieces=0)
    assert none == []


def test_an_unknown_normalisation_is_refused(tiny: MLMBundle) -> None:
    with pytest.raises(ValueError, match="normalisation"):
        score_entities(tiny, [TEXT], [CANDIDATES], normalisation="max")


def test_the_one_mask_pass_of_the_token_predictions_is_reused_exactly(tiny: MLMBundle) -> None:
    from encoder import predict_injected

    passages = [[InjectedPassage("Jean-Claude Juncker led the company for years.", 1.0, 7)]]
    predicted = predict_injected(tiny, [TEXT], None, passages, strategy="concat", keep_log_probs=True)
    logp = predicted.results[0].masks[0].log_probs
    assert logp is not None
    read = passages[0][0].text.lower()
    fresh = score_entities(tiny, [TEXT], [CANDIDATES], passages=passages, strategy="concat", evidence_boost=2.0)
    reused = score_entities(
        tiny, [TEXT], [CANDIDATES], passages=passages, strategy="concat", evidence_boost=2.0, one_mask={0: (logp, read)}
    )
    assert [(a.entity_id, a.text) for a in reused[0]] == [(a.entity_id, a.text) for a in fresh[0]]
    assert [a.score for a in reused[0]] == pytest.approx([a.score for a in fresh[0]], abs=1e-4)


def test_a_shortlist_scores_in_full_the_likeliest_first_pieces_and_every_fact(tiny: MLMBundle) -> None:
    cands = [Cand("Elon Musk", 1), Cand("Paris", 2), Cand("Jean-Claude Juncker", 3), Cand("Lyon", 4, "fact")]
    (full,) = score_entities(tiny, [TEXT], [cands])
    enc = tiny.tokenizer([TEXT], return_tensors="pt")
    with torch.no_grad():
        logits = tiny.model(**enc).logits[0].float()
    first = logits[(enc["input_ids"][0] == tiny.tokenizer.mask_token_id).nonzero().flatten()[0]].log_softmax(-1)
    prior = {c.entity_id: float(first[word_pieces(tiny.tokenizer, [c.text])[0][0]]) for c in cands}
    likeliest = max((e for e in prior if e != 4), key=prior.__getitem__)
    (short,) = score_entities(tiny, [TEXT], [cands], shortlist=1)
    assert {a.entity_id for a in short} == {likeliest, 4} or (likeliest == 4 and {a.entity_id for a in short} == {4})
    scores = {a.entity_id: a.score for a in full}
    assert all(a.score == pytest.approx(scores[a.entity_id], abs=1e-4) for a in short)


def _lengths(bundle: MLMBundle, cands: list[Cand]) -> list[int]:
    return sorted({len(p) for p in word_pieces(bundle.tokenizer, [c.text for c in cands]) if len(p) >= 2})


def test_length_branches_score_closed_book_exactly_as_rows_of_their_own(tiny: MLMBundle) -> None:
    from encoder import predict_injected

    texts = [TEXT, "[MASK] is the capital of France ."]
    cands = [CANDIDATES, [Cand("Paris", 2), Cand("Saint-Étienne", 5), Cand("Jean-Claude Juncker", 3)]]
    lengths = [_lengths(tiny, c) for c in cands]
    assert all(len(n) >= 2 for n in lengths)  # the test needs several widened lengths per query
    plain = predict_injected(tiny, texts, strategy="closed-book", keep_log_probs=True)
    branched = predict_injected(tiny, texts, strategy="closed-book", keep_log_probs=True, mask_lengths=lengths)
    for row in range(2):
        # the row's own predictions do not see its branches
        a, b = plain.results[row].masks[0], branched.results[row].masks[0]
        assert a.log_probs is not None and b.log_probs is not None
        assert torch.allclose(a.log_probs, b.log_probs, atol=1e-4)
        assert [t.token_id for t in a.top_k] == [t.token_id for t in b.top_k]
        assert branched.results[row].tokens == plain.results[row].tokens
        assert len(branched.results[row].masks) == 1
    one_mask = {r: (branched.results[r].masks[0].log_probs, "") for r in range(2)}
    widened = {(r, n): lp for r, by_n in enumerate(branched.widened) for n, lp in by_n.items()}
    assert set(widened) == {(r, n) for r in range(2) for n in lengths[r]}
    reused = score_entities(tiny, texts, cands, one_mask=one_mask, widened=widened)  # type: ignore[arg-type]
    fresh = score_entities(tiny, texts, cands)
    for r in range(2):
        assert [(a.entity_id, a.text) for a in reused[r]] == [(a.entity_id, a.text) for a in fresh[r]]
        assert [a.score for a in reused[r]] == pytest.approx([a.score for a in fresh[r]], abs=1e-4)


def test_length_branches_read_the_knowledge_and_leave_the_row_unchanged(tiny: MLMBundle) -> None:
    from encoder import predict_injected

    lengths = [_lengths(tiny, CANDIDATES)]
    one = [[InjectedPassage("Jean-Claude Juncker led the company for years.", 1.0, 7)]]
    other = [[InjectedPassage("Paris is a city on the Seine with many bridges.", 1.0, 8)]]
    plain = predict_injected(tiny, [TEXT], None, one, strategy="concat", keep_log_probs=True)
    branched = predict_injected(tiny, [TEXT], None, one, strategy="concat", keep_log_probs=True, mask_lengths=lengths)
    elsewhere = predict_injected(
        tiny, [TEXT], None, other, strategy="concat", keep_log_probs=True, mask_lengths=lengths
    )
    a, b = plain.results[0].masks[0].log_probs, branched.results[0].masks[0].log_probs
    assert a is not None and b is not None and torch.allclose(a, b, atol=1e-4)
    assert branched.inputs.texts == plain.inputs.texts  # the rendered row has no branches in it
    n = lengths[0][-1]
    # the branches read the injected passage: another passage, other probabilities (the tiny random
    # model's outputs are near uniform, so the difference is small but far above rounding)
    assert float((branched.widened[0][n] - elsewhere.widened[0][n]).abs().max()) > 1e-5
    # and score close to rows of their own (these differ only in what the knowledge itself read)
    alone = score_entities(tiny, [TEXT], [CANDIDATES], passages=one, strategy="concat")
    read = one[0][0].text.lower()
    packed = score_entities(
        tiny,
        [TEXT],
        [CANDIDATES],
        passages=one,
        strategy="concat",
        one_mask={0: (b, read)},
        widened={(0, k): lp for k, lp in branched.widened[0].items()},
    )
    assert {x.entity_id for x in packed[0]} == {x.entity_id for x in alone[0]}


def test_length_branches_are_refused_for_tree_inputs_and_rows_without_one_mask(tiny: MLMBundle) -> None:
    from encoder import add_length_branches, build_injected_inputs

    tree = build_injected_inputs(tiny.tokenizer, [TEXT], strategy="tree")
    with pytest.raises(ValueError, match="closed-book or concat"):
        add_length_branches(tiny.tokenizer, tree, [[2]])
    two = build_injected_inputs(tiny.tokenizer, ["[MASK] and [MASK] ."], strategy="concat")
    with pytest.raises(ValueError, match="exactly one"):
        add_length_branches(tiny.tokenizer, two, [[2]])
    widened, before = add_length_branches(tiny.tokenizer, two, [[]])  # no lengths: nothing to widen
    assert before == two.lengths and widened.lengths == two.lengths


def test_a_length_branch_sees_itself_and_the_knowledge_and_nothing_sees_it(tiny: MLMBundle) -> None:
    from encoder import add_length_branches, build_injected_inputs

    passages = [[InjectedPassage("Paris is on the Seine.", 1.0, 1)], []]
    inputs = build_injected_inputs(tiny.tokenizer, [TEXT, "[MASK] is big ."], None, passages, strategy="concat")
    widened, before = add_length_branches(tiny.tokenizer, inputs, [[2, 3], [2]])
    visible = widened.attention_mask[:, 0]
    tok = tiny.tokenizer
    for r in range(2):
        start, end = before[r], widened.lengths[r]
        row = slice(0, start)
        ids = widened.input_ids[r]
        assert torch.equal(ids[:start], inputs.input_ids[r, :start])
        assert not visible[r, row, start:end].any()  # the row never sees its branches
        assert visible[r, row, row].all()
        knowledge = (inputs.token_type_ids[r, :start] == 1).nonzero().flatten()
        assert (len(knowledge) > 0) == (r == 0)
        # branches: [CLS] text-with-n-masks [SEP], positions from 0, each seeing itself and the knowledge
        cls_at = [int(i) for i in (ids[start:end] == tok.cls_token_id).nonzero().flatten() + start]
        assert len(cls_at) == len([[2, 3], [2]][r])
        bounds = [*cls_at, end]
        for b, n in enumerate([[2, 3], [2]][r]):
            lo, hi = bounds[b], bounds[b + 1]
            assert int((ids[lo:hi] == tok.mask_token_id).sum()) == n
            assert widened.position_ids[r, lo:hi].tolist() == list(range(hi - lo))
            assert visible[r, lo:hi, lo:hi].all()
            assert visible[r, lo:hi][:, knowledge].all()
            others = [j for j in range(end) if not lo <= j < hi and j not in set(knowledge.tolist())]
            assert not visible[r, lo:hi][:, others].any()
        assert not visible[r, :end, end:].any()  # padding is seen by nobody
