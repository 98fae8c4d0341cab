"""kecl.search.hybrid_search and the index CLI over a real SQLite store."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from kecl.search import hybrid_search
from knowledge import DocumentRecord, EntityRecord, KnowledgeStore
from retrieval import IndexHandle, build_from_passages

DOCS = [
    ("Zorvath Quill was born in Elmsworth and wrote three novels.", "news", dt.date(2020, 1, 5)),
    ("The river Tamsk floods every spring near the old mill.", "news", dt.date(2021, 3, 1)),
    ("Marla Venn moved to Ostrava after the war, where she taught music.", "wiki", dt.date(2019, 7, 9)),
    ("A castle stands on the hill above the town of Brinley.", "wiki", dt.date(2018, 2, 2)),
    ("Paris hosts many museums and the Seine crosses the city.", "wiki", dt.date(2022, 5, 5)),
    ("Marla Venn won a prize for her second symphony.", "news", dt.date(2023, 8, 8)),
]


@pytest.fixture()
def store(tmp_path):
    store = KnowledgeStore.open(f"sqlite:///{tmp_path / 'kecl.db'}")
    store.upsert_entities(
        [EntityRecord(id="Q1", name="Zorvath Quill", aliases=["Z. Quill"]), EntityRecord(id="Q2", name="Marla Venn")]
    )
    store.add_documents(
        [DocumentRecord(text=t, source=s, published_at=d, title=f"doc {i}") for i, (t, s, d) in enumerate(DOCS)]
    )
    yield store
    store.close()


@pytest.fixture()
def handle(store, tiny_embedder):
    index = build_from_passages(tiny_embedder, lambda: store.iter_passages(batch_size=2), kind="flat")
    return IndexHandle(index, tiny_embedder)


def pid_of(store, needle: str) -> int:
    return next(pid for pid, text in store.passage_texts(sorted(store.passage_ids())).items() if needle in text)


def test_rare_name_found_through_lexical_and_entity_channels(store, handle):
    hits = hybrid_search(
        "Where was Zorvath Quill born?",
        3,
        store=store,
        index_handle=handle,
        weights={"dense": 1.0, "lexical": 1.0, "entity": 0.5},
    )
    gold = pid_of(store, "Zorvath")
    assert hits[0].passage_id == gold
    assert hits[0].ranks.get("lexical") == 1 and hits[0].ranks.get("entity") == 1 and "dense" in hits[0].ranks
    assert hits[0].text.startswith("Zorvath") and hits[0].source == "news" and hits[0].title == "doc 0"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_entity_channel_uses_linked_entities_and_weights_switch_channels(store, handle):
    venn = {pid_of(store, "Ostrava"), pid_of(store, "symphony")}
    hits = hybrid_search(
        "tell me about Marla Venn",
        2,
        store=store,
        index_handle=handle,
        weights={"dense": 0.0, "lexical": 0.0, "entity": 1.0},
    )
    assert {h.passage_id for h in hits} == venn
    assert all(set(h.ranks) == {"entity"} for h in hits)
    dense_only = hybrid_search(
        "tell me about Marla Venn",
        6,
        store=store,
        index_handle=handle,
        weights={"dense": 1.0, "lexical": 0.0, "entity": 0.0},
    )
    assert len(dense_only) == 6 and all(set(h.ranks) == {"dense"} for h in dense_only)


def test_filters_restrict_every_channel(store, handle):
    allowed = store.passage_ids_where(source="wiki")
    hits = hybrid_search("Marla Venn prize symphony", 5, store=store, index_handle=handle, allowed_ids=allowed)
    assert hits and all(h.passage_id in allowed and h.source == "wiki" for h in hits)
    assert pid_of(store, "symphony") not in {h.passage_id for h in hits}


def test_deleted_passages_never_returned_even_before_reconcile(store, handle):
    gold = pid_of(store, "Zorvath")
    doc_id = store.passage_info([gold])[gold].document_id
    assert store.delete_document(doc_id) == [gold]
    # the index still holds the vector (crash before the index write): SQL wins
    hits = hybrid_search("Zorvath Quill Elmsworth", 6, store=store, index_handle=handle)
    assert gold not in {h.passage_id for h in hits}
    report = handle.reconcile(store.passage_ids(), store.passage_texts)
    assert report.removed == 1 and gold not in handle.index.ids()


def test_cli_index_build_status_reconcile_and_search(tmp_path, monkeypatch, tiny_embedder_dir):
    from typer.testing import CliRunner

    from kecl.cli import app

    model_dir = tiny_embedder_dir
    home = tmp_path / "home"
    monkeypatch.setenv("KECL_HOME", str(home))
    monkeypatch.setenv("KECL_INDEX__EMBEDDER", str(model_dir))
    monkeypatch.setenv("KECL_MODEL__DEVICE", "cpu")
    monkeypatch.chdir(tmp_path)
    home.mkdir()
    store = KnowledgeStore.open(f"sqlite:///{(home / 'kecl.db').resolve()}")
    store.upsert_entities([EntityRecord(id="Q1", name="Zorvath Quill")])
    store.add_documents([DocumentRecord(text=t, source=s, published_at=d) for t, s, d in DOCS])
    runner = CliRunner()

    result = runner.invoke(app, ["index", "status"])
    assert result.exit_code == 1 and "no index manifest" in result.output
    result = runner.invoke(app, ["index", "build"])
    assert result.exit_code == 0, result.output
    assert "built flat index: 6 passages" in result.output
    result = runner.invoke(app, ["index", "status"])
    assert result.exit_code == 0 and "yes" in result.output, result.output

    store.add_documents([DocumentRecord(text="Quorra Belt was crowned in Dunmere in 1402.", source="wiki")])
    assert "no: run" in runner.invoke(app, ["index", "status"]).output
    result = runner.invoke(app, ["index", "reconcile"])
    assert result.exit_code == 0 and "added 1, removed 0" in result.output, result.output
    assert "yes" in runner.invoke(app, ["index", "status"]).output

    result = runner.invoke(app, ["search", "who was crowned in Dunmere", "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]  # the shape of POST /v1/search
    assert len(hits) == 2 and "Dunmere" in hits[0]["text"] and hits[0]["ranks"]["lexical"] == 1
    result = runner.invoke(app, ["search", "Zorvath Quill", "--source", "wiki", "--json"])
    assert all(h["source"] == "wiki" for h in json.loads(result.stdout)["hits"])
    result = runner.invoke(app, ["search", "Zorvath Quill", "-k", "1"])
    assert result.exit_code == 0 and "Zorvath" in result.output
    store.close()
