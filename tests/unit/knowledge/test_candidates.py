"""Answer candidates from the graph: fitting relations, the relation's range and same-typed
entities (never the subject's own facts), the linked facts and the injected passages' mentions."""

from __future__ import annotations

from knowledge import (
    DocumentRecord,
    EntityRecord,
    FactRecord,
    KnowledgeStore,
    RelationRecord,
    fitting_relations,
)

RELATIONS = [
    {"id": "R1", "label": "chief executive officer", "template": "The chief executive officer of [X] is [Y] ."},
    {"id": "R2", "label": "headquarters location", "template": "[X] is headquartered in [Y] ."},
]


def test_the_relation_whose_words_the_query_shares_fits() -> None:
    assert fitting_relations(RELATIONS, "The chief executive officer of Tesla is [MASK] .") == ["R1"]
    assert fitting_relations(RELATIONS, "Tesla is headquartered in [MASK] .") == ["R2"]
    # the subject's own words do not make a relation fit
    assert fitting_relations(RELATIONS, "Headquartered Inc. makes [MASK] .", ["headquartered", "inc"]) == []


def populate(store: KnowledgeStore) -> dict[str, int]:
    store.upsert_relations(
        [
            RelationRecord("R1", "chief executive officer", "The chief executive officer of [X] is [Y] ."),
            RelationRecord("R2", "headquarters location", "[X] is headquartered in [Y] ."),
        ]
    )
    store.upsert_entities(
        [
            EntityRecord("tesla", "Tesla", type="company"),
            EntityRecord("spacex", "SpaceX", type="company"),
            EntityRecord("acme", "Acme", type="company"),
            EntityRecord("musk", "Elon Musk", aliases=["Musk"], type="person"),
            EntityRecord("shotwell", "Gwynne Shotwell", type="person"),
            EntityRecord("coyote", "Wile E. Coyote", type="person"),
            EntityRecord("austin", "Austin", type="city"),
        ]
    )
    store.add_facts(
        [
            FactRecord("tesla", "R1", object="musk"),
            FactRecord("spacex", "R1", object="shotwell"),
            FactRecord("tesla", "R2", object="austin"),
        ]
    )
    store.add_documents([DocumentRecord(text="Wile E. Coyote once ran Acme from Austin.")])
    return {key: store.entity_id(key) or 0 for key in ("tesla", "spacex", "musk", "shotwell", "coyote", "austin")}


def test_closed_book_candidates_never_come_from_the_subjects_own_facts(store: KnowledgeStore) -> None:
    ids = populate(store)
    query = "The chief executive officer of SpaceX is [MASK] ."
    by_entity = {}
    for c in store.answer_candidates(query, [ids["spacex"]], ["SpaceX"]):
        by_entity.setdefault(c.entity_id, c)  # an entity's name comes before its aliases
    # Musk is in R1's range through Tesla's fact; Coyote is a person like R1's objects; Shotwell is
    # SpaceX's own object but also a person: proposed by type, never by the subject's fact
    assert by_entity[ids["musk"]].source == "type"
    assert by_entity[ids["coyote"]].source == "type"
    assert by_entity[ids["shotwell"]].source == "type"
    assert ids["austin"] not in by_entity and ids["spacex"] not in by_entity  # not a person; the subject
    # Tesla's CEO: the only R1 object of other subjects is Shotwell; Musk comes back by type only
    tesla = {
        c.entity_id: c.source
        for c in store.answer_candidates("The chief executive officer of Tesla is [MASK] .", [ids["tesla"]], ["Tesla"])
        if c.source != "alias"
    }
    assert tesla[ids["shotwell"]] == "type" and tesla.get(ids["musk"]) == "type"


def test_augmented_candidates_add_the_linked_facts_and_the_passages_mentions(store: KnowledgeStore) -> None:
    ids = populate(store)
    query = "The chief executive officer of Tesla is [MASK] ."
    facts = [f for f in store.facts(limit=None) if f.subject_id == ids["tesla"]]
    passage_ids = sorted(store.passage_ids())
    cands = store.answer_candidates(query, [ids["tesla"]], ["Tesla"], facts, passage_ids)
    first = {}
    for c in cands:
        first.setdefault(c.entity_id, c.source)
    assert first[ids["musk"]] == "fact"  # the linked entity's fact of the fitting relation
    assert ids["austin"] in first and first[ids["austin"]] == "passage"  # R2 does not fit; mentioned
    assert first[ids["coyote"]] == "passage"
    # every surface of an entity is a candidate: the alias of Musk too
    assert {c.text for c in cands if c.entity_id == ids["musk"]} == {"Elon Musk", "Musk"}
    assert next(c.source for c in cands if c.text == "Musk") == "alias"
    assert cands[0].source == "fact"


def test_no_fitting_relation_no_graph_candidates(store: KnowledgeStore) -> None:
    ids = populate(store)
    assert store.answer_candidates("Bananas are [MASK] .", [], []) == []
    assert ids


def test_literal_objects_are_candidates_too(store: KnowledgeStore) -> None:
    ids = populate(store)
    store.upsert_relations([RelationRecord("R3", "official name", "The official name of [X] is [Y] .")])
    store.add_facts(
        [
            FactRecord("tesla", "R3", object_literal="Tesla, Inc."),
            FactRecord("spacex", "R3", object_literal="Space Exploration Technologies Corp."),
        ]
    )
    query = "The official name of Tesla is [MASK] ."
    closed = {c.text: c.source for c in store.answer_candidates(query, [ids["tesla"]], ["Tesla"])}
    assert closed == {"Space Exploration Technologies Corp.": "type"}  # never Tesla's own value
    facts = [f for f in store.facts(limit=None) if f.subject_id == ids["tesla"]]
    augmented = {c.text: c.source for c in store.answer_candidates(query, [ids["tesla"]], ["Tesla"], facts)}
    assert augmented["Tesla, Inc."] == "fact" and augmented["Space Exploration Technologies Corp."] == "type"


def test_a_relations_range_without_the_subjects_matches_counting_every_fact(store: KnowledgeStore) -> None:
    """The kept ranking less the excluded subjects' own facts is exactly the ranking counted from
    the facts of the other subjects (ties by id), and it follows facts added after it was kept."""
    import random

    from knowledge.candidates import RangeCounts, relation_range

    rng = random.Random(7)
    store.upsert_relations([RelationRecord("R1", "chief executive officer", "The CEO of [X] is [Y] .")])
    store.upsert_entities([EntityRecord(f"e{i}", f"E {i}", type="thing") for i in range(40)])
    ids = [store.entity_id(f"e{i}") or 0 for i in range(40)]
    store.add_facts([FactRecord(f"e{rng.randrange(40)}", "R1", object=f"e{rng.randrange(40)}") for _ in range(300)])

    def counted(excluded: set[int], limit: int) -> list[int]:
        counts: dict[int, int] = {}
        for f in store.facts(relation="R1", include_closed=True, limit=None):
            if f.subject_id not in excluded and f.object_id is not None:
                counts[f.object_id] = counts.get(f.object_id, 0) + 1
        return sorted(counts, key=lambda e: (-counts[e], e))[:limit]

    kept = RangeCounts()
    for _ in range(20):
        excluded = set(rng.sample(ids, rng.randrange(0, 4)))
        limit = rng.choice([1, 3, 10, 100])
        with store.session() as s:
            got = relation_range(s, ["R1"], sorted(excluded), limit, kept.read(s))
        expected = counted(excluded, limit)
        assert got[: len(expected)] == expected  # then, below the limit, same-typed entities
    # a fact added after the ranking was kept is counted at the next read
    newcomer = ids[0]
    store.add_facts([FactRecord(f"e{i}", "R1", object="e0") for i in range(1, 40)])
    with store.session() as s:
        assert relation_range(s, ["R1"], [], 1, kept.read(s)) == [newcomer] == counted(set(), 1)


def test_kept_candidates_follow_renames_and_new_facts(store: KnowledgeStore) -> None:
    """The process keeps rankings and surface forms between queries; a rename or a new fact is
    seen by the next query all the same."""
    ids = populate(store)
    query = "The chief executive officer of SpaceX is [MASK] ."

    def names() -> dict[int, str]:
        return {
            c.entity_id: c.text
            for c in store.answer_candidates(query, [ids["spacex"]], ["SpaceX"])
            if c.source != "alias" and c.entity_id is not None
        }

    assert names()[ids["musk"]] == "Elon Musk"
    store.update_entity(ids["musk"], {"name": "Elon R. Musk"})
    assert names()[ids["musk"]] == "Elon R. Musk"
    store.upsert_entities([EntityRecord("newco", "Newco", type="company"), EntityRecord("ada", "Ada Lovelace")])
    assert store.entity_id("ada") not in names()  # no type, no fact: not proposed
    store.add_facts([FactRecord("newco", "R1", object="ada")])
    assert names()[store.entity_id("ada") or 0] == "Ada Lovelace"
