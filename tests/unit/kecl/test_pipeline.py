"""The knowledge-augmented query pipeline: what it links, selects, injects and reports.

A tiny random encoder is enough here: these tests check the knowledge path (linking, facts as of
a date, retrieval of a just-ingested passage, injected input, explanation, snapshot), not what
the weights know.
"""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from kecl.pipeline import MODES, QueryOptions, answer_modes
from kecl.services import Kecl
from knowledge import DocumentRecord, EntityRecord, FactRecord, RelationRecord
from tests.factories import activate_tiny_checkpoint, tiny_settings


def populate(k: Kecl) -> Kecl:
    """Four documents, two relations, Croatia's currency history and capital."""
    k.ingest_documents(
        [
            DocumentRecord(text=t)
            for t in (
                "Paris is the capital of France.",
                "The river Thames flows through London.",
                "Bananas are a yellow fruit.",
                "The violin is a string instrument.",
            )
        ]
    )
    store = k.store
    store.upsert_relations(
        [
            RelationRecord("P38", "currency", "The currency of [X] is the [Y] .", True),
            RelationRecord("P36", "capital", "The capital of [X] is [Y] .", True),
        ]
    )
    store.upsert_entities(
        [
            EntityRecord("croatia", "Croatia"),
            EntityRecord("kuna", "kuna"),
            EntityRecord("euro", "euro"),
            EntityRecord("zagreb", "Zagreb"),
        ]
    )
    store.add_facts(
        [
            FactRecord("croatia", "P38", object="kuna", valid_from=dt.date(1994, 5, 30)),
            FactRecord("croatia", "P38", object="euro", valid_from=dt.date(2023, 1, 1)),
            FactRecord("croatia", "P36", object="zagreb"),
        ]
    )
    return k


@pytest.fixture()
def kecl(tmp_path: Path, tiny_embedder_dir: Path) -> Kecl:
    # Function scope: tests ingest documents and change settings, so each gets its own home.
    k = Kecl(tiny_settings(tmp_path / "home", tiny_embedder_dir))
    activate_tiny_checkpoint(k.settings)
    yield populate(k)
    k.close()


def test_a_just_ingested_passage_is_evidence_at_once(kecl: Kecl) -> None:
    query = "The mascot of the Zorvex festival is the [MASK] ."
    before = kecl.answer([query], QueryOptions(mode="concat", k_passages=2))[0]
    assert all("penguin" not in e["text"] for e in before.evidence)
    kecl.ingest_documents([DocumentRecord(text="The mascot of the Zorvex festival is the penguin.", source="news")])
    after = kecl.answer([query], QueryOptions(mode="concat", k_passages=2, explain=True))[0]
    assert "penguin" in after.evidence[0]["text"] and after.evidence[0]["source"] == "news"
    assert "penguin" in after.injected_input
    assert after.snapshot["watermark"]["passage"] == before.snapshot["watermark"]["passage"] + 1
    assert after.snapshot["index"]["vectors"] == before.snapshot["index"]["vectors"] + 1
    # the explanation splits the mask's attention rollout over the text and each evidence segment
    # (the rest goes to the [CLS]/[SEP] markers, which belong to no segment)
    assert len(after.explanation) == 1 + len(after.evidence)
    assert 0.5 < sum(s["weight"] for s in after.explanation) <= 1.0 + 1e-6
    assert after.explanation[1]["text"].startswith("the mascot of the zorvex")
    closed = kecl.answer([query], QueryOptions(mode="closed-book"))[0]
    assert closed.evidence == [] and closed.facts == [] and "penguin" not in closed.injected_input


def test_facts_are_linked_ranked_and_as_of(kecl: Kecl) -> None:
    query = "The currency of Croatia is the [MASK] ."
    now = kecl.answer([query], QueryOptions(mode="concat", k_passages=0))[0]
    # both current facts of Croatia are used; the one whose relation matches the wording first
    assert [f["object"] for f in now.facts] == ["euro", "Zagreb"]
    assert now.facts[0]["relevance"] > now.facts[1]["relevance"]
    assert "The currency of Croatia is the euro ." in now.injected_input
    then = kecl.answer([query], QueryOptions(mode="tree", k_passages=0, as_of=dt.date(2010, 1, 1)))[0]
    assert [f["object"] for f in then.facts] == ["kuna", "Zagreb"]
    assert "Croatia {currency kuna}" in then.injected_input
    assert len(then.predictions) == 1 and len(then.predictions[0]) == 5


def test_batched_answers_equal_single_ones(kecl: Kecl) -> None:
    queries = ["The currency of Croatia is the [MASK] .", "The capital of France is [MASK] ."]
    batch = kecl.answer(queries, QueryOptions(mode="concat"))
    for q, b in zip(queries, batch):
        single = kecl.answer([q], QueryOptions(mode="concat"))[0]
        assert [p["token"] for p in single.predictions[0]] == [p["token"] for p in b.predictions[0]]
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        kecl.answer(["no mask here"], QueryOptions())


def test_one_query_in_every_mode_answers_as_each_mode_alone(kecl: Kecl) -> None:
    """The augmented modes share one selection of facts and passages; the answers are those of
    asking each mode on its own."""
    query = "The currency of Croatia is the [MASK] ."
    together = kecl.answer_modes(query, MODES, QueryOptions(top_k=5))
    assert list(together) == list(MODES)
    for mode in MODES:
        alone = kecl.answer([query], QueryOptions(mode=mode, top_k=5))[0]  # type: ignore[arg-type]
        got = together[mode]
        assert got.mode == mode
        assert got.predictions == alone.predictions
        assert got.entities == alone.entities
        assert (got.facts, got.evidence, got.injected_input) == (alone.facts, alone.evidence, alone.injected_input)
    assert together["closed-book"].facts == [] and together["concat"].facts
    with pytest.raises(ValueError, match="unknown mode"):
        kecl.answer_modes(query, ["closed-book", "guess"], QueryOptions())
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        kecl.answer_modes("no mask here", MODES, QueryOptions())


def test_modes_side_by_side_answer_as_one_after_another(kecl: Kecl) -> None:
    """On an executor the modes' forward passes run on its threads, side by side, and every mode
    answers exactly as in turn: predictions, entities, knowledge and the attention explanation."""
    query = "The currency of Croatia is the [MASK] ."
    opts = QueryOptions(top_k=5, explain=True)
    in_turn = answer_modes(kecl, query, MODES, opts)
    ran_on: set[str] = set()
    hook = kecl.encoder.model.bert.register_forward_hook(lambda *_: ran_on.add(threading.current_thread().name))
    twin_hook = kecl.encoder.explaining_model().bert.register_forward_hook(
        lambda *_: ran_on.add(threading.current_thread().name)
    )
    try:
        with ThreadPoolExecutor(3, thread_name_prefix="modes") as pool:
            side_by_side = answer_modes(kecl, query, MODES, opts, pool)
    finally:
        hook.remove()
        twin_hook.remove()
    assert ran_on and all(name.startswith("modes") for name in ran_on)
    assert list(side_by_side) == list(MODES)
    for mode in MODES:
        a, b = in_turn[mode], side_by_side[mode]
        assert (a.predictions, a.entities, a.facts, a.evidence) == (b.predictions, b.entities, b.facts, b.evidence)
        assert a.injected_input == b.injected_input and a.explanation == b.explanation
        assert a.explanation
    with ThreadPoolExecutor(3) as pool, pytest.raises(ValueError, match="no \\[MASK\\]"):
        answer_modes(kecl, "no mask here", MODES, opts, pool)


def test_evidence_boost_favours_evidence_words_in_augmented_modes_only(kecl: Kecl) -> None:
    """The copy prior: with a large boost the top answers are words of the injected evidence that
    the query lacks; 0 is the encoder alone; closed-book is never boosted; None takes the setting."""
    query = "The river Thames flows through [MASK] ."
    opts = QueryOptions(mode="concat", k_passages=1, top_k=3)
    alone = kecl.answer([query], replace(opts, evidence_boost=0.0))[0]
    boosted = kecl.answer([query], replace(opts, evidence_boost=40.0))[0]
    assert "london" in boosted.injected_input.lower()
    assert boosted.top == "london" and alone.top != "london"  # a random tiny model does not read
    closed = [
        kecl.answer([query], QueryOptions(mode="closed-book", evidence_boost=b))[0].predictions for b in (0.0, 40.0)
    ]
    assert closed[0] == closed[1]
    default = kecl.answer([query], opts)[0]
    assert kecl.settings.model.evidence_boost > 0
    assert (
        default.predictions
        == kecl.answer([query], replace(opts, evidence_boost=kecl.settings.model.evidence_boost))[0].predictions
    )


def test_answers_rank_whole_entities_beside_the_word_pieces(kecl: Kecl) -> None:
    """Augmented: the linked fact's object is a candidate (source "fact"); closed-book: the
    subject's own facts propose nothing, so with no other subject of the relation and no entity
    types the answer is decoded freely."""
    query = "The currency of Croatia is the [MASK] ."
    (augmented,) = kecl.answer([query], QueryOptions(mode="concat", k_passages=2))
    assert augmented.predictions and augmented.entities
    euro = kecl.store.entity_id("euro")
    assert {"text": "euro", "entity_id": euro, "source": "fact"}.items() <= next(
        e for e in augmented.entities if e["entity_id"] == euro
    ).items()
    assert [e["score"] for e in augmented.entities] == sorted((e["score"] for e in augmented.entities), reverse=True)
    assert augmented.top_entity == augmented.entities[0]["text"]
    assert "entities" in augmented.timings_ms
    (closed,) = kecl.answer([query], QueryOptions(mode="closed-book"))
    assert closed.entities and {e["source"] for e in closed.entities} == {"decoded"}
    # a second subject of the relation puts its object in the closed-book candidates, by type
    kecl.store.upsert_entities([EntityRecord("france", "France")])
    kecl.store.add_facts([FactRecord("france", "P38", object="euro")])
    (closed,) = kecl.answer([query], QueryOptions(mode="closed-book"))
    assert [(e["entity_id"], e["source"]) for e in closed.entities] == [(euro, "type")]
    kecl.settings.answers.entities = False
    (off,) = kecl.answer([query], QueryOptions(mode="concat"))
    assert off.entities == [] and off.predictions


def test_a_cycle_retrieves_each_text_once_for_knowledge_and_candidates(kecl: Kecl, monkeypatch) -> None:
    """The update cycle's sources share one retrieval per (text, mode), with the batch's queries
    embedded together, and give what the query pipeline retrieves text by text."""
    import kecl.evidence as evidence
    from kecl.pipeline import retrieve

    texts = ["The currency of Croatia is the [MASK] .", "The capital of France is [MASK] ."]
    expected = {
        mode: [retrieve(kecl, t, QueryOptions(mode=mode, k_passages=kecl.settings.retrieval.k)) for t in texts]
        for mode in ("closed-book", "concat")
    }
    calls: list[tuple[str, str]] = []

    def counting(system, text, opts):  # type: ignore[no-untyped-def]
        calls.append((text, opts.mode))
        return retrieve(system, text, opts)

    monkeypatch.setattr(evidence, "retrieve", counting)
    knowledge, candidates = evidence.pipeline_retrieval(kecl)
    for _ in range(2):  # the active model's evaluation, then the candidate's
        for mode in ("closed-book", "concat"):
            facts, passages = knowledge(texts, mode)
            assert facts == [p.facts for p in expected[mode]]
            assert [[x.passage_id for x in row] for row in passages] == [
                [x.passage_id for x in p.passages] for p in expected[mode]
            ]
            assert candidates(texts, mode) == [p.candidates for p in expected[mode]]
    assert sorted(calls) == sorted((t, m) for t in texts for m in ("closed-book", "concat"))


def test_cached_source_injects_what_a_query_retrieves(kecl: Kecl) -> None:
    """``kecl eval``'s source embeds a batch's queries in one call and keeps each text: its facts
    and passages are the pipeline's own for each text."""
    from kecl.evidence import cached_source
    from kecl.pipeline import MASK_PATTERN, select_facts

    texts = ["The currency of Croatia is the [MASK] .", "The capital of France is [MASK] .", "[MASK] ."]
    opts = QueryOptions(k_passages=2)
    facts, passages = cached_source(kecl, opts)(texts, "concat")
    for text, row_facts, row_passages in zip(texts, facts, passages):
        query = MASK_PATTERN.sub(" ", text)
        expected = kecl.search(query, 2) if query.strip() else []
        assert [p.passage_id for p in row_passages] == [h.passage_id for h in expected]
        assert row_facts == select_facts(kecl, text, opts)[0]
    assert any(passages) and any(facts)


def test_concat_entity_answers_ride_on_the_one_forward_pass_and_score_as_evaluated(kecl: Kecl) -> None:
    """With length branches, a concat query whose candidates have several lengths costs the encoder
    one forward pass, and its entity answers are those the evaluation's scoring gives for the same
    knowledge (what is served is what is measured); turned off, every length is a pass of its own."""
    from encoder import score_entities, word_pieces
    from kecl.pipeline import retrieve

    kecl.store.upsert_entities([EntityRecord("slovenia", "Slovenia"), EntityRecord("tolar", "Slovenian tolar")])
    kecl.store.add_facts([FactRecord("slovenia", "P38", object="tolar")])
    query = "The currency of Croatia is the [MASK] ."
    opts = QueryOptions(mode="concat", k_passages=2)
    calls: list[int] = []
    hook = kecl.encoder.model.bert.register_forward_hook(lambda *_: calls.append(1))
    try:
        (packed,) = kecl.answer([query], opts)
        packed_calls = len(calls)
        kecl.settings.answers.length_branches = False
        calls.clear()
        (rows,) = kecl.answer([query], opts)
        row_calls = len(calls)
    finally:
        hook.remove()
        kecl.settings.answers.length_branches = True
    prepared = retrieve(kecl, query, opts)
    lengths = {len(p) for p in word_pieces(kecl.encoder.tokenizer, [c.text for c in prepared.candidates])}
    assert {n for n in lengths if n > 1}  # candidates of several pieces were proposed
    assert packed_calls == 1 and row_calls == 1 + len({n for n in lengths if n > 1})
    assert packed.predictions == rows.predictions  # the per-token answer never sees the branches
    assert {e["entity_id"] for e in packed.entities} == {e["entity_id"] for e in rows.entities}
    answers = kecl.settings.answers
    (evaluated,) = score_entities(
        kecl.encoder,
        [prepared.text],
        [prepared.candidates],
        [prepared.facts],
        [prepared.passages],
        strategy="concat",
        max_length=kecl.settings.model.max_injected_length,
        evidence_boost=kecl.settings.model.evidence_boost,
        normalisation=answers.normalisation,
        max_pieces=answers.max_pieces,
        decode_pieces=answers.decode_pieces,
        top_k=answers.top_k,
        shortlist=answers.shortlist,
    )
    assert [(e["text"], e["entity_id"]) for e in packed.entities] == [(a.text, a.entity_id) for a in evaluated]
    assert [e["score"] for e in packed.entities] == pytest.approx([a.score for a in evaluated], abs=1e-3)
