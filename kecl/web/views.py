"""What each page of the web interface shows, as typed values built from the running :class:`Kecl`.

The pages only lay these out; everything here is plain data, so it is tested without a browser.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from encoder import active_version, list_checkpoints
from kecl.pipeline import Answer, QueryOptions
from kecl.search import SearchHit
from kecl.services import Kecl
from knowledge import DocumentHit, FactView
from updater import next_scheduled_run

MODES = ("closed-book", "concat", "tree")


@dataclass(frozen=True)
class SearchResults:
    """One query over entities (names and aliases), documents (full-text) and passages (hybrid search)."""

    query: str
    entities: list[dict[str, Any]]
    documents: list[DocumentHit]
    passages: list[SearchHit]


def search_view(kecl: Kecl, query: str, limit: int = 10) -> SearchResults:
    """Entities, documents and passages matching ``query``, up to ``limit`` of each; empty for a blank query."""
    q = query.strip()
    if not q:
        return SearchResults(q, [], [], [])
    return SearchResults(
        q, kecl.store.find_entities(q, limit), kecl.store.find_documents(q, limit), kecl.search(q, limit)
    )


# ----------------------------------------------------------------------------- the neighbourhood graph


@dataclass(frozen=True)
class GraphNode:
    id: str  # "e<entity id>" or "l<fact id>" for a literal object
    label: str
    entity_id: int | None  # None for a literal
    distance: int  # hops from the centre (a literal: its subject's distance + 1)


@dataclass(frozen=True)
class GraphEdge:
    id: str  # "f<fact id>"
    source: str
    target: str
    label: str  # the relation
    fact_id: int
    source_label: str
    target_label: str


@dataclass(frozen=True)
class GraphView:
    """The k-hop neighbourhood of an entity as of a date, at most ``fanout`` facts per entity."""

    centre: int
    name: str
    hops: int
    as_of: dt.date | None
    fanout: int
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    capped: bool  # the walk stopped at ``max_facts``

    def elements(self) -> list[dict[str, Any]]:
        """The nodes and edges in Cytoscape.js's element format."""
        nodes = [
            {"data": {"id": n.id, "label": n.label, "entity": n.entity_id, "distance": n.distance}} for n in self.nodes
        ]
        edges = [{"data": {"id": e.id, "source": e.source, "target": e.target, "label": e.label}} for e in self.edges]
        return nodes + edges


def graph_view(
    kecl: Kecl,
    entity_id: int,
    name: str,
    hops: int = 1,
    as_of: dt.date | None = None,
    fanout: int = 25,
    max_facts: int = 300,
) -> GraphView:
    """The neighbourhood of ``entity_id``, walked in SQL over successors and predecessors with a
    per-entity cap (never the whole graph, and no in-memory graph of every fact for one page)."""
    facts = kecl.store.walk_neighbourhood(entity_id, hops=hops, as_of=as_of, fanout=fanout, max_facts=max_facts)
    return graph_from_facts(entity_id, name, hops, as_of, fanout, facts, capped=len(facts) >= max_facts)


def graph_from_facts(
    centre: int, name: str, hops: int, as_of: dt.date | None, fanout: int, facts: list[FactView], capped: bool = False
) -> GraphView:
    """Nodes and edges of ``facts`` (closest first), each node at its distance from ``centre``."""
    distance: dict[int, int] = {centre: 0}
    labels: dict[int, str] = {centre: name}
    nodes: list[GraphNode] = []
    edges: list[GraphEdge] = []
    for f in facts:
        near = f.subject_id if f.subject_id in distance else (f.object_id or f.subject_id)
        d = distance.get(near, hops)
        labels.setdefault(f.subject_id, f.subject)
        distance.setdefault(f.subject_id, d + 1)
        if f.object_id is not None:
            labels.setdefault(f.object_id, f.object)
            distance.setdefault(f.object_id, d + 1)
            target = f"e{f.object_id}"
        else:
            target = f"l{f.id}"
            nodes.append(GraphNode(target, f.object, None, distance[f.subject_id] + 1))
        edges.append(GraphEdge(f"f{f.id}", f"e{f.subject_id}", target, f.relation, f.id, f.subject, f.object))
    nodes = [GraphNode(f"e{eid}", labels[eid], eid, d) for eid, d in distance.items()] + nodes
    return GraphView(centre, name, hops, as_of, fanout, nodes, edges, capped)


# ----------------------------------------------------------------------------- ask


@dataclass(frozen=True)
class Highlight:
    """A piece of text with the share of the [MASK]'s attention rollout that fell on it (0…1)."""

    text: str
    weight: float


@dataclass(frozen=True)
class ModeAnswer:
    mode: str
    answer: Answer
    segments: list[Highlight]  # the encoder's input, segment by segment, weighted by attention
    evidence_weights: dict[str, float]  # word → weight, for highlighting the evidence tokens


@dataclass(frozen=True)
class AskView:
    text: str
    as_of: dt.date | None
    answers: list[ModeAnswer] = field(default_factory=list)


_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def ask_view(kecl: Kecl, text: str, as_of: dt.date | None = None, top_k: int = 5) -> AskView:
    """``text`` answered closed-book, with concatenated evidence and with tree injection, each with
    the attention rollout from its [MASK]."""
    answered = kecl.answer_modes(text, MODES, QueryOptions(as_of=as_of, top_k=top_k, explain=True))
    return AskView(text, as_of, [mode_answer(mode, answered[mode]) for mode in MODES])


def mode_answer(mode: str, answer: Answer) -> ModeAnswer:
    """The answer with its attention shares normalised to the largest segment (1.0)."""
    explanation = answer.explanation or []
    top = max((s["weight"] for s in explanation), default=0.0) or 1.0
    segments = [Highlight(s["text"], round(s["weight"] / top, 3)) for s in explanation]
    raw: dict[str, float] = {}
    for s in explanation:
        for t in s["top_tokens"]:
            word = t["token"].removeprefix("##").lower()
            if word.isalnum():  # not [MASK], [SEP] or punctuation: they are not evidence words
                raw[word] = max(raw.get(word, 0.0), t["weight"])
    token_top = max(raw.values(), default=0.0) or 1.0
    words = {w: round(v / token_top, 3) for w, v in raw.items()}
    return ModeAnswer(mode, answer, segments, words)


def highlight(text: str, weights: dict[str, float]) -> list[Highlight]:
    """``text`` split into words and spaces, each word weighted by ``weights`` (case-insensitive)."""
    out: list[Highlight] = []
    pos = 0
    for m in _WORD.finditer(text):
        if m.start() > pos:
            out.append(Highlight(text[pos : m.start()], 0.0))
        out.append(Highlight(m.group(), weights.get(m.group().lower(), 0.0)))
        pos = m.end()
    if pos < len(text):
        out.append(Highlight(text[pos:], 0.0))
    return out


# ----------------------------------------------------------------------------- runs and models

# (label, where in a run's candidate metrics: mode, fact group); held-out loss is added separately
SERIES = [
    ("acquisition, closed-book (new)", "closed-book", "new"),
    ("acquisition, closed-book (changed)", "closed-book", "changed"),
    ("acquisition, augmented (new)", "concat", "new"),
    ("acquisition, augmented (changed)", "concat", "changed"),
    ("retention, closed-book (unchanged)", "closed-book", "unchanged"),
]


@dataclass(frozen=True)
class RunsView:
    runs: list[dict[str, Any]]  # newest first
    x: list[int]  # run ids with a candidate evaluated, oldest first
    series: dict[str, list[float | None]]  # label → one value per x
    checkpoints: list[dict[str, Any]]  # version, parent, status, created, metrics; oldest first
    active: str | None

    def plot_data(self) -> dict[str, Any]:
        """What the page's uPlot chart draws: x, then one list per series, with their labels."""
        return {"x": self.x, "labels": list(self.series), "ys": list(self.series.values())}


def runs_view(kecl: Kecl, limit: int = 50) -> RunsView:
    """The last ``limit`` update cycles, their candidates' metrics as series, and the checkpoint lineage."""
    runs = kecl.store.runs(limit=limit)
    evaluated = sorted((r for r in runs if (r.get("metrics") or {}).get("candidate")), key=lambda r: r["id"])
    series: dict[str, list[float | None]] = {}
    for label, mode, group in SERIES:
        values = [_p_at_1(r["metrics"]["candidate"], mode, group) for r in evaluated]
        if any(v is not None for v in values):
            series[label] = values
    losses = [r["metrics"]["candidate"].get("heldout_loss") for r in evaluated]
    if any(v is not None for v in losses):
        series["held-out MLM loss"] = losses
    return RunsView(
        runs, [r["id"] for r in evaluated], series, lineage(kecl), active_version(kecl.settings.checkpoints_dir)
    )


def _p_at_1(metrics: dict[str, Any], mode: str, group: str) -> float | None:
    m = (metrics.get("modes") or {}).get(mode, {}).get(group)
    return m.get("p_at_1") if m and m.get("n") else None


def lineage(kecl: Kecl) -> list[dict[str, Any]]:
    """Every checkpoint version on disk or in SQL, oldest first, with its status and metrics
    (SQL's status wins; the version named active on disk is shown active)."""
    active = active_version(kecl.settings.checkpoints_dir)
    rows = {c["version"]: c for c in kecl.store.checkpoints()}
    out: dict[str, dict[str, Any]] = {}
    for m in list_checkpoints(kecl.settings.checkpoints_dir):
        out[m["version"]] = {
            "version": m["version"],
            "parent": m.get("parent"),
            "status": "candidate",
            "created": m.get("created", ""),
            "metrics": m.get("metrics") or {},
        }
    for v, c in rows.items():
        out.setdefault(v, {"version": v, "parent": c["parent"], "created": c["created_at"], "metrics": {}})
        out[v].update(status=c["status"], metrics=c["metrics"] or out[v]["metrics"])
    for v, c in out.items():
        if v == active:
            c["status"] = "active"
        elif c["status"] == "active":
            c["status"] = "retired"  # SQL lags a manual activation of another version
    return sorted(out.values(), key=lambda c: (str(c["created"]), c["version"]))


# ----------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class StatsView:
    counts: dict[str, int]
    database: str
    index: dict[str, Any]  # kind, vectors, embedder, generation; empty before the index is loaded
    drift: int | None  # vectors in the index minus passages in SQL (0 when in step)
    next_run: dt.datetime | None
    active: str | None
    snapshot: dict[str, Any]


def stats_view(kecl: Kecl) -> StatsView:
    """Table counts, the database backend, the index and its drift against SQL, the next scheduled
    cycle and the active checkpoint."""
    counts = kecl.store.stats()
    snapshot = kecl.snapshot()
    index = snapshot.get("index") or {}
    drift = index["vectors"] - counts["passages"] if "vectors" in index else None
    return StatsView(
        counts,
        kecl.store.dialect,
        index,
        drift,
        next_scheduled_run(kecl.store.engine),
        active_version(kecl.settings.checkpoints_dir),
        snapshot,
    )
