"""The demo's questions: multi-token changes are asked and judged at entity level."""

from __future__ import annotations

from pathlib import Path

from kecl.demo import DEMO_DATA, correct, demo_probes
from knowledge import KnowledgeStore, iter_input_files


def test_demo_asks_about_multi_token_changes(tmp_path: Path) -> None:
    store = KnowledgeStore.open(f"sqlite:///{tmp_path / 'demo.db'}")
    try:
        store.ingest_paths(list(iter_input_files([DEMO_DATA / "base" / "feed.jsonl"])))
        probes = demo_probes(store)
    finally:
        store.close()
    changed = [p for p in probes if p.group == "changed"]
    relations = {p.relation for p in changed}
    assert {"head of government", "chief executive officer"} <= relations
    # whole names of several words are asked, and the old and new entities are known by id
    multi = [p for p in changed if len(p.gold_after.split()) > 1]
    assert len(multi) >= len(changed) // 2
    assert all(p.gold_after_key for p in changed if p.relation == "head of government")
    # a relation that changed twice in the slice is asked about its last change only
    asked = [(p.subject, p.relation) for p in probes if p.group != "unchanged"]
    assert len(asked) == len(set(asked))
    assert {p.group for p in probes} == {"changed", "new", "unchanged"}


def test_an_answer_is_right_by_entity_or_by_reading() -> None:
    assert correct(("Turkey", 7), "Türkiye", 7)  # another name of the gold entity
    assert correct(("turkiye", None), "Türkiye", 7)  # the same reading, accents aside
    assert not correct(("Greece", 8), "Türkiye", 7)
    assert not correct(("Türkiye", 7), None, None)
