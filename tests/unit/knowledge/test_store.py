"""The store suite: every test runs on a SQLite file and on the real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import json
import struct
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

from knowledge import (
    DocumentRecord,
    EntityRecord,
    FactRecord,
    GraphFact,
    IngestSummary,
    KnowledgeStore,
    PassageVectors,
    RelationRecord,
)
from knowledge.db import MIGRATIONS
from knowledge.models import Document

D = dt.date


def write_feed(path: Path, records: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


BASE_FEED = [
    {
        "kind": "relation",
        "id": "P36",
        "label": "capital",
        "template": "The capital of [X] is [Y] .",
        "functional": True,
    },
    {
        "kind": "relation",
        "id": "P38",
        "label": "currency",
        "template": "The currency of [X] is the [Y] .",
        "functional": True,
    },
    {
        "kind": "relation",
        "id": "P37",
        "label": "official language",
        "template": "[X] speaks [Y] .",
        "functional": False,
    },
    {"kind": "entity", "id": "turkey", "name": "Turkey", "aliases": ["Republic of Turkey"], "type": "country"},
    {"kind": "entity", "id": "ankara", "name": "Ankara", "type": "city"},
    {"kind": "entity", "id": "istanbul", "name": "Istanbul", "type": "city"},
    {"kind": "entity", "id": "croatia", "name": "Croatia", "type": "country"},
    {"kind": "entity", "id": "kuna", "name": "kuna", "type": "currency"},
    {"kind": "entity", "id": "euro", "name": "euro", "type": "currency"},
    {"kind": "entity", "id": "zagreb", "name": "Zagreb", "type": "city"},
    {"kind": "fact", "subject": "turkey", "relation": "P36", "object": "ankara", "valid_from": "1923-10-13"},
    {"kind": "fact", "subject": "croatia", "relation": "P38", "object": "kuna", "valid_from": "1994-05-30"},
    {"kind": "fact", "subject": "croatia", "relation": "P36", "object": "zagreb"},
    {"kind": "fact", "subject": "croatia", "relation": "P37", "object_literal": "Croatian"},
]


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def test_migration_from_empty_creates_every_table(db_url: str) -> None:
    store = KnowledgeStore.open(db_url)
    names = set(sa.inspect(store.engine).get_table_names())
    assert {
        "source",
        "document",
        "passage",
        "entity",
        "alias",
        "relation",
        "fact",
        "mention",
        "update_run",
        "checkpoint",
        "passage_event",
        "index_generation",
        "scheduled_fact",
        "passage_vector",
        "alembic_version",
    } <= names
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    with store.engine.connect() as c:
        assert c.execute(sa.text("select version_num from alembic_version")).scalar() == head
    # opening again is a no-op upgrade, not an error
    KnowledgeStore.open(db_url).close()
    store.close()


def test_ingest_is_idempotent(store: KnowledgeStore, tmp_path: Path) -> None:
    feed = write_feed(tmp_path / "feed.jsonl", BASE_FEED)
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Ankara is the capital of Turkey. Istanbul is its largest city.", encoding="utf-8")
    (corpus / "b.md").write_text("# Croatia\n\nZagreb is the capital of Croatia.", encoding="utf-8")
    first = store.ingest_paths([feed, corpus])
    assert first.issues == []
    assert (first.entities_added, first.relations_added, first.facts_added) == (7, 3, 4)
    assert first.documents_added == 2 and first.passages_added >= 2
    assert first.mentions_added >= 4  # Ankara, Turkey, Istanbul, Zagreb, Croatia
    before = store.stats()
    second = store.ingest_paths([feed, corpus])
    assert store.stats() == before
    assert (second.entities_added, second.entities_updated, second.facts_added, second.documents_added) == (0, 0, 0, 0)
    assert second.facts_unchanged == 4 and second.documents_unchanged == 2


def test_same_text_in_two_files_is_one_document(store: KnowledgeStore) -> None:
    text = "Zagreb is the capital of Croatia."
    ids = store.add_documents([DocumentRecord(text=text, source="a"), DocumentRecord(text=text, source="b")])
    assert len(ids) == 1
    assert store.add_documents([DocumentRecord(text=text + "\n", source="c")]) == []
    assert store.stats()["documents"] == 1


def test_functional_fact_supersedes_and_as_of_sees_history(store: KnowledgeStore, tmp_path: Path) -> None:
    store.ingest_paths([write_feed(tmp_path / "base.jsonl", BASE_FEED)])
    later = store.add_facts([FactRecord("croatia", "P38", object="euro", valid_from=D(2023, 1, 1))])
    assert (later.facts_added, later.facts_closed) == (1, 1)
    croatia = store.entity_id("croatia")
    current = store.facts(subject=croatia, relation="P38")
    assert [f.object for f in current] == ["euro"]
    assert [f.object for f in store.facts(subject=croatia, relation="P38", as_of=D(2022, 6, 1))] == ["kuna"]
    assert [f.object for f in store.facts(subject=croatia, relation="P38", as_of=D(2023, 1, 1))] == ["euro"]
    assert store.facts(subject=croatia, relation="P38", as_of=D(1990, 1, 1)) == []
    history = store.get_entity(croatia).history
    assert [(f.object, f.valid_from, f.valid_to) for f in history] == [("kuna", D(1994, 5, 30), D(2023, 1, 1))]
    # non-functional relations accumulate instead of superseding
    store.add_facts([FactRecord("croatia", "P37", object_literal="Italian")])
    assert sorted(f.object for f in store.facts(subject=croatia, relation="P37")) == ["Croatian", "Italian"]
    # re-ingesting the base feed after the change changes nothing
    before = store.stats()
    store.ingest_paths([tmp_path / "base.jsonl"])
    assert store.stats() == before
    assert [f.object for f in store.facts(subject=croatia, relation="P38")] == ["euro"]


def test_late_arriving_older_fact_joins_history_closed(store: KnowledgeStore, tmp_path: Path) -> None:
    store.ingest_paths([write_feed(tmp_path / "base.jsonl", BASE_FEED)])
    turkey = store.entity_id("turkey")
    summary = store.add_facts([FactRecord("turkey", "P36", object="istanbul", valid_from=D(1453, 5, 29))])
    assert summary.facts_closed == 0
    assert [f.object for f in store.facts(subject=turkey, relation="P36")] == ["Ankara"]
    assert [f.object for f in store.facts(subject=turkey, relation="P36", as_of=D(1900, 1, 1))] == ["Istanbul"]


def test_changes_within_one_batch_chain_correctly(store: KnowledgeStore, tmp_path: Path) -> None:
    store.ingest_paths([write_feed(tmp_path / "base.jsonl", BASE_FEED)])
    store.upsert_entities([EntityRecord("hrd", "Croatian dinar")])
    s = store.add_facts(
        [
            FactRecord("croatia", "P38", object="hrd", valid_from=D(2000, 1, 1)),
            FactRecord("croatia", "P38", object="euro", valid_from=D(2023, 1, 1)),
        ]
    )
    assert s.facts_added == 2 and s.facts_closed == 1
    croatia = store.entity_id("croatia")
    assert [f.object for f in store.facts(subject=croatia, relation="P38")] == ["euro"]
    assert [f.object for f in store.facts(subject=croatia, relation="P38", as_of=D(2010, 1, 1))] == ["Croatian dinar"]


def test_graph_view_kept_in_step_with_sql(store: KnowledgeStore, tmp_path: Path) -> None:
    store.ingest_paths([write_feed(tmp_path / "base.jsonl", BASE_FEED)])
    graph = store.graph()

    def sql_current() -> set[int]:
        return {f.id for f in store.facts(limit=None)}

    def graph_ids() -> set[int]:
        return {key for _, _, key in graph.graph.edges(keys=True)} | {
            f.fact_id for n in graph.graph.nodes for f in graph.facts_of(n) if isinstance(n, int)
        }

    assert {f.fact_id for eid in [store.entity_id("croatia")] for f in graph.facts_of(eid)} == {
        f.id for f in store.facts(entity=store.entity_id("croatia"))
    }
    store.add_facts([FactRecord("croatia", "P38", object="euro", valid_from=D(2023, 1, 1))])
    graph = store.graph()  # caught up incrementally (same object, not rebuilt)
    assert graph is store.graph()
    assert graph.number_of_facts() == len(sql_current())
    euro = store.entity_id("euro")
    kuna = store.entity_id("kuna")
    assert [f.object_id for f in graph.facts_of(store.entity_id("croatia")) if f.relation_id == "P38"] == [euro]
    assert graph.facts_of(kuna) == []
    # a write through a second store (another process) is seen too
    other = KnowledgeStore(store.engine)
    other.add_facts([FactRecord("turkey", "P36", object="istanbul", valid_from=D(2020, 1, 1))])
    graph = store.graph()
    assert graph.number_of_facts() == len(sql_current())
    hood = store.neighbourhood(store.entity_id("turkey"), hops=1)
    assert [f.object for f in hood if f.relation_id == "P36"] == ["Istanbul"]
    past = store.neighbourhood(store.entity_id("turkey"), hops=1, as_of=D(2000, 1, 1))
    assert [f.object for f in past if f.relation_id == "P36"] == ["Ankara"]


def test_two_hop_neighbourhood_and_verbalisation(store: KnowledgeStore, tmp_path: Path) -> None:
    store.ingest_paths([write_feed(tmp_path / "base.jsonl", BASE_FEED)])
    store.upsert_relations([RelationRecord("P17", "country", "[X] is located in [Y] .", True)])
    store.upsert_entities([EntityRecord("kizilay", "Kızılay Square")])
    store.add_facts([FactRecord("kizilay", "P17", object="ankara")])
    ankara = store.entity_id("ankara")
    one = store.neighbourhood(ankara, hops=1)
    two = store.neighbourhood(store.entity_id("kizilay"), hops=2)
    assert {f.relation_id for f in one} == {"P36", "P17"}
    assert {f.subject for f in two} == {"Kızılay Square", "Turkey"}
    texts = {f.verbalise() for f in two}
    assert "The capital of Turkey is Ankara ." in texts


def test_renamed_entity_keeps_old_alias(store: KnowledgeStore, tmp_path: Path) -> None:
    store.ingest_paths([write_feed(tmp_path / "base.jsonl", BASE_FEED)])
    s = store.upsert_entities([EntityRecord("turkey", "Türkiye", aliases=["Republic of Türkiye"])])
    assert s.entities_updated == 1 and s.entities_added == 0
    view = store.get_entity(store.entity_id("turkey"))
    assert view.name == "Türkiye"
    assert {"Turkey", "Republic of Turkey", "Türkiye", "Republic of Türkiye"} <= set(view.aliases)
    mentions = store.link("Turkey, officially the Republic of Türkiye, or TURKIYE.")
    assert [m.surface for m in mentions] == ["Turkey", "Republic of Türkiye", "TURKIYE"]
    assert {m.entity_id for m in mentions} == {view.id}
    assert store.find_entities("turk")[0]["key"] == "turkey"


def test_bad_input_is_reported_and_the_rest_goes_in(store: KnowledgeStore, tmp_path: Path) -> None:
    good = write_feed(tmp_path / "good.jsonl", BASE_FEED)
    (tmp_path / "latin1.txt").write_bytes("Caf\xe9 au lait in Zagreb.".encode("latin-1"))
    (tmp_path / "mixed.jsonl").write_text(
        "\n".join(
            [
                json.dumps({"text": "Zagreb lies on the Sava.", "id": "d1"}),
                '{"text": "broken',
                json.dumps({"kind": "fact", "subject": "croatia", "relation": "P999", "object": "zagreb"}),
                json.dumps({"kind": "fact", "subject": "croatia", "object": "zagreb"}),
                json.dumps({"kind": "fact", "subject": "atlantis", "relation": "P36", "object": "zagreb"}),
                json.dumps({"kind": "entity", "name": "No Id"}),
                json.dumps(
                    {
                        "kind": "fact",
                        "subject": "croatia",
                        "relation": "P36",
                        "object": "zagreb",
                        "valid_from": "last year",
                    }
                ),
                json.dumps([1, 2]),
                json.dumps({"text": "Ankara is in Anatolia.", "published_at": "2020-01-02"}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    (tmp_path / "notes.pdf").write_bytes(b"%PDF-1.4")
    summary = store.ingest_paths([good, tmp_path / "latin1.txt", tmp_path / "mixed.jsonl", tmp_path / "notes.pdf"])
    where = {(Path(i.path).name, i.line): i.reason for i in summary.issues}
    assert "not valid UTF-8" in where[("latin1.txt", None)]
    assert "malformed JSON" in where[("mixed.jsonl", 2)]
    assert "unknown relation 'P999'" in where[("mixed.jsonl", 3)]
    assert "missing field 'relation'" in where[("mixed.jsonl", 4)]
    assert "unknown subject entity 'atlantis'" in where[("mixed.jsonl", 5)]
    assert "missing field 'id'" in where[("mixed.jsonl", 6)]
    assert "not an ISO date" in where[("mixed.jsonl", 7)]
    assert "expected a JSON object" in where[("mixed.jsonl", 8)]
    assert "unsupported file type" in where[("notes.pdf", None)]
    assert len(summary.issues) == 9
    # everything else went in
    assert summary.facts_added == 4 and summary.documents_added == 2
    assert store.get_document(1) is not None
    assert any(d["published_at"] == "2020-01-02" for d in store.documents())
    assert str(summary.issues[0]).count(":") >= 1


def test_tsv_feeds(store: KnowledgeStore, tmp_path: Path) -> None:
    (tmp_path / "relations.tsv").write_text(
        "id\tlabel\ttemplate\tfunctional\nP36\tcapital\tThe capital of [X] is [Y] .\ttrue\n", encoding="utf-8"
    )
    (tmp_path / "entities.tsv").write_text(
        "id\tname\taliases\ttype\nfr\tFrance\tFrench Republic|République française\tcountry\nparis\tParis\t\tcity\n",
        encoding="utf-8",
    )
    (tmp_path / "facts.tsv").write_text(
        "subject\trelation\tobject\tvalid_from\nfr\tP36\tparis\t1944-08-25\nfr\tP36\tparis\textra\tcolumn\n",
        encoding="utf-8",
    )
    s = store.ingest_paths([tmp_path])
    assert (s.relations_added, s.entities_added, s.facts_added) == (1, 2, 1)
    assert len(s.issues) == 1 and s.issues[0].line == 3
    assert store.link("La République française")[0].surface == "République française"


def test_passages_search_and_delete(store: KnowledgeStore) -> None:
    store.upsert_entities([EntityRecord("zagreb", "Zagreb"), EntityRecord("sava", "Sava")])
    long_text = " ".join(f"Sentence number {i} talks about the river Sava near Zagreb." for i in range(40))
    ids = store.add_documents(
        [
            DocumentRecord(text=long_text, title="long", source="s1", published_at=D(2021, 1, 1)),
            DocumentRecord(text="Ljubljana is a different city entirely.", title="other", source="s2"),
        ]
    )
    assert len(ids) > 2  # the long document was chunked
    assert all(
        n <= store.max_passage_tokens for n in [store.count_tokens(t) for t in store.passage_texts(ids).values()]
    )
    assert store.passage_ids() == set(ids) and store.max_passage_id() == max(ids)
    hits = store.lexical_search("Where is Ljubljana?", k=3)
    assert hits and store.passage_texts([hits[0][0]])[hits[0][0]].startswith("Ljubljana")
    assert hits == sorted(hits, key=lambda h: -h[1])
    mentioning = store.passages_mentioning([store.entity_id("sava")], k=100)
    assert {p for p, _ in mentioning} == set(ids) - {ids[-1]}
    assert store.passage_ids_where(source="s2") == {ids[-1]}
    assert store.passage_ids_where(published_from=D(2020, 1, 1)) == set(ids) - {ids[-1]}
    batches = list(store.iter_passages(batch_size=3))
    assert [p for b in batches for p, _ in b] == sorted(ids)
    info = store.passage_info([ids[0]])[ids[0]]
    assert info.title == "long" and info.source == "s1"
    removed = store.delete_document(info.document_id)
    assert set(removed) == set(ids) - {ids[-1]}
    assert store.passage_ids() == {ids[-1]}
    assert store.passages_mentioning([store.entity_id("sava")], k=10) == []
    assert store.lexical_search("river Sava", k=5) == []


def test_vectors_made_before_the_write_are_stored_with_their_passages(store: KnowledgeStore) -> None:
    """The embedder is asked for the new chunks only (a stored document's are not embedded again),
    its vectors land beside the passages under its version, and leave with them."""
    asked: list[list[str]] = []

    def embed(texts: list[str]) -> PassageVectors:
        asked.append(texts)
        return PassageVectors("toy@1", {t: struct.pack("<2f", len(t), i) for i, t in enumerate(texts)})

    long_text = " ".join(f"Sentence {i} is about the Sava river near Zagreb." for i in range(40))
    ids = store.add_documents(
        [DocumentRecord(text=long_text), DocumentRecord(text="Ljubljana is elsewhere.")], embed=embed
    )
    texts = store.passage_texts(ids)
    assert len(ids) > 2 and sorted(asked[0]) == sorted(set(texts.values()))
    stored = store.passage_vectors("toy@1", ids)
    assert set(stored) == set(ids)
    assert all(struct.unpack("<2f", stored[p])[0] == len(texts[p]) for p in ids)
    assert store.passage_vectors("other@1", ids) == {}  # another embedder's vectors are not these

    again = store.add_documents([DocumentRecord(text=long_text), DocumentRecord(text="Rijeka is a port.")], embed=embed)
    assert asked[1] == ["Rijeka is a port."] and set(store.passage_vectors("toy@1", again)) == set(again)
    assert store.add_documents([DocumentRecord(text="Rijeka is a port.")], embed=embed) == [] and len(asked) == 2

    document = store.passage_info([ids[0]])[ids[0]].document_id
    store.delete_document(document)
    assert set(store.passage_vectors("toy@1", ids + again)) == {ids[-1], *again}


def test_a_write_reports_the_vectors_it_stored_but_a_bulk_total_holds_none(
    store: KnowledgeStore, tmp_path: Path
) -> None:
    """One write's summary lists the vectors it stored (its writer indexes them without reading them
    back); the total of a many-file ingest does not keep them all in memory."""

    def embed(texts: list[str]) -> PassageVectors:
        return PassageVectors("toy@1", {t: struct.pack("<2f", len(t), 0) for t in texts})

    summary = IngestSummary()
    ids = store.add_documents([DocumentRecord(text="Ljubljana is a city.")], summary=summary, embed=embed)
    assert summary.stored_vectors == [(ids[0], "toy@1", struct.pack("<2f", len("Ljubljana is a city."), 0))]

    for i in range(2):
        (tmp_path / f"c{i}.txt").write_text(f"Document {i} mentions Zagreb.", encoding="utf-8")
    per_file: list[int] = []
    total = store.ingest_paths(
        sorted(tmp_path.glob("c*.txt")), on_file=lambda _p, s: per_file.append(len(s.stored_vectors)), embed=embed
    )
    assert per_file == [1, 1] and len(total.new_passage_ids) == 2 and total.stored_vectors == []


def test_postgres_full_text_lets_common_words_rank_but_not_select(pg_schema_url: str) -> None:
    # Ranking every passage that holds a common word made a search cost tens of milliseconds per
    # 10k matches; once the statistics say a word is common, only the rarer words select.
    store = KnowledgeStore.open(pg_schema_url)
    try:
        texts = [f"The harbour of town {i} is quiet." for i in range(60)]
        texts += [f"The quay of town {i} is busy." for i in range(60, 120)]
        texts += ["The harbour of Zanzibar is old.", "A harbour and a quay meet at the square."]
        ids = store.add_documents([DocumentRecord(text=t) for t in texts])
        with store.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE passage"))
        by_text = {pid: t for pid, t in store.passage_texts(ids).items()}

        rare = store.lexical_search("Zanzibar harbour", k=50)
        assert [by_text[p] for p, _ in rare] == ["The harbour of Zanzibar is old."]
        # only common words: the passages holding all of them
        both = store.lexical_search("harbour quay", k=50)
        assert [by_text[p] for p, _ in both] == ["A harbour and a quay meet at the square."]
        # nothing holds all of them: any of them selects, as without statistics
        assert len(store.lexical_search("harbour busy", k=500)) == len(texts)
        assert [p for p, _ in store.lexical_search("Zanzibar", k=5)] == [p for p, _ in rare]
    finally:
        store.close()


def test_relink_after_new_alias(store: KnowledgeStore) -> None:
    ids = store.add_documents([DocumentRecord(text="Agram was the old name of the city.")])
    assert store.passages_mentioning([1], k=5) == []
    store.upsert_entities([EntityRecord("zagreb", "Zagreb", aliases=["Agram"])])
    assert store.relink_passages(ids) == 1
    assert store.passages_mentioning([store.entity_id("zagreb")], k=5) == [(ids[0], 1.0)]


def test_graph_fact_dataclass_matches_sql_after_random_operations(store: KnowledgeStore) -> None:
    import random

    rng = random.Random(0)
    store.upsert_relations(
        [RelationRecord("F", "functional", "[X] f [Y] .", True), RelationRecord("N", "multi", "[X] n [Y] .", False)]
    )
    store.upsert_entities([EntityRecord(f"e{i}", f"Entity {i}") for i in range(30)])
    for step in range(20):
        records = [
            FactRecord(
                f"e{rng.randrange(30)}",
                rng.choice("FN"),
                object=f"e{rng.randrange(30)}",
                valid_from=D(2000 + step, 1, 1),
            )
            for _ in range(15)
        ]
        store.add_facts(records)
        g = store.graph()
        expected = {(f.id, f.subject_id, f.relation_id, f.object_id) for f in store.facts(limit=None)}
        got = {
            (f.fact_id, f.subject_id, f.relation_id, f.object_id)
            for n in list(g.graph.nodes)
            for f in g.facts_of(n)
            if f.subject_id == n
        }
        assert got == expected
    # functional relations have at most one current object per subject
    current = store.facts(relation="F", limit=None)
    assert len({f.subject_id for f in current}) == len(current)
    assert isinstance(next(iter(store.graph().facts_of(current[0].subject_id))), GraphFact)


def test_alembic_upgrade_is_stepwise_and_autogenerate_sees_no_drift(db_url: str) -> None:
    """Upgrading an empty database step by step gives the models' schema exactly."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from knowledge.models import Base, include_object
    from knowledge.store import make_engine, migrate

    engine = make_engine(db_url)
    migrate(engine, "0001")
    assert "update_lock" not in sa.inspect(engine).get_table_names()
    migrate(engine, "head")
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_object": include_object})
        assert compare_metadata(ctx, Base.metadata) == []
    engine.dispose()


def test_lock_admits_one_holder_and_expires(store: KnowledgeStore) -> None:
    import time

    assert store.try_lock("cycle", "a", lease_seconds=60)
    assert not store.try_lock("cycle", "b", lease_seconds=60)
    assert store.lock_holder("cycle") == "a"
    assert store.renew_lock("cycle", "a", 60) and not store.renew_lock("cycle", "b", 60)
    store.release_lock("cycle", "b")  # not the holder: no effect
    assert store.lock_holder("cycle") == "a"
    store.release_lock("cycle", "a")
    assert store.try_lock("cycle", "b", lease_seconds=0.2)
    time.sleep(0.3)  # b crashed; its lease ran out
    assert store.try_lock("cycle", "c", lease_seconds=60)
    assert store.lock_holder("cycle") == "c"


def test_runs_checkpoints_and_sampling(store: KnowledgeStore) -> None:
    rid = store.start_run("manual")
    assert store.get_run(rid)["status"] == "running"
    store.finish_run(
        rid,
        status="succeeded",
        timings={"train": 1.5},
        metrics={"p1": 0.5},
        decision="promote",
        reasons=["ok"],
        checkpoint_version="v0002",
    )
    run = store.get_run(rid)
    assert (run["status"], run["timings"], run["decision"], run["checkpoint_version"]) == (
        "succeeded",
        {"train": 1.5},
        "promote",
        "v0002",
    )
    assert run["finished_at"] is not None and store.runs()[0]["id"] == rid
    store.record_checkpoint("v0001", None, "active", {"loss": 2.0})
    store.record_checkpoint("v0002", "v0001", "candidate", {"loss": 1.9})
    store.set_checkpoint_status("v0002", "active")
    assert {c["version"]: c["status"] for c in store.checkpoints()} == {"v0001": "retired", "v0002": "active"}
    ids = store.add_documents([DocumentRecord(text=f"Passage number {i} is here.") for i in range(30)])
    sample = store.sample_passages(10, max_id=ids[19], exclude_modulo=5, seed=1)
    assert len(sample) == 10 and all(p <= ids[19] and p % 5 for p, _ in sample)
    held = store.heldout_passages(3, modulo=5)
    assert [p for p, _ in held] == sorted(p for p in ids if p % 5 == 0)[:3]


def test_entity_read_caps_its_lists_and_counts_them_all(store: KnowledgeStore, tmp_path: Path) -> None:
    """A hub's read returns a page of each list (current in id order, history newest first) with
    the full counts, and the same facts in the same order as the unbounded read."""
    store.ingest_paths([write_feed(tmp_path / "base.jsonl", BASE_FEED)])
    for year in range(2000, 2006):  # five closings of the functional capital, newest last
        store.add_facts(
            [FactRecord("croatia", "P36", object="zagreb" if year % 2 else "istanbul", valid_from=D(year, 1, 1))]
        )
    store.add_facts([FactRecord("croatia", "P37", object_literal=lang) for lang in ("Italian", "Hungarian", "Czech")])
    croatia = store.entity_id("croatia")
    full = store.get_entity(croatia)
    assert (len(full.facts), full.facts_total, len(full.history), full.history_total) == (6, 6, 6, 6)
    page = store.get_entity(croatia, limit=2)
    assert (page.facts_total, page.history_total) == (6, 6)
    assert [f.id for f in page.facts] == [f.id for f in full.facts][:2] == sorted(f.id for f in full.facts)[:2]
    assert [f.id for f in page.history] == [f.id for f in full.history][:2]
    assert [f.valid_to for f in page.history] == [D(2005, 1, 1), D(2004, 1, 1)]
    # a list shorter than the cap is counted from the page itself
    assert store.get_entity(store.entity_id("zagreb"), limit=50).facts_total == len(
        store.get_entity(store.entity_id("zagreb")).facts
    )


def test_a_new_document_links_aliases_another_writer_added_since(db_url: str) -> None:
    """A document is linked in its own write with every alias in SQL at that moment, those written
    by another process since this store last looked included; it is stamped with its ingest time."""
    ours, theirs = KnowledgeStore.open(db_url), KnowledgeStore.open(db_url)
    try:
        ours.add_documents([DocumentRecord(text="Nothing to link here.")])  # the linker has caught up once
        theirs.upsert_entities([EntityRecord(id="Q1435", name="Zagreb", type="city", aliases=["Agram"])])
        before = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=5)
        summary = IngestSummary()
        ids = ours.add_documents(
            [DocumentRecord(text="Agram was the old name."), DocumentRecord(text="Agram was the old name.")],
            summary=summary,
        )
        assert (summary.documents_added, summary.documents_unchanged, summary.mentions_added) == (1, 1, 1)
        zagreb = ours.entity_id("Q1435")
        assert zagreb is not None and [pid for pid, _ in ours.passages_mentioning([zagreb], k=5)] == ids
        with ours.session() as s:
            stamped = s.scalar(sa.select(Document.ingested_at).order_by(Document.id.desc()).limit(1))
        assert stamped is not None and stamped >= before
    finally:
        ours.close()
        theirs.close()
