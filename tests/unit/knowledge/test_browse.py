"""Browsing reads: an entity's page as of a date, its timeline, bounded lists; documents by title.
Every test runs on a SQLite file and on the real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import random

import networkx as nx
import pytest

from knowledge import DocumentRecord, EntityRecord, FactRecord, KnowledgeStore, RelationRecord, browse

D = dt.date


def seed(store: KnowledgeStore) -> None:
    store.upsert_relations(
        [
            RelationRecord("P38", "currency", "The currency of [X] is the [Y] .", functional=True),
            RelationRecord("P37", "official language", "[X] speaks [Y] .", functional=False),
        ]
    )
    store.upsert_entities(
        [
            EntityRecord("croatia", "Croatia", aliases=["Republic of Croatia"], type="country"),
            EntityRecord("kuna", "kuna", type="currency"),
            EntityRecord("euro", "euro", type="currency"),
            EntityRecord("dinar", "Yugoslav dinar", type="currency"),
        ]
    )
    store.add_facts([FactRecord("croatia", "P38", "dinar", valid_from=D(1945, 1, 1), source="feed-a")])
    store.add_facts([FactRecord("croatia", "P38", "kuna", valid_from=D(1994, 5, 30), source="feed-b")])
    store.add_facts([FactRecord("croatia", "P38", "euro", valid_from=D(2023, 1, 1), source="feed-c")])
    store.add_facts([FactRecord("croatia", "P37", object_literal="Croatian", source="feed-a")])


def test_entity_page_as_of_shows_what_was_believed_that_day(store: KnowledgeStore) -> None:
    seed(store)
    eid = store.resolve_entity("croatia")
    assert eid is not None
    now = store.entity_page(eid)
    assert now is not None
    assert {(f.relation_id, f.object) for f in now.facts} == {("P38", "euro"), ("P37", "Croatian")}
    in_2000 = store.entity_page(eid, as_of=D(2000, 6, 1))
    assert in_2000 is not None and in_2000.as_of == D(2000, 6, 1)
    assert {(f.relation_id, f.object) for f in in_2000.facts} == {("P38", "kuna"), ("P37", "Croatian")}
    # the day a fact closes it is no longer believed; its successor is
    on_switch = store.entity_page(eid, as_of=D(2023, 1, 1))
    assert on_switch is not None
    assert [f.object for f in on_switch.facts if f.relation_id == "P38"] == ["euro"]
    before = store.entity_page(eid, as_of=D(1900, 1, 1))
    assert before is not None
    assert [f.object for f in before.facts] == ["Croatian"]  # the undated literal holds always
    assert "Republic of Croatia" in now.aliases
    assert now.type == "country" and now.fact_total == 4


def test_timeline_orders_history_and_names_what_superseded_each_fact(store: KnowledgeStore) -> None:
    seed(store)
    eid = store.resolve_entity("croatia")
    assert eid is not None
    page = store.entity_page(eid)
    assert page is not None
    currency = [
        (t.fact.object, t.believed_on, t.superseded_by, t.fact.source)
        for t in page.timeline
        if t.fact.relation_id == "P38"
    ]
    assert currency == [
        ("Yugoslav dinar", (D(1945, 1, 1), D(1994, 5, 30)), "kuna", "feed-a"),
        ("kuna", (D(1994, 5, 30), D(2023, 1, 1)), "euro", "feed-b"),
        ("euro", (D(2023, 1, 1), None), None, "feed-c"),
    ]
    # the incoming side: the euro page shows Croatia pointing at it only from 2023
    euro = store.resolve_entity("euro")
    assert euro is not None
    euro_now, euro_2000 = store.entity_page(euro), store.entity_page(euro, as_of=D(2000, 1, 1))
    assert euro_now is not None and euro_2000 is not None
    assert [f.subject for f in euro_now.incoming] == ["Croatia"] and euro_2000.incoming == []


def test_entity_page_lists_are_bounded_and_say_so(store: KnowledgeStore) -> None:
    store.upsert_relations([RelationRecord("P1", "links to", None, functional=False)])
    store.upsert_entities([EntityRecord("hub", "Hub")] + [EntityRecord(f"e{i}", f"Spoke {i}") for i in range(30)])
    store.add_facts([FactRecord("hub", "P1", f"e{i}") for i in range(30)])
    store.add_documents([DocumentRecord(f"Hub and Spoke {i} meet.", title=f"doc {i}") for i in range(12)])
    hub = store.resolve_entity("hub")
    assert hub is not None
    page = store.entity_page(hub, fact_limit=10, passage_limit=5)
    assert page is not None
    assert len(page.facts) == 10 and len(page.timeline) == 10 and len(page.passages) == 5
    assert set(page.truncated) == {"facts", "timeline", "passages"}
    assert page.fact_total == 30 and page.mention_count >= 12
    assert all("Hub" in p.text for p in page.passages)
    full = store.entity_page(hub, fact_limit=100, passage_limit=100)
    assert full is not None and full.truncated == [] and len(full.facts) == 30
    assert store.entity_page(10**9) is None


def test_find_documents_by_full_text_best_first_each_once(store: KnowledgeStore) -> None:
    store.add_documents(
        [
            DocumentRecord(
                "Croatia adopted the euro. The euro replaced the kuna.", title="Euro news", external_id="n1"
            ),
            DocumentRecord("Zagreb is a city.", title="Zagreb", external_id="n2"),
            DocumentRecord("The kuna was the currency of Croatia.", title="Kuna history", external_id="n3"),
        ]
    )
    assert [d.title for d in store.find_documents("euro")] == ["Euro news"]
    both = store.find_documents("kuna")
    assert sorted(d.title for d in both) == ["Euro news", "Kuna history"] and len(both) == 2
    assert store.find_documents("kuna", limit=1)[0].title in {"Euro news", "Kuna history"}
    assert store.find_documents("   ") == [] and store.find_documents("the") == []


@pytest.mark.parametrize("chunk", [200, 3])  # 3: every hop's frontier spans several statements
def test_walk_neighbourhood_equals_a_breadth_first_reference(
    store: KnowledgeStore, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(browse, "_WALK_CHUNK", chunk)
    rng = random.Random(5)
    store.upsert_relations([RelationRecord("P1", "near", None, functional=False)])
    store.upsert_entities([EntityRecord(f"n{i}", f"Node {i}") for i in range(40)])
    edges = [(rng.randrange(40), rng.randrange(40)) for _ in range(90)]
    store.add_facts(
        [FactRecord(f"n{a}", "P1", f"n{b}", valid_from=D(2000 + i % 20, 1, 1)) for i, (a, b) in enumerate(edges)]
    )
    facts = store.facts(limit=None)
    for as_of in (None, D(2010, 6, 1)):
        believed = [f for f in facts if as_of is None or (f.valid_from or D.min) <= as_of]
        reference = nx.MultiGraph()
        reference.add_edges_from((f.subject_id, f.object_id, f.id) for f in believed)
        centre = believed[0].subject_id
        for hops in (1, 2, 3):
            near = nx.single_source_shortest_path_length(reference, centre, cutoff=hops - 1)
            expected = {f.id for f in believed if f.subject_id in near or f.object_id in near}
            walked = store.walk_neighbourhood(centre, hops=hops, as_of=as_of, fanout=1000, max_facts=10_000)
            assert {f.id for f in walked} == expected
            assert len(walked) == len(expected)  # no fact twice
    capped = store.walk_neighbourhood(centre, hops=2, fanout=2, max_facts=10_000)
    # two facts from the centre reach at most two entities, each expanded by at most two facts
    assert 0 < len(capped) <= 2 + 2 * 2
    assert centre in (capped[0].subject_id, capped[0].object_id)
    assert store.walk_neighbourhood(10**9, hops=2) == []
