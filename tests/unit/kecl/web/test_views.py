"""The web interface's view models: search groups, the graph (as of a date, fan-out cap), ask in
three modes, the runs' series, the checkpoint lineage and the stats."""

from __future__ import annotations

import datetime as dt

from kecl.services import Kecl
from kecl.web.views import MODES, ask_view, graph_view, highlight, lineage, runs_view, search_view, stats_view
from tests.factories import activate_tiny_checkpoint


def entity(k: Kecl, ref: str) -> int:
    eid = k.store.resolve_entity(ref)
    assert eid is not None
    return eid


def test_search_groups_entities_documents_and_passages(web_kecl: Kecl) -> None:
    results = search_view(web_kecl, "croatia")
    assert [e["name"] for e in results.entities] == ["Croatia"]
    assert results.documents == []  # no title says Croatia
    assert len(results.passages) > 0  # hybrid search always ranks something
    thames = search_view(web_kecl, "Thames")
    assert any("Thames" in p.text for p in thames.passages)
    assert search_view(web_kecl, "   ") == search_view(web_kecl, "")


def test_graph_walks_both_directions_and_caps_the_fanout_of_hubs(web_kecl: Kecl) -> None:
    hub = entity(web_kecl, "hub")
    full = graph_view(web_kecl, hub, "Hub City", hops=1, fanout=100)
    labels = {n.label for n in full.nodes}
    assert "Zagreb" in labels  # a predecessor: Zagreb links to the hub
    assert len(full.edges) == 41 and len(full.nodes) == 42
    capped = graph_view(web_kecl, hub, "Hub City", hops=1, fanout=5)
    assert len(capped.edges) == 5 and len(capped.nodes) == 6
    # two hops from Croatia reach the hub through Zagreb, and the hub's spokes up to the cap
    croatia = entity(web_kecl, "croatia")
    two = graph_view(web_kecl, croatia, "Croatia", hops=2, fanout=3)
    by_label = {n.label: n.distance for n in two.nodes}
    assert by_label["Croatia"] == 0 and by_label["Zagreb"] == 1 and by_label["Hub City"] == 2
    elements = two.elements()
    assert {e["data"]["id"] for e in elements if "source" in e["data"]} == {e.id for e in two.edges}


def test_graph_as_of_shows_the_edges_believed_that_day(web_kecl: Kecl) -> None:
    croatia = entity(web_kecl, "croatia")
    now = {e.target_label for e in graph_view(web_kecl, croatia, "Croatia").edges if e.label == "currency"}
    then = {
        e.target_label
        for e in graph_view(web_kecl, croatia, "Croatia", as_of=dt.date(2000, 1, 1)).edges
        if e.label == "currency"
    }
    assert now == {"euro"} and then == {"kuna"}


def test_ask_answers_in_three_modes_with_attention_over_the_evidence(web_kecl: Kecl) -> None:
    view = ask_view(web_kecl, "The currency of Croatia is the [MASK] .", as_of=dt.date(2000, 1, 1))
    assert [m.mode for m in view.answers] == list(MODES)
    closed, concat, tree = view.answers
    assert closed.answer.facts == [] and closed.answer.evidence == []
    assert any(f["object"] == "kuna" for f in concat.answer.facts)  # the as-of date reaches the facts
    for m in view.answers:
        assert len(m.answer.predictions[0]) == 5
        assert m.segments and max(s.weight for s in m.segments) == 1.0
        assert m.answer.snapshot["checkpoint"]
    assert concat.evidence_weights and max(concat.evidence_weights.values()) == 1.0
    assert tree.answer.injected_input != concat.answer.injected_input


def test_highlight_keeps_the_text_and_weights_its_words() -> None:
    parts = highlight("The kuna, of Croatia.", {"kuna": 0.5, "croatia": 1.0})
    assert "".join(p.text for p in parts) == "The kuna, of Croatia."
    assert {p.text: p.weight for p in parts if p.weight} == {"kuna": 0.5, "Croatia": 1.0}


def test_runs_series_follow_the_evaluated_cycles(web_kecl: Kecl) -> None:
    view = runs_view(web_kecl)
    assert [r["id"] for r in view.runs] == sorted(view.x, reverse=True)
    assert view.series["acquisition, closed-book (new)"] == [0.25, 0.75]
    assert view.series["retention, closed-book (unchanged)"] == [0.9, 0.88]
    assert view.series["held-out MLM loss"] == [3.5, 3.2]
    assert "acquisition, closed-book (changed)" not in view.series  # no changed facts were probed
    data = view.plot_data()
    assert len(data["ys"]) == len(data["labels"]) and all(len(y) == len(data["x"]) for y in data["ys"])


def test_lineage_marks_the_active_version_and_its_parent_retired(web_kecl: Kecl) -> None:
    first = web_kecl.store.checkpoints()
    assert first == []  # the tiny checkpoint has a folder but no row
    v1 = lineage(web_kecl)
    assert [c["status"] for c in v1] == ["active"]
    web_kecl.store.set_checkpoint_status(v1[0]["version"], "active")
    second = activate_tiny_checkpoint(web_kecl.settings)
    statuses = {c["version"]: c["status"] for c in lineage(web_kecl)}
    assert statuses == {v1[0]["version"]: "retired", second: "active"}


def test_stats_report_counts_backend_index_drift_and_active_model(web_kecl: Kecl) -> None:
    stats = stats_view(web_kecl)
    assert stats.counts["entities"] == 4 + 41 and stats.database == "sqlite"
    assert stats.index["vectors"] == stats.counts["passages"] and stats.drift == 0
    assert stats.next_run is None  # no scheduler has ever run on this home
    assert stats.active is not None
