"""The demo data shipped in kecl/demo_data: well-formed, consistent, and telling a true story.

These read the committed files, so a hand edit that breaks the data fails here, and the last
test checks that ``build.py`` still regenerates exactly the committed files.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[3] / "kecl" / "demo_data"
SLICES = ("base", "later")
MAX_BYTES = 300 * 1000


def read_jsonl(path: Path) -> list[dict]:
    # Strict UTF-8: a stray byte must fail here, not in the demo.
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_build():
    spec = importlib.util.spec_from_file_location("demo_data_build", DATA / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def build():
    return load_build()


@pytest.fixture(scope="module")
def feeds() -> dict[str, list[dict]]:
    return {s: read_jsonl(DATA / s / "feed.jsonl") for s in SLICES}


@pytest.fixture(scope="module")
def corpora() -> dict[str, list[dict]]:
    return {s: read_jsonl(DATA / s / "corpus.jsonl") for s in SLICES}


def of_kind(records, kind):
    return [r for r in records if r["kind"] == kind]


def functional_ids(feeds) -> set[str]:
    return {r["id"] for r in of_kind(feeds["base"], "relation") if r["functional"]}


def test_feed_records_have_the_documented_fields(feeds):
    for slice_, records in feeds.items():
        assert records, slice_
        for r in records:
            assert r["kind"] in {"relation", "entity", "fact"}, r
            if r["kind"] == "relation":
                assert {"id", "label", "template", "functional"} <= r.keys(), r
                assert r["id"].startswith("P") and r["id"][1:].isdigit(), r
                assert "[X]" in r["template"] and r["template"].endswith("[Y] ."), r
                assert isinstance(r["functional"], bool), r
            elif r["kind"] == "entity":
                assert {"id", "name", "type"} <= r.keys(), r
                assert r["id"] == r["id"].lower() and " " not in r["id"], r
                assert all(isinstance(a, str) and a for a in r.get("aliases", [])), r
            else:
                assert {"subject", "relation"} <= r.keys(), r
                assert ("object" in r) != ("object_literal" in r), r
                if "valid_from" in r:
                    dt.date.fromisoformat(r["valid_from"])


def test_ids_are_unique(feeds, corpora):
    base_ids = [r["id"] for r in of_kind(feeds["base"], "entity")]
    later_ids = [r["id"] for r in of_kind(feeds["later"], "entity")]
    assert len(base_ids) == len(set(base_ids))
    assert len(later_ids) == len(set(later_ids))
    relation_ids = [r["id"] for s in SLICES for r in of_kind(feeds[s], "relation")]
    assert len(relation_ids) == len(set(relation_ids))
    doc_ids = [d["id"] for s in SLICES for d in corpora[s]]
    assert len(doc_ids) == len(set(doc_ids))
    fact_keys = [
        (s, r["subject"], r["relation"], r.get("object", r.get("object_literal")), r.get("valid_from"))
        for s in SLICES
        for r in of_kind(feeds[s], "fact")
    ]
    assert len(fact_keys) == len(set(fact_keys))


def test_every_reference_is_defined_in_the_slice_or_the_base(feeds):
    relations = {r["id"] for s in SLICES for r in of_kind(feeds[s], "relation")}
    known = {r["id"] for r in of_kind(feeds["base"], "entity")}
    for slice_ in SLICES:
        if slice_ == "later":
            known |= {r["id"] for r in of_kind(feeds["later"], "entity")}
        for f in of_kind(feeds[slice_], "fact"):
            assert f["relation"] in relations, f
            assert f["subject"] in known, f
            if "object" in f:
                assert f["object"] in known, f


def test_base_is_a_snapshot_and_later_only_holds_changes_after_it(build, feeds):
    for f in of_kind(feeds["base"], "fact"):
        assert f.get("valid_from", "") <= build.T.BASE_DATE, f
    for f in of_kind(feeds["later"], "fact"):
        if "valid_from" in f:
            assert build.T.BASE_DATE < f["valid_from"] <= build.T.LATER_DATE, f
    # A functional relation holds one object at a time: the base has at most one per subject.
    functional = functional_ids(feeds)
    keys = [(f["subject"], f["relation"]) for f in of_kind(feeds["base"], "fact") if f["relation"] in functional]
    assert len(keys) == len(set(keys))


def test_changed_functional_facts_really_change(build, feeds):
    functional = functional_ids(feeds)
    current = {
        (f["subject"], f["relation"]): f.get("object", f.get("object_literal"))
        for f in of_kind(feeds["base"], "fact")
        if f["relation"] in functional
    }
    later = [f for f in of_kind(feeds["later"], "fact") if f["relation"] in functional]
    changed: dict[str, int] = {}
    for f in sorted(later, key=lambda f: f.get("valid_from", "")):
        key = (f["subject"], f["relation"])
        obj = f.get("object", f.get("object_literal"))
        if key in current:
            # A change names a new object and says when it happened (after the base snapshot).
            assert obj != current[key], f
            assert f.get("valid_from", "") > build.T.BASE_DATE, f
            changed[f["relation"]] = changed.get(f["relation"], 0) + 1
        current[key] = obj
    # The demo's story needs every kind of change.
    for relation in ("P38", "P35", "P6", "P169", "P159", "P1448"):
        assert changed.get(relation, 0) >= 1, (relation, changed)
    assert current[("croatia", "P38")] == "euro"
    assert current[("turkey", "P1448")] == "Republic of Türkiye"


def test_renamed_entities_have_a_new_name_and_a_new_official_name(feeds):
    base = {r["id"]: r for r in of_kind(feeds["base"], "entity")}
    redeclared = [r for r in of_kind(feeds["later"], "entity") if r["id"] in base]
    assert redeclared
    names_changed = 0
    for r in redeclared:
        old = base[r["id"]]
        assert (r["name"], r.get("aliases")) != (old["name"], old.get("aliases")), r
        if r["name"] != old["name"]:
            names_changed += 1
            assert old["name"] in r.get("aliases", []), r  # the old name still links
    assert names_changed >= 3
    official = {f["subject"] for f in of_kind(feeds["later"], "fact") if f["relation"] == "P1448"}
    assert {"turkey", "astana"} <= official


def test_new_entities_appear_in_the_later_slice(feeds):
    base = {r["id"] for r in of_kind(feeds["base"], "entity")}
    new = [r for r in of_kind(feeds["later"], "entity") if r["id"] not in base]
    assert {r["type"] for r in new} >= {"company", "person", "currency"}
    subjects = {f["subject"] for f in of_kind(feeds["later"], "fact")}
    assert any(r["id"] in subjects for r in new if r["type"] == "company")


def _surface_forms(entity: dict) -> list[str]:
    return [entity["name"], *entity.get("aliases", [])]


def test_each_corpus_mentions_each_entity_of_its_slice(feeds, corpora):
    for slice_ in SLICES:
        text = "\n".join(d["text"] for d in corpora[slice_]).casefold()
        for e in of_kind(feeds[slice_], "entity"):
            assert any(form.casefold() in text for form in _surface_forms(e)), (slice_, e["id"])


def test_each_fact_is_stated_in_its_slice_corpus(feeds, corpora):
    """Subject and object (as that slice names them) meet in at least one document."""
    entities = {r["id"]: r for r in of_kind(feeds["base"], "entity")}
    for slice_ in SLICES:
        entities.update({r["id"]: r for r in of_kind(feeds[slice_], "entity")})
        docs = [d["text"].casefold() for d in corpora[slice_]]
        for f in of_kind(feeds[slice_], "fact"):
            subj = [x.casefold() for x in _surface_forms(entities[f["subject"]])]
            if "object" in f:
                obj = [x.casefold() for x in _surface_forms(entities[f["object"]])]
            else:
                obj = [f["object_literal"].casefold()]
            assert any(any(s in d for s in subj) and any(o in d for o in obj) for d in docs), (slice_, f)


def test_corpus_documents_are_short_and_dated_inside_their_slice(build, corpora):
    for slice_ in SLICES:
        assert len(corpora[slice_]) >= 50
        for d in corpora[slice_]:
            assert {"id", "title", "text", "published_at"} <= d.keys(), d
            assert d["id"].startswith(f"{slice_}-"), d
            assert 1 <= d["text"].count(". ") + 1 <= 6, d
            day = d["published_at"]
            dt.date.fromisoformat(day)
            if slice_ == "base":
                assert day <= build.T.BASE_DATE, d
            else:
                assert build.T.BASE_DATE < day <= build.T.LATER_DATE, d


def test_bad_files_are_bad_in_the_way_their_names_say(feeds):
    bad = DATA / "bad"
    raw = (bad / "not_utf8.txt").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert "Zürich" in raw.decode("latin-1")

    lines = (bad / "malformed_line.jsonl").read_text(encoding="utf-8").splitlines()
    failures = 0
    for line in lines:
        try:
            json.loads(line)
        except json.JSONDecodeError:
            failures += 1
    assert failures == 1 and len(lines) >= 3

    relations = {r["id"] for r in of_kind(feeds["base"], "relation")}
    facts = read_jsonl(bad / "unknown_relation.jsonl")
    assert sum(f["relation"] not in relations for f in facts) == 1 and len(facts) >= 3

    facts = read_jsonl(bad / "missing_field.jsonl")
    incomplete = [
        f for f in facts if not ({"subject", "relation"} <= f.keys() and ("object" in f or "object_literal" in f))
    ]
    assert len(incomplete) == 1 and len(facts) >= 3


def test_data_stays_small():
    files = [p for s in (*SLICES, "bad") for p in (DATA / s).iterdir() if p.is_file()]
    assert all(p.stat().st_size <= MAX_BYTES for p in files)
    assert sum(p.stat().st_size for p in files) <= MAX_BYTES


def test_build_regenerates_the_committed_files(build, tmp_path):
    build.build(tmp_path)
    for s in (*SLICES, "bad"):
        for committed in (DATA / s).iterdir():
            assert (tmp_path / s / committed.name).read_bytes() == committed.read_bytes(), committed
