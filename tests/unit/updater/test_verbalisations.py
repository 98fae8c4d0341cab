"""How facts are stated for training: the patterns of ``updater.VERBALISATIONS``, and a cycle's own
choice of them (``CycleConfig.verbalisations``)."""

from __future__ import annotations

from pathlib import Path

from knowledge import FactView, KnowledgeStore
from tests.factories import tiny_bundle, write_jsonl
from updater import VERBALISATIONS, CycleConfig, CycleContext, run_cycle, verbalise_fact

FEED = [
    {"kind": "relation", "id": "P38", "label": "currency", "template": "The currency of [X] is the [Y] ."},
    {"kind": "relation", "id": "P36", "label": "capital", "template": "The capital of [X] is [Y] ."},
    {"kind": "entity", "id": "croatia", "name": "Croatia"},
    {"kind": "entity", "id": "euro", "name": "euro"},
    {"kind": "entity", "id": "italy", "name": "Italy"},
    {"kind": "entity", "id": "rome", "name": "Rome"},
    {"kind": "fact", "subject": "croatia", "relation": "P38", "object": "euro"},
    {"kind": "fact", "subject": "italy", "relation": "P36", "object": "rome"},
    {"text": "Since 2023 the euro is the currency of Croatia."},
    {"text": "Rome is the capital of Italy."},
]


def open_store(folder: Path) -> KnowledgeStore:
    folder.mkdir(parents=True, exist_ok=True)
    return KnowledgeStore.open(f"sqlite:///{folder / 'kecl.db'}")


def currency_fact(tmp_path: Path) -> FactView:
    store = open_store(tmp_path / "store")
    store.ingest_paths([write_jsonl(tmp_path / "feed.jsonl", FEED)])
    fact = next(f for f in store.facts(limit=None) if f.relation_id == "P38")
    store.close()
    return fact


def test_a_fact_is_stated_once_per_pattern(tmp_path: Path) -> None:
    fact = currency_fact(tmp_path)
    every = verbalise_fact(fact)
    assert [t.text for t in every] == [
        "The currency of Croatia is the euro .",
        "The currency of Croatia is euro .",
        "Croatia's currency is euro .",
        "euro is the currency of Croatia .",
    ]
    assert verbalise_fact(fact, VERBALISATIONS) == every
    assert verbalise_fact(fact, VERBALISATIONS[:1]) == every[:1]
    (only,) = verbalise_fact(fact, ("[Y] is what [X] pays with .",))
    ((start, end),) = only.salient_spans
    assert only.text == "euro is what Croatia pays with ." and only.text[start:end] == "euro"
    assert verbalise_fact(fact, ("The {label} is [Y] .",)) == []  # a pattern without both slots


def test_a_cycle_states_new_facts_in_its_configured_patterns(tmp_path: Path) -> None:
    feed = write_jsonl(tmp_path / "feed.jsonl", FEED)

    def train_texts(name: str, **config: object) -> tuple[int, list[FactView]]:
        store = open_store(tmp_path / name)
        ctx = CycleContext(store, tmp_path / name / "checkpoints", lambda: tiny_bundle(max_positions=256))
        # evaluation only: the verbalise stage runs and counts, nothing is trained
        cycle = CycleConfig(eval_modes=("closed-book",), heldout_passages=0, min_train_texts=10**6, **config)
        report = run_cycle(ctx, cycle, paths=[feed])
        facts = store.facts(limit=None)
        store.close()
        assert report.status == "succeeded" and report.decision == "no-op", report.error
        return report.counts["train_texts"], facts

    every, facts = train_texts("every")
    template_only, _ = train_texts("template", verbalisations=VERBALISATIONS[:1])
    assert CycleConfig().verbalisations == VERBALISATIONS
    assert len(facts) == 2
    assert every - template_only == sum(len(verbalise_fact(f)) - 1 for f in facts) > 0
