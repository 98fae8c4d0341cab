"""Graph view: kept in step with adds and removals, k-hop neighbourhood, verbalisation."""

from __future__ import annotations

import random

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knowledge.graph import FactGraph, GraphFact, verbalise


def _entity_fact(fact_id: int, subject: int, obj: int, relation: str = "P1") -> GraphFact:
    return GraphFact(fact_id, subject, relation, obj, None)


def _literal_fact(fact_id: int, subject: int, literal: str, relation: str = "P2") -> GraphFact:
    return GraphFact(fact_id, subject, relation, None, literal)


def _rebuilt(facts) -> FactGraph:
    graph = FactGraph()
    graph.add_facts(sorted(facts, key=lambda f: f.fact_id))
    return graph


def _assert_same_graph(a: nx.MultiDiGraph, b: nx.MultiDiGraph) -> None:
    assert dict(a.nodes(data=True)) == dict(b.nodes(data=True))
    assert sorted(a.edges(keys=True, data="relation")) == sorted(b.edges(keys=True, data="relation"))


def _random_fact(rng: random.Random, fact_id: int, n_entities: int) -> GraphFact:
    subject = rng.randrange(n_entities)
    if rng.random() < 0.2:
        return _literal_fact(fact_id, subject, f"value {rng.randrange(5)}", rng.choice("AB"))
    return _entity_fact(fact_id, subject, rng.randrange(n_entities), rng.choice("PQR"))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_entities=st.integers(1, 12), n_ops=st.integers(0, 120), bulk=st.booleans())
def test_graph_stays_equal_to_one_rebuilt_from_surviving_facts(seed, n_entities, n_ops, bulk):
    rng = random.Random(seed)
    graph, alive, next_id = FactGraph(), {}, 0
    for _ in range(n_ops):
        roll = rng.random()
        if roll < 0.55 or not alive:
            batch = [_random_fact(rng, next_id + i, n_entities) for i in range(rng.randint(1, 4))]
            next_id += len(batch)
            graph.add_facts(batch) if bulk else [graph.add_fact(f) for f in batch]
            alive.update((f.fact_id, f) for f in batch)
        elif roll < 0.9:
            fact_id = rng.choice(list(alive))
            graph.remove_fact(fact_id)
            del alive[fact_id]
        else:  # the store may hand back an older id with changed content
            fact = _random_fact(rng, rng.choice(list(alive)), n_entities)
            graph.add_fact(fact)
            alive[fact.fact_id] = fact
    assert graph.number_of_facts() == len(alive)
    expected = _rebuilt(alive.values())
    _assert_same_graph(graph.graph, expected.graph)
    for entity in range(n_entities):
        assert graph.facts_of(entity) == expected.facts_of(entity)
        assert graph.neighbourhood(entity, hops=2, max_fanout=3) == expected.neighbourhood(entity, hops=2, max_fanout=3)


def test_facts_live_as_edges_and_literals_on_their_subject():
    graph = FactGraph()
    graph.add_facts([_entity_fact(1, 10, 20, "P36"), _literal_fact(2, 10, "85 million", "P1082")])
    assert list(graph.graph.edges(keys=True, data="relation")) == [(10, 20, 1, "P36")]
    assert graph.graph.nodes[10]["literals"] == {2: ("P1082", "85 million")}
    graph.remove_fact(2)
    assert "literals" not in graph.graph.nodes[10]
    graph.remove_fact(1)
    assert graph.graph.number_of_nodes() == 0 and graph.number_of_facts() == 0
    graph.remove_fact(1)  # unknown ids are ignored


def test_bad_fact_is_rejected_and_earlier_ones_in_the_batch_stay():
    graph = FactGraph()
    with pytest.raises(ValueError, match="fact 2"):
        graph.add_facts([_entity_fact(1, 1, 2), GraphFact(2, 1, "P1", 3, "both")])
    assert graph.number_of_facts() == 1 and graph.graph.has_edge(1, 2, key=1)


def _reference_neighbourhood(facts: list[GraphFact], source: int, hops: int) -> set[int]:
    """Facts with an endpoint closer than ``hops`` to ``source`` (undirected, uncapped)."""
    undirected = nx.Graph()
    undirected.add_node(source)
    undirected.add_edges_from((f.subject_id, f.object_id) for f in facts if f.object_id is not None)
    distance = nx.single_source_shortest_path_length(undirected, source, cutoff=hops)
    return {f.fact_id for f in facts if min(distance.get(f.subject_id, hops), distance.get(f.object_id, hops)) < hops}


@pytest.mark.parametrize("seed", range(5))
def test_uncapped_neighbourhood_equals_undirected_k_hop_reference(seed):
    rng = random.Random(seed)
    facts = [_random_fact(rng, i, 60) for i in range(150)]
    graph = _rebuilt(facts)
    for source in range(60):
        for hops in (0, 1, 2, 3):
            found = graph.neighbourhood(source, hops, max_fanout=10**9, max_facts=10**9)
            assert len(found) == len({f.fact_id for f in found})
            assert {f.fact_id for f in found} == _reference_neighbourhood(facts, source, hops)
            # BFS order: the nearer endpoint's distance never decreases along the list
            undirected = graph.graph.to_undirected(as_view=True)
            if source in undirected:
                distance = nx.single_source_shortest_path_length(undirected, source)
                nearest = [min(distance.get(f.subject_id, 99), distance.get(f.object_id, 99)) for f in found]
                assert nearest == sorted(nearest)


def test_fanout_cap_follows_the_newest_facts_and_max_facts_truncates():
    graph = FactGraph()
    # a hub (entity 0) with 100 neighbours, each with one further fact of its own
    graph.add_facts(_entity_fact(i, 0, i) if i % 2 else _entity_fact(i, i, 0) for i in range(1, 101))
    graph.add_facts(_entity_fact(1000 + i, i, 5000 + i) for i in range(1, 101))
    one_hop = graph.neighbourhood(0, hops=1, max_fanout=10)
    assert [f.fact_id for f in one_hop] == list(range(100, 90, -1))
    two_hop = graph.neighbourhood(0, hops=2, max_fanout=10)
    assert [f.fact_id for f in two_hop[10:]] == [1000 + i for i in range(100, 90, -1)]
    assert len(graph.neighbourhood(0, hops=2, max_fanout=10, max_facts=15)) == 15
    # out-of-order ids still sort newest first
    graph.add_fact(_entity_fact(50_000, 0, 7))
    graph.add_fact(_entity_fact(40_000, 0, 8))
    assert [f.fact_id for f in graph.neighbourhood(0, max_fanout=3)] == [50_000, 40_000, 100]


def test_literals_do_not_link_entities():
    graph = FactGraph()
    graph.add_facts([_literal_fact(1, 1, "1990"), _literal_fact(2, 2, "1990"), _entity_fact(3, 2, 3)])
    assert [f.fact_id for f in graph.neighbourhood(1, hops=3)] == [1]
    assert [f.fact_id for f in graph.neighbourhood(2, hops=1)] == [3, 2]
    assert graph.neighbourhood(999, hops=2) == []
    with pytest.raises(ValueError):
        graph.neighbourhood(1, hops=-1)


def test_verbalise_fills_both_slots_once():
    assert verbalise("[X]'s capital is [Y] .", "Türkiye", "Ankara") == "Türkiye's capital is Ankara ."
    assert verbalise("[Y] is the capital of [X] .", "Türkiye", "Ankara") == ("Ankara is the capital of Türkiye .")
    assert verbalise("[X] and [Y]", "[Y]", "b") == "[Y] and b"
    with pytest.raises(ValueError, match="slot"):
        verbalise("[X] is a city .", "Ankara", "x")
