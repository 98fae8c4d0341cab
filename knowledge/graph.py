"""Graph view of the current facts: a networkx MultiDiGraph kept in step with the store.

The store feeds it: ``add_fact`` when a fact is asserted, ``remove_fact`` when it is closed
(``valid_to`` set) or deleted. Nothing is rebuilt per query.

Layout of ``FactGraph.graph``:
- nodes are entity ids; an entity-valued fact is the edge ``subject -> object`` with key
  ``fact_id`` and attribute ``relation``;
- a literal-valued fact ("population 85 million") is not an edge: it lives on its subject node
  as ``graph.nodes[subject]["literals"][fact_id] = (relation_id, literal)``. A literal is a value,
  not an entity, so it must not become a path between entities (every entity born in "1990"
  would otherwise be two hops from every other).
- a node exists exactly while some current fact mentions it, so the graph always equals the one
  rebuilt from the surviving facts.

Neighbourhood walk: breadth first from the entity over out- and in-edges alike (``succ`` and
``pred``), without copying anything (``nx.ego_graph(undirected=True)`` copies the whole graph per
call). High-degree nodes are capped deterministically: from each visited node at most
``max_fanout`` of its facts are followed, the newest first (highest fact id — fact ids grow with
time, and a newer fact is more likely still relevant). Each node keeps its fact ids in a sorted
list for this, so the cap costs O(max_fanout), not O(degree).

Memory is a few hundred bytes per fact (measured by benchmarks/bench_graph.py); past ~10M facts query
the SQL edge table instead of holding the graph in memory.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: networkx loads when a graph view is built
    import networkx as nx


@dataclass(frozen=True, slots=True)
class GraphFact:
    """One current fact: ``object_id`` for an entity object, ``object_literal`` for a value."""

    fact_id: int
    subject_id: int
    relation_id: str
    object_id: int | None
    object_literal: str | None


class FactGraph:
    """The current facts as a MultiDiGraph plus the per-node indexes that keep queries fast."""

    def __init__(self) -> None:
        import networkx as nx  # deferred: a second off the start of every command that opens the store

        self._graph: nx.MultiDiGraph[int] = nx.MultiDiGraph()
        self._facts: dict[int, GraphFact] = {}
        # entity id -> sorted ids of the facts it takes part in (as subject or object)
        self._fact_ids_by_entity: dict[int, list[int]] = {}

    @property
    def graph(self) -> nx.MultiDiGraph[int]:
        """The live graph (not a copy): read it, do not mutate it."""
        return self._graph

    def number_of_facts(self) -> int:
        """Return the number of current facts (edges plus literal facts)."""
        return len(self._facts)

    def __contains__(self, fact_id: object) -> bool:
        return fact_id in self._facts

    def add_fact(self, fact: GraphFact) -> None:
        """Add one current fact; re-adding an id replaces the fact it held.

        Raises ValueError when the fact has both or neither of ``object_id``/``object_literal``.
        """
        self.add_facts((fact,))

    def add_facts(self, facts: Iterable[GraphFact]) -> None:
        """Add many facts in one pass (bulk edge insert); same rules as ``add_fact``.

        On a bad fact the ones before it stay added and ValueError is raised.
        """
        graph, index = self._graph, self._fact_ids_by_entity
        edges: list[tuple] = []
        touched: set[int] = set()  # entities whose fact-id list may have gone out of order

        def flush() -> None:
            graph.add_edges_from(edges)
            edges.clear()
            for entity in touched:  # the store adds in id order, so this is rare
                index[entity].sort()
            touched.clear()

        try:
            for fact in facts:
                if (fact.object_id is None) == (fact.object_literal is None):
                    raise ValueError(
                        f"fact {fact.fact_id} needs exactly one of object_id and "
                        f"object_literal, got {fact.object_id!r} and "
                        f"{fact.object_literal!r}"
                    )
                old = self._facts.get(fact.fact_id)
                if old is not None:
                    if old == fact:
                        continue
                    flush()  # remove_fact needs the pending edges in place and the lists sorted
                    self.remove_fact(fact.fact_id)
                self._facts[fact.fact_id] = fact
                if fact.object_id is None:
                    graph.add_node(fact.subject_id)
                    literals = graph.nodes[fact.subject_id].setdefault("literals", {})
                    literals[fact.fact_id] = (fact.relation_id, fact.object_literal)
                    entities: tuple[int, ...] = (fact.subject_id,)
                else:
                    edges.append((fact.subject_id, fact.object_id, fact.fact_id, {"relation": fact.relation_id}))
                    entities = (
                        (fact.subject_id,) if fact.subject_id == fact.object_id else (fact.subject_id, fact.object_id)
                    )
                for entity in entities:
                    ids = index.get(entity)
                    if ids is None:
                        index[entity] = [fact.fact_id]
                    else:
                        if ids[-1] > fact.fact_id:
                            touched.add(entity)
                        ids.append(fact.fact_id)
        finally:  # a bad fact mid-batch leaves the facts before it fully added
            flush()

    def remove_fact(self, fact_id: int) -> None:
        """Remove a fact that was closed or deleted; unknown ids are ignored.

        An entity left with no current fact leaves the graph.
        """
        fact = self._facts.pop(fact_id, None)
        if fact is None:
            return
        graph = self._graph
        if fact.object_id is None:
            literals = graph.nodes[fact.subject_id]["literals"]
            del literals[fact_id]
            if not literals:
                del graph.nodes[fact.subject_id]["literals"]
            entities: tuple[int, ...] = (fact.subject_id,)
        else:
            graph.remove_edge(fact.subject_id, fact.object_id, key=fact_id)
            entities = (fact.subject_id,) if fact.subject_id == fact.object_id else (fact.subject_id, fact.object_id)
        for entity in entities:
            ids = self._fact_ids_by_entity[entity]
            del ids[bisect.bisect_left(ids, fact_id)]
            if not ids:
                del self._fact_ids_by_entity[entity]
                graph.remove_node(entity)

    def facts_of(self, entity_id: int) -> list[GraphFact]:
        """Return every current fact with ``entity_id`` as subject or object, newest first."""
        ids = self._fact_ids_by_entity.get(entity_id, ())
        return [self._facts[fact_id] for fact_id in reversed(ids)]

    def neighbourhood(
        self, entity_id: int, hops: int = 1, max_fanout: int = 50, max_facts: int = 500
    ) -> list[GraphFact]:
        """Return the facts within ``hops`` of ``entity_id``, closest first (BFS order).

        Both directions are walked. From each visited entity at most ``max_fanout`` facts are
        followed, newest first; the walk stops after ``max_facts`` facts. An unknown entity has
        an empty neighbourhood. Raises ValueError for negative ``hops``.
        """
        if hops < 0:
            raise ValueError(f"hops must be >= 0, got {hops}")
        facts, index = self._facts, self._fact_ids_by_entity
        seen_entities = {entity_id}
        seen_facts: set[int] = set()
        found: list[GraphFact] = []
        frontier = [entity_id]
        for _ in range(hops):
            next_frontier = []
            for node in frontier:
                ids = index.get(node)
                if not ids:
                    continue
                for fact_id in islice(reversed(ids), max_fanout):
                    if fact_id in seen_facts:  # an edge between two frontier entities
                        continue
                    seen_facts.add(fact_id)
                    fact = facts[fact_id]
                    found.append(fact)
                    if len(found) >= max_facts:
                        return found
                    other = fact.object_id if fact.subject_id == node else fact.subject_id
                    if other is not None and other not in seen_entities:
                        seen_entities.add(other)
                        next_frontier.append(other)
            frontier = next_frontier
            if not frontier:
                break
        return found


_SLOT = re.compile(r"\[X\]|\[Y\]")


def verbalise(template: str, subject: str, obj: str) -> str:
    """Fill a cloze template: ``[X]`` -> subject, ``[Y]`` -> object.

    ``verbalise("[X]'s capital is [Y] .", "Türkiye", "Ankara") == "Türkiye's capital is Ankara ."``
    Names are inserted verbatim in one pass, so a name containing "[Y]" is not substituted again.
    Raises ValueError when the template lacks either slot.
    """
    if "[X]" not in template or "[Y]" not in template:
        raise ValueError(f"relation template needs both [X] and [Y] slots, got {template!r}")
    return _SLOT.sub(lambda match: subject if match.group() == "[X]" else obj, template)
