"""Edits after ingest (end, retract, entity create/update), exact-name resolution and page totals,
on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from knowledge import DocumentRecord, EditError, EntityRecord, FactRecord, KnowledgeStore, RelationRecord

D = dt.date


def seed(store: KnowledgeStore) -> list[int]:
    store.upsert_relations([RelationRecord(id="P286", label="head coach", template="[X] is coached by [Y] .")])
    store.upsert_entities(
        [
            EntityRecord(id="lfc", name="Liverpool FC", aliases=["Liverpool"]),
            EntityRecord(id="liverpool-city", name="Liverpool"),
            EntityRecord(id="klopp", name="Jürgen Klopp"),
            EntityRecord(id="slot", name="Arne Slot"),
        ]
    )
    summary = store.add_facts(
        [
            FactRecord(subject="lfc", relation="P286", object="klopp", valid_from=D(2015, 10, 8)),
            FactRecord(subject="liverpool-city", relation="P286", object="slot"),
        ]
    )
    return summary.new_fact_ids


def test_end_fact_closes_it_and_keeps_it_in_the_past(store: KnowledgeStore) -> None:
    klopp, _ = seed(store)
    store.graph()  # a view built before the edit must drop the fact too
    store.end_fact(klopp, D(2024, 6, 1))
    lfc = store.entity_id("lfc")
    assert [f.id for f in store.facts(subject=lfc, as_of=D(2020, 1, 1))] == [klopp]
    assert store.facts(subject=lfc, as_of=D(2024, 6, 1)) == []
    assert store.facts(subject=store.entity_id("lfc")) == []
    assert klopp not in {f.fact_id for f in store.graph().facts_of(store.entity_id("lfc") or 0)}
    with pytest.raises(EditError, match="already ended on 2024-06-01") as err:
        store.end_fact(klopp, D(2025, 1, 1))
    assert err.value.status == 409
    with pytest.raises(EditError, match="no fact 999") as err:
        store.end_fact(999, D(2025, 1, 1))
    assert err.value.status == 404


def test_end_before_valid_from_is_refused_and_writes_nothing(store: KnowledgeStore) -> None:
    klopp, _ = seed(store)
    with pytest.raises(EditError, match="before the fact's valid_from 2015-10-08"):
        store.end_fact(klopp, D(2010, 1, 1))
    assert [f.valid_to for f in store.facts(ids=[klopp], include_closed=True)] == [None]


def test_retracted_fact_leaves_every_view_but_the_history(store: KnowledgeStore) -> None:
    klopp, other = seed(store)
    store.graph()
    store.retract_fact(other, "wrong subject: the club, not the city")
    assert [f.id for f in store.facts(relation="P286")] == [klopp]
    assert [f.id for f in store.facts(relation="P286", as_of=D(2030, 1, 1))] == [klopp]
    history = store.facts(relation="P286", include_closed=True)
    assert [(f.id, f.retraction_reason) for f in history] == [
        (klopp, None),
        (other, "wrong subject: the club, not the city"),
    ]
    view = store.get_entity(store.entity_id("liverpool-city") or 0)
    assert view is not None and view.facts == [] and [f.id for f in view.history] == [other]
    assert store.stats()["facts_current"] == 1
    with pytest.raises(EditError, match="was retracted"):
        store.retract_fact(other, "again")
    # the same statement can be made again, as a new fact
    again = store.add_facts([FactRecord(subject="liverpool-city", relation="P286", object="slot")])
    assert again.facts_added == 1


def test_entities_named_reports_every_exact_match(store: KnowledgeStore) -> None:
    seed(store)
    assert [e["key"] for e in store.entities_named("Liverpool")] == ["lfc", "liverpool-city"]
    assert [e["key"] for e in store.entities_named("liverpool fc")] == ["lfc"]
    assert [e["key"] for e in store.entities_named("lfc")] == ["lfc"]
    lfc = store.entity_id("lfc")
    assert [e["key"] for e in store.entities_named(str(lfc))] == ["lfc"]
    assert store.entities_named("Liverpo") == []  # a prefix is a search, not a name


def test_create_and_update_entity(store: KnowledgeStore) -> None:
    seed(store)
    eid = store.create_entity("anfield", "Anfield", type="venue", aliases=["Anfield Road"])
    assert store.entity_id("anfield") == eid
    with pytest.raises(EditError, match="exists already"):
        store.create_entity("anfield", "Anfield")
    store.update_entity(eid, {"name": "Anfield Stadium", "description": "a stadium"}, aliases=["The Kop"])
    view = store.get_entity(eid)
    assert view is not None and (view.name, view.type, view.description) == ("Anfield Stadium", "venue", "a stadium")
    assert view.aliases == ["Anfield", "Anfield Road", "Anfield Stadium", "The Kop"]
    assert [m.entity_id for m in store.link("A night at the Kop.")] == [eid]
    with pytest.raises(EditError, match="no entity 999"):
        store.update_entity(999, {"name": "x"})


def test_counts_match_the_filters(store: KnowledgeStore) -> None:
    klopp, _ = seed(store)
    store.end_fact(klopp, D(2024, 6, 1))
    assert store.count_facts() == 1
    assert store.count_facts(include_closed=True) == 2
    assert store.count_facts(as_of=D(2020, 1, 1), relation="P286") == 2
    assert store.count_facts(as_of=D(2025, 1, 1), relation="P286") == 1
    store.add_documents(
        [
            DocumentRecord(text="Anfield is in Liverpool.", source="news", published_at=D(2024, 1, 1)),
            DocumentRecord(text="Klopp left in 2024.", source="blog", published_at=D(2024, 6, 1)),
            DocumentRecord(text="Slot arrived.", source="news", published_at=D(2024, 7, 1)),
        ]
    )
    assert store.count_documents() == 3
    assert store.count_documents(source="news") == 2
    assert store.count_documents(source="news", published_from=D(2024, 6, 1)) == 1
    assert [d["source"] for d in store.documents(source="news", offset=1)] == ["news"]
    assert store.count_runs() == 0
    store.start_run("test")
    assert store.count_runs() == 1
