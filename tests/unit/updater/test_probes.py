"""LAMA file parsing (good and bad lines), probes from store facts, LAMA's one-token rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories import write_jsonl
from updater.probes import (
    GOOGLE_RE_TEMPLATES,
    Probe,
    fill_template,
    gold_token_id,
    load_lama_probes,
    probes_from_facts,
    read_relation_templates,
    single_token_filter,
)


@pytest.fixture()
def lama(tmp_path: Path) -> Path:
    """A miniature LAMA folder: relations.jsonl, TREx/P19 + P36, Google_RE/place_of_death."""
    write_jsonl(
        tmp_path / "relations.jsonl",
        [
            {"relation": "P19", "template": "[X] was born in [Y] .", "label": "place of birth"},
            {"relation": "P36", "template": "The capital of [X] is [Y] .", "label": "capital"},
        ],
    )
    write_jsonl(
        tmp_path / "TREx" / "P19.jsonl",
        [
            {
                "uuid": "u1",
                "sub_label": "Dante",
                "obj_label": "Florence",
                "predicate_id": "P19",
                "evidences": [{"masked_sentence": "Dante was born in [MASK] in 1265.", "obj_surface": "Florence"}],
            },
            {
                "uuid": "u2",
                "sub_label": "Mozart",
                "obj_label": "Salzburg",
                "predicate_id": "P19",
                "evidences": [{"masked_sentence": "[MASK] and [MASK] twice.", "obj_surface": "Salzburg"}],
            },
            "{not json",
            {"uuid": "u3", "sub_label": "Kant", "predicate_id": "P19"},  # no obj_label
            {"uuid": "u4", "sub_label": "Goethe", "obj_label": "Frankfurt", "predicate_id": "P19"},
        ],
    )
    write_jsonl(
        tmp_path / "TREx" / "P36.jsonl",
        [
            {"uuid": "c1", "sub_label": "France", "obj_label": "Paris", "predicate_id": "P36"},
            {"uuid": "c2", "sub_label": "Atlantis", "obj_label": "Poseidonis", "predicate_id": "P99"},  # no template
        ],
    )
    write_jsonl(
        tmp_path / "Google_RE" / "place_of_death_test.jsonl",
        [
            {
                "pred": "/people/deceased_person/place_of_death",
                "sub_label": "Joshua Mathiot",
                "obj_label": "Newark",
                "masked_sentences": ["Joshua Mathiot died in [MASK] , Ohio ."],
            },
        ],
    )
    return tmp_path


def test_trex_probes_use_relation_templates_and_report_bad_lines(lama: Path) -> None:
    loaded = load_lama_probes(lama / "TREx")
    texts = {p.probe_id: p.text for p in loaded.probes}
    assert texts == {
        "u1": "Dante was born in [MASK] .",
        "u2": "Mozart was born in [MASK] .",
        "u4": "Goethe was born in [MASK] .",
        "c1": "The capital of France is [MASK] .",
    }
    by_line = {(Path(i.path).name, i.line): i.reason for i in loaded.issues}
    assert set(by_line) == {("P19.jsonl", 3), ("P19.jsonl", 4), ("P36.jsonl", 2)}
    assert "not valid JSON" in by_line[("P19.jsonl", 3)]
    assert "obj_label" in by_line[("P19.jsonl", 4)]
    assert "P99" in by_line[("P36.jsonl", 2)]
    dante = next(p for p in loaded.probes if p.probe_id == "u1")
    assert (dante.obj_label, dante.sub_label, dante.relation, dante.group) == ("Florence", "Dante", "P19", "P19")
    assert dante.origin.endswith("P19.jsonl:1")


def test_masked_sentences_mode_takes_the_first_sentence_with_one_mask(lama: Path) -> None:
    loaded = load_lama_probes(lama / "TREx" / "P19.jsonl", use_masked_sentences=True)
    assert [p.text for p in loaded.probes] == ["Dante was born in [MASK] in 1265."]
    # Mozart's only sentence has two masks, Goethe has none: both reported, not guessed.
    assert sorted(i.line for i in loaded.issues) == [2, 3, 4, 5]


def test_google_re_uses_lamas_templates_or_its_masked_sentences(lama: Path) -> None:
    path = lama / "Google_RE" / "place_of_death_test.jsonl"
    [probe] = load_lama_probes(path).probes
    assert probe.relation == "place_of_death"
    assert probe.text == fill_template(GOOGLE_RE_TEMPLATES["place_of_death"], "Joshua Mathiot")
    [probe] = load_lama_probes(path, use_masked_sentences=True).probes
    assert probe.text == "Joshua Mathiot died in [MASK] , Ohio ."


def test_limits_relation_filter_and_explicit_templates(lama: Path) -> None:
    assert [p.probe_id for p in load_lama_probes(lama / "TREx", limit_per_relation=1).probes] == ["u1", "c1"]
    assert [p.probe_id for p in load_lama_probes(lama, relations=["P36"]).probes] == ["c1"]
    custom = load_lama_probes(lama / "TREx" / "P36.jsonl", templates={"P36": "[Y] is the capital of [X] ."})
    assert custom.probes[0].text == "[MASK] is the capital of France ."
    with pytest.raises(FileNotFoundError):
        load_lama_probes(lama / "missing.jsonl")


def test_relation_templates_file_errors_name_the_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "relations.jsonl", [{"relation": "P1", "template": "[X] [Y] ."}, {"label": "x"}])
    with pytest.raises(ValueError, match=r"relations.jsonl:2"):
        read_relation_templates(path)


def test_non_utf8_file_is_reported_not_fatal(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"obj_label": "x", "masked_sentences": ["\xff [MASK]"]}\n')
    loaded = load_lama_probes(bad)
    assert loaded.probes == [] and "UTF-8" in loaded.issues[0].reason


def test_fill_template_needs_exactly_one_object_slot() -> None:
    assert fill_template("[X] lives in [Y] .", "Ann") == "Ann lives in [MASK] ."
    with pytest.raises(ValueError):
        fill_template("[X] lives here .", "Ann")


def test_probes_from_facts_of_a_real_store(tmp_path: Path) -> None:
    from knowledge import EntityRecord, FactRecord, KnowledgeStore, RelationRecord

    store = KnowledgeStore.open(f"sqlite:///{tmp_path / 'k.db'}")
    try:
        store.upsert_relations(
            [
                RelationRecord("P36", "capital", "The capital of [X] is [Y] .", functional=True),
                RelationRecord("P38", "currency", None),
            ]
        )
        store.upsert_entities(
            [
                EntityRecord("Q142", "France"),
                EntityRecord("Q90", "Paris"),
                EntityRecord("Q224", "Croatia"),
                EntityRecord("Q4916", "euro"),
            ]
        )
        store.add_facts([FactRecord("Q142", "P36", "Q90"), FactRecord("Q224", "P38", "Q4916")])
        facts = store.facts()
    finally:
        store.close()
    probes = probes_from_facts(facts)
    by_rel = {p.relation: p for p in probes}
    assert by_rel["P36"].text == "The capital of France is [MASK] ."
    assert by_rel["P36"].obj_label == "Paris" and by_rel["P36"].group == "P36"
    assert by_rel["P38"].text == "Croatia currency [MASK] ."  # no template: "[X] <label> [Y] ."
    assert {p.fact_id for p in probes} == {f.id for f in facts}
    assert {p.probe_id for p in probes} == {f"fact:{f.id}" for f in facts}
    grouped = probes_from_facts(facts, template_override={"P38": "[X] pays in [Y] ."}, group="unchanged")
    assert {p.text for p in grouped} == {"The capital of France is [MASK] .", "Croatia pays in [MASK] ."}
    assert {p.group for p in grouped} == {"unchanged"}
    named = probes_from_facts(facts, group=lambda f: "new" if f.relation_id == "P36" else "old")
    assert sorted(p.group for p in named) == ["new", "old"]


def test_single_token_filter_counts(tokenizer) -> None:
    probes = [
        Probe("The capital of France is [MASK] .", "Paris"),  # "paris": one token (uncased)
        Probe("Dante was born in [MASK] .", "Florence"),  # one token
        Probe("The currency is the [MASK] .", "Poseidonisxq"),  # several word pieces
        Probe("He speaks [MASK] .", "New Zealand English"),  # several words
        Probe("No mask here .", "Paris"),  # no [MASK]
        Probe("[MASK] [MASK] .", "Paris"),  # two masks
    ]
    kept, dropped = single_token_filter(probes, tokenizer)
    assert [p.obj_label for p in kept] == ["Paris", "Florence"]
    assert len(dropped) == 4
    assert gold_token_id(tokenizer, "Paris") == tokenizer.convert_tokens_to_ids("paris")
    assert gold_token_id(tokenizer, "Poseidonisxq") is None
    assert gold_token_id(tokenizer, "[UNK]") is None
