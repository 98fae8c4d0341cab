"""Metrics on constructed cases with known answers, and the augmented modes' mechanics."""

from __future__ import annotations

import math

import pytest
import torch

from encoder.injection import InjectedFact, InjectedPassage
from encoder.model import MLMBundle
from tests.factories import tiny_mlm
from updater.evaluation import ALL, EvalReport, Metrics, evaluate
from updater.probes import Probe


@pytest.fixture()
def biased_bundle(tokenizer) -> MLMBundle:
    """A tiny random BERT whose output bias ranks "paris" 1st, "rome" 2nd, "berlin" 3rd everywhere.

    The bias (100, 90, 80) dwarfs the random logits (|logit| < 1), so the rank of each of these
    tokens is known whatever the input: the metrics below have exact expected values.
    """
    model = tiny_mlm(len(tokenizer), seed=0, max_positions=512)
    with torch.no_grad():
        bias = model.cls.predictions.bias
        bias.zero_()
        for value, word in ((100.0, "paris"), (90.0, "rome"), (80.0, "berlin")):
            bias[tokenizer.convert_tokens_to_ids(word)] = value
    return MLMBundle(model, tokenizer)


@pytest.fixture()
def random_bundle(tokenizer) -> MLMBundle:
    return MLMBundle(tiny_mlm(len(tokenizer), seed=1, max_positions=512), tokenizer)


def probe(gold: str, group: str = "g", text: str = "The capital is [MASK] .", pid: str | None = None) -> Probe:
    return Probe(text, gold, group=group, probe_id=pid or f"{group}:{gold}")


def test_metrics_from_known_ranks() -> None:
    m = Metrics.from_ranks([1, 2, 10, 11])
    assert m.n == 4
    assert m.p_at_1 == 0.25 and m.p_at_10 == 0.75
    assert math.isclose(m.mrr, (1 + 1 / 2 + 1 / 10 + 1 / 11) / 4)
    assert Metrics.from_ranks([]) == Metrics()
    with pytest.raises(ValueError):
        Metrics.from_ranks([0])


def test_p_at_1_is_one_exactly_for_the_token_the_model_always_predicts(biased_bundle) -> None:
    probes = [probe("Paris", "a"), probe("Paris", "a", "[MASK] is nice ."), probe("Rome", "b"), probe("Berlin", "b")]
    report = evaluate(biased_bundle, probes, batch_size=3)
    per = report.metrics["closed-book"]
    assert per["a"] == Metrics(2, 1.0, 1.0, 1.0)
    assert per["b"].p_at_1 == 0.0 and per["b"].p_at_10 == 1.0
    assert math.isclose(per["b"].mrr, (1 / 2 + 1 / 3) / 2)
    assert math.isclose(per[ALL].mrr, (1 + 1 + 1 / 2 + 1 / 3) / 4)
    assert {r.top1 for r in report.results} == {"paris"}
    assert sorted(r.rank for r in report.results) == [1, 1, 2, 3]
    assert math.isclose(report.macro("closed-book").p_at_1, 0.5)  # mean of groups a (1.0) and b (0.0)


def test_dropped_probes_are_counted_by_reason_and_group(biased_bundle) -> None:
    probes = [
        probe("Paris"),
        probe("Poseidonisxq", "x"),
        probe("Paris", "y", "no mask ."),
        probe("Paris", "z", "word " * 300 + "[MASK] ."),
    ]
    report = evaluate(biased_bundle, probes, max_length=64)
    assert report.metrics["closed-book"][ALL].n == 1
    assert report.dropped == 3
    assert report.dropped_reasons == {"object not one token": 1, "not exactly one [MASK]": 1, "text over 64 tokens": 1}
    assert report.dropped_by_group == {"x": 1, "y": 1, "z": 1}


def test_augmented_modes_call_the_knowledge_source_and_change_the_input(random_bundle) -> None:
    probes = [probe("Paris", text="France has its capital in [MASK] .", pid=f"p{i}") for i in range(5)]
    calls: list[tuple[int, str]] = []

    def nothing(texts, mode):
        calls.append((len(texts), mode))
        return [[] for _ in texts], [[] for _ in texts]

    def evidence(texts, mode):
        calls.append((len(texts), mode))
        span = (0, len("France"))
        return (
            [[InjectedFact("France capital Paris", "capital Paris", span, 1.0, 7)] for _ in texts],
            [[InjectedPassage("Paris is the capital and largest city of France.", 0.5, 3)] for _ in texts],
        )

    empty = evaluate(random_bundle, probes, modes=("closed-book", "concat", "tree"), knowledge=nothing, batch_size=2)
    assert calls == [(2, "concat"), (2, "concat"), (1, "concat"), (2, "tree"), (2, "tree"), (1, "tree")]
    # Nothing injected: concat and tree see exactly the closed-book input, so the same ranks.
    ranks = {m: [r.rank for r in empty.results if r.mode == m] for m in empty.modes}
    assert ranks["closed-book"] == ranks["concat"] == ranks["tree"]

    full = evaluate(random_bundle, probes, modes=("concat", "tree"), knowledge=evidence, label="kb")
    assert full.modes == ["concat kb", "tree kb"]
    new_ranks = {m: [r.rank for r in full.results if r.mode == m] for m in full.modes}
    assert new_ranks["concat kb"] != ranks["concat"]  # the injected knowledge reached the model
    assert new_ranks["tree kb"] != ranks["tree"]

    merged = empty.merge(full)
    assert merged.modes == ["closed-book", "concat", "tree", "concat kb", "tree kb"]
    with pytest.raises(ValueError, match="both reports"):
        empty.merge(empty)


def test_report_table_and_dict(biased_bundle) -> None:
    from rich.console import Console

    report = evaluate(biased_bundle, [probe("Paris", "P36"), probe("Rome", "P19"), probe("Poseidonisxq", "P19")])
    d = report.to_dict(with_results=True)
    assert d["metrics"]["closed-book"]["P36"]["p_at_1"] == 1.0
    assert d["dropped"] == 1 and len(d["results"]) == 2
    assert [r["group"] for r in report.rows()] == ["P19", "P36", ALL]
    console = Console(record=True, width=200)
    console.print(report.table(title="t"))
    text = console.export_text()
    assert "P36" in text and "1 probes dropped" in text
    assert isinstance(report, EvalReport)


def test_bad_arguments(biased_bundle) -> None:
    with pytest.raises(ValueError, match="knowledge"):
        evaluate(biased_bundle, [probe("Paris")], modes=("concat",))
    with pytest.raises(ValueError, match="unknown mode"):
        evaluate(biased_bundle, [probe("Paris")], modes=("open-book",))


def test_entity_level_counts_multi_token_objects_and_reports_the_one_token_subset(biased_bundle) -> None:
    """ "paris" ≫ "rome" ≫ everything else at every mask, so the whole answers rank paris, rome,
    then the two-piece "new york": exact ranks 1, 2, 3 whatever the group."""
    from knowledge import Candidate

    cands = [Candidate("Paris", 1, "type"), Candidate("Rome", 2, "type"), Candidate("New York", 3, "type")]
    probes = [
        probe("Paris", "a"),
        probe("Rome", "a"),
        Probe("The capital is [MASK] .", "New York City", group="b", probe_id="nyc", obj_entity_id=3),  # matched by id
    ]
    seen = []

    def candidates(texts, mode):
        seen.append(mode)
        return [cands for _ in texts]

    report = evaluate(biased_bundle, probes, modes=("closed-book",), candidates=candidates)
    assert report.level == "entity" and report.dropped == 0 and seen == ["closed-book"]
    ranks = {r.probe_id: r.rank for r in report.results}
    assert ranks == {"a:Paris": 1, "a:Rome": 2, "nyc": 3}
    m = report.metrics["closed-book"]
    assert (
        m[ALL].n == 3 and m[ALL].p_at_1 == pytest.approx(1 / 3) and m[ALL].mrr == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    )
    one = report.one_token["closed-book"]
    assert one[ALL].n == 2 and one[ALL].p_at_1 == pytest.approx(1 / 2) and "b" not in one
    assert report.to_dict()["one_token"]["closed-book"]["all"]["n"] == 2
    # the token level drops the multi-token object, as LAMA does
    token = evaluate(biased_bundle, probes, modes=("closed-book",))
    assert token.level == "token" and token.dropped == 1


def test_a_gold_entity_no_answer_names_is_a_miss(biased_bundle) -> None:
    from knowledge import Candidate

    report = evaluate(
        biased_bundle,
        [probe("Berlin")],
        modes=("closed-book",),
        candidates=lambda texts, mode: [[Candidate("Paris", 1, "type")] for _ in texts],
    )
    assert report.metrics["closed-book"][ALL].p_at_10 == 0.0 and report.metrics["closed-book"][ALL].mrr < 1e-5
