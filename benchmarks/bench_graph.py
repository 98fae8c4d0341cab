"""Graph view and entity linker: 2-hop latency at 1M edges, memory per edge, link throughput.

    .venv/bin/python -m benchmarks.bench_graph            # 200k entities, 1M edges, 100k aliases
    .venv/bin/python -m benchmarks.bench_graph --quick    # 20k entities, 100k edges, 10k aliases

Graph: a scale-free entity graph (subjects and objects drawn from independent Zipf-like
popularity, so a few hubs hold tens of thousands of facts, as in Wikidata). Compared side by side
in the same run:
- ``FactGraph.neighbourhood(hops=2)`` with the default cap (50 facts per node, 500 in all) and
  uncapped;
- a plain capped walk over ``G.succ``/``G.pred`` that picks each node's newest facts with
  ``heapq.nlargest`` (what the DESIGN pitfall suggests, without FactGraph's sorted per-entity
  index);
- ``nx.ego_graph(G, n, radius=2, undirected=True)``, the naive call (copies the whole graph per
  call: only a few calls), and the same on an undirected copy made once.
Linker: 100k synthetic aliases (1-3 words, some with diacritics), passages of ~120 words with
about one alias in twelve words; throughput of ``link`` against normalisation alone and against a
hand-rolled n-gram dictionary lookup (which gives no character offsets).
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import logging
import random
import statistics
import time
import tracemalloc
from pathlib import Path

import networkx as nx
import numpy as np

from knowledge import EntityLinker, FactGraph, GraphFact, normalise_alias

log = logging.getLogger(__name__)


# --- graph ------------------------------------------------------------------------------------


def make_facts(n_entities: int, n_edges: int, seed: int = 0, zipf_a: float = 0.9) -> list[GraphFact]:
    """Scale-free facts: P(entity of rank r) ~ r^-zipf_a, separately for subjects and objects."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_entities + 1) ** zipf_a
    weights /= weights.sum()
    subjects = rng.permutation(n_entities)[rng.choice(n_entities, n_edges, p=weights)]
    objects = rng.permutation(n_entities)[rng.choice(n_entities, n_edges, p=weights)]
    relations = [f"P{i}" for i in range(1, 201)]
    relation_idx = rng.integers(0, len(relations), n_edges)
    return [
        GraphFact(i, int(s), relations[r], int(o), None)
        for i, (s, o, r) in enumerate(zip(subjects.tolist(), objects.tolist(), relation_idx.tolist()))
    ]


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1e3 for s in samples_s)
    return {
        "n": len(ms),
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "mean_ms": statistics.fmean(ms),
    }


def time_calls(fn, args_list) -> tuple[dict[str, float], list]:
    times, results = [], []
    for args in args_list:
        t0 = time.perf_counter()
        results.append(fn(*args))
        times.append(time.perf_counter() - t0)
    return percentiles(times), results


def nx_capped_walk(graph: nx.MultiDiGraph, source: int, hops: int, max_fanout: int, max_facts: int) -> list[int]:
    """Baseline: the capped BFS over G.succ/G.pred, newest facts by heapq.nlargest per node."""
    succ, pred = graph._succ, graph._pred
    seen_nodes, seen_facts, found, frontier = {source}, set(), [], [source]
    for _ in range(hops):
        next_frontier = []
        for node in frontier:
            incident = [(k, v) for v, keys in succ[node].items() for k in keys]
            incident += [(k, u) for u, keys in pred[node].items() for k in keys]
            for fact_id, other in heapq.nlargest(max_fanout, incident):
                if fact_id in seen_facts:
                    continue
                seen_facts.add(fact_id)
                found.append(fact_id)
                if len(found) >= max_facts:
                    return found
                if other not in seen_nodes:
                    seen_nodes.add(other)
                    next_frontier.append(other)
        frontier = next_frontier
    return found


def bytes_per_edge_traced(facts: list[GraphFact]) -> dict[str, float]:
    """tracemalloc bytes per edge: FactGraph (incl. its GraphFact objects) vs a bare MultiDiGraph."""
    tuples = [(f.fact_id, f.subject_id, f.relation_id, f.object_id) for f in facts]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    graph = FactGraph()
    graph.add_facts(GraphFact(i, s, r, o, None) for i, s, r, o in tuples)
    factgraph = tracemalloc.get_traced_memory()[0] - before
    del graph
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    bare = nx.MultiDiGraph()
    bare.add_edges_from((s, o, i, {"relation": r}) for i, s, r, o in tuples)
    bare_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {
        "edges": len(facts),
        "factgraph_bytes_per_edge": factgraph / len(facts),
        "bare_multidigraph_bytes_per_edge": bare_bytes / len(facts),
    }


def bench_graph(n_entities: int, n_edges: int, n_queries: int, n_uncapped: int, n_ego: int, seed: int) -> dict:
    rng = random.Random(seed)
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    facts = make_facts(n_entities, n_edges, seed)
    t_make = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = FactGraph()
    graph.add_facts(facts)
    t_build = time.perf_counter() - t0
    gc.collect()
    rss_delta = rss_bytes() - rss0  # facts list is kept by the graph: this is the whole view
    G = graph.graph
    degrees = sorted((d for _, d in G.degree()), reverse=True)
    out: dict = {
        "entities": G.number_of_nodes(),
        "edges": G.number_of_edges(),
        "max_degree": degrees[0],
        "median_degree": statistics.median(degrees),
        "make_facts_s": t_make,
        "build_add_facts_s": t_build,
        "build_edges_per_s": n_edges / t_build,
        "rss_bytes_per_edge": rss_delta / n_edges,
    }
    log.info("built %d edges in %.1fs", n_edges, t_build)

    nodes = list(G.nodes)
    uniform = [rng.choice(nodes) for _ in range(n_queries)]
    # degree-weighted sources: endpoints of random facts (hubs come up as often as they do in text)
    weighted = [rng.choice((f.subject_id, f.object_id)) for f in rng.choices(facts, k=n_queries)]

    latency: dict[str, dict] = {}
    for name, sources in (("uniform", uniform), ("degree_weighted", weighted)):
        stats, results = time_calls(lambda n: graph.neighbourhood(n, hops=2), [(n,) for n in sources])
        stats["mean_facts"] = statistics.fmean(len(r) for r in results)
        latency[f"factgraph_capped_{name}"] = stats
        stats, results = time_calls(
            lambda n: graph.neighbourhood(n, hops=2, max_fanout=10**9, max_facts=10**9),
            [(n,) for n in sources[:n_uncapped]],
        )
        stats["mean_facts"] = statistics.fmean(len(r) for r in results)
        latency[f"factgraph_uncapped_{name}"] = stats
        stats, results = time_calls(lambda n: nx_capped_walk(G, n, 2, 50, 500), [(n,) for n in sources[:n_uncapped]])
        stats["mean_facts"] = statistics.fmean(len(r) for r in results)
        latency[f"nx_succ_pred_nlargest_capped_{name}"] = stats
        log.info("latency %s done", name)

    stats, results = time_calls(
        lambda n: nx.ego_graph(G, n, radius=2, undirected=True), [(n,) for n in uniform[:n_ego]]
    )
    stats["mean_facts"] = statistics.fmean(r.number_of_edges() for r in results)
    latency["nx_ego_graph_undirected_uniform"] = stats
    del results
    t0 = time.perf_counter()
    undirected = G.to_undirected()
    out["to_undirected_once_s"] = time.perf_counter() - t0
    stats, results = time_calls(lambda n: nx.ego_graph(undirected, n, radius=2), [(n,) for n in uniform[: n_ego * 10]])
    stats["mean_facts"] = statistics.fmean(r.number_of_edges() for r in results)
    latency["nx_ego_graph_on_undirected_copy_uniform"] = stats
    undirected = results = None  # freed before the next measurement (the lambdas above close over them)
    out["latency_2hop"] = latency

    # incremental upkeep: one fact at a time, as the store feeds it
    new = make_facts(n_entities, 10_000, seed + 1)
    new = [GraphFact(n_edges + f.fact_id, f.subject_id, f.relation_id, f.object_id, None) for f in new]
    t0 = time.perf_counter()
    for f in new:
        graph.add_fact(f)
    out["add_fact_us"] = (time.perf_counter() - t0) / len(new) * 1e6
    doomed = rng.sample(range(n_edges), 10_000)
    t0 = time.perf_counter()
    for fact_id in doomed:
        graph.remove_fact(fact_id)
    out["remove_fact_us"] = (time.perf_counter() - t0) / len(doomed) * 1e6
    graph = G = facts = None  # freed before tracing memory (the lambdas above close over them)
    gc.collect()
    # exact bytes on a tenth of the graph (tracemalloc slows building several-fold)
    out["traced_memory"] = bytes_per_edge_traced(make_facts(n_entities // 10 or 1, n_edges // 10, seed))
    return out


# --- linker -----------------------------------------------------------------------------------

_SYLLABLES = [c + v for c in "bcdfghklmnprstvz" for v in ["a", "e", "i", "o", "u", "é", "ü", "ay"]]


def make_names(rng: random.Random, n: int) -> list[str]:
    names: set[str] = set()
    while len(names) < n:
        words = [
            ("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))).capitalize()
            for _ in range(rng.choice((1, 1, 2, 2, 2, 3)))
        ]
        names.add(" ".join(words))
    return sorted(names)


def ngram_lookup(gazetteer: dict[str, int], max_words: int, text: str) -> list[int]:
    """Baseline: hand-rolled longest n-gram dictionary lookup on normalised words (no offsets)."""
    words = normalise_alias(text).split(" ")
    found, i = [], 0
    while i < len(words):
        for n in range(min(max_words, len(words) - i), 0, -1):
            entity = gazetteer.get(" ".join(words[i : i + n]))
            if entity is not None:
                found.append(entity)
                i += n
                break
        else:
            i += 1
    return found


def bench_linker(n_aliases: int, n_passages: int, seed: int) -> dict:
    rng = random.Random(seed)
    names = make_names(rng, n_aliases)
    fillers = [
        "".join(rng.choice("qwxjkl") + rng.choice("aeiouy") for _ in range(rng.randint(1, 4))) for _ in range(2000)
    ] + ["the", "of", "and", "in", "a", "was", "is", "by"]
    passages = []
    for _ in range(n_passages):
        tokens = []
        while len(tokens) < 120:
            tokens.append(rng.choice(names) if rng.random() < 0.08 else rng.choice(fillers))
            if rng.random() < 0.1:
                tokens[-1] += rng.choice([",", ".", ";", "'s"])
        passages.append(" ".join(tokens))
    n_chars = sum(len(p) for p in passages)

    linker = EntityLinker()
    t0 = time.perf_counter()
    for i, name in enumerate(names):
        linker.add_alias(name, i, prior=rng.random())
    t_add = time.perf_counter() - t0
    t0 = time.perf_counter()
    linker.link("warm up")  # builds the automaton
    t_automaton = time.perf_counter() - t0

    t0 = time.perf_counter()
    n_mentions = sum(len(linker.link(p)) for p in passages)
    t_link = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in passages:
        normalise_alias(p)
    t_norm = time.perf_counter() - t0
    gazetteer = {normalise_alias(name): i for i, name in enumerate(names)}
    t0 = time.perf_counter()
    n_baseline = sum(len(ngram_lookup(gazetteer, 3, p)) for p in passages)
    t_ngram = time.perf_counter() - t0
    return {
        "aliases": len(linker),
        "passages": n_passages,
        "chars": n_chars,
        "add_alias_s": t_add,
        "automaton_build_s": t_automaton,
        "link_chars_per_s": n_chars / t_link,
        "link_passages_per_s": n_passages / t_link,
        "mentions_per_passage": n_mentions / n_passages,
        "normalise_only_chars_per_s": n_chars / t_norm,
        "ngram_dict_baseline_chars_per_s": n_chars / t_ngram,
        "ngram_dict_baseline_mentions_per_passage": n_baseline / n_passages,
    }


# --- report -----------------------------------------------------------------------------------


def print_report(result: dict) -> None:
    g = result["graph"]
    print(
        f"\nGraph: {g['entities']:,} entities, {g['edges']:,} edges "
        f"(max degree {g['max_degree']:,}, median {g['median_degree']})"
    )
    print(f"  build (add_facts): {g['build_add_facts_s']:.1f} s  ({g['build_edges_per_s']:,.0f} edges/s)")
    print(
        f"  memory: RSS {g['rss_bytes_per_edge']:.0f} B/edge; traced "
        f"{g['traced_memory']['factgraph_bytes_per_edge']:.0f} B/edge "
        f"(bare MultiDiGraph {g['traced_memory']['bare_multidigraph_bytes_per_edge']:.0f})"
    )
    print(f"  add_fact {g['add_fact_us']:.1f} us, remove_fact {g['remove_fact_us']:.1f} us")
    print(f"\n  {'2-hop neighbourhood':48s} {'n':>5s} {'p50 ms':>9s} {'p99 ms':>9s} {'facts':>9s}")
    for name, s in g["latency_2hop"].items():
        print(f"  {name:48s} {s['n']:5d} {s['p50_ms']:9.3f} {s['p99_ms']:9.3f} {s['mean_facts']:9.0f}")
    ego = g["latency_2hop"]["nx_ego_graph_undirected_uniform"]["p50_ms"]
    ours = g["latency_2hop"]["factgraph_capped_uniform"]["p50_ms"]
    print(f"  ego_graph(undirected=True) p50 / FactGraph capped p50 = {ego / ours:,.0f}x")
    k = result["linker"]
    print(f"\nLinker: {k['aliases']:,} aliases, {k['passages']} passages, {k['chars']:,} chars")
    print(f"  add_alias {k['add_alias_s']:.2f} s, automaton build {k['automaton_build_s']:.2f} s")
    print(
        f"  link: {k['link_chars_per_s'] / 1e6:.2f} M chars/s, {k['link_passages_per_s']:,.0f} "
        f"passages/s, {k['mentions_per_passage']:.1f} mentions/passage"
    )
    print(
        f"  normalise only {k['normalise_only_chars_per_s'] / 1e6:.2f} M chars/s; n-gram dict "
        f"baseline {k['ngram_dict_baseline_chars_per_s'] / 1e6:.2f} M chars/s "
        f"({k['ngram_dict_baseline_mentions_per_passage']:.1f} mentions/passage, no offsets)"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small configuration (seconds)")
    parser.add_argument("--entities", type=int, default=200_000)
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--aliases", type=int, default=100_000)
    parser.add_argument("--passages", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-out/graph.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.quick:
        args.entities, args.edges, args.queries = 20_000, 100_000, 300
        args.aliases, args.passages = 10_000, 100
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "graph": bench_graph(
            args.entities, args.edges, args.queries, n_uncapped=max(50, args.queries // 10), n_ego=3, seed=args.seed
        ),
        "linker": bench_linker(args.aliases, args.passages, args.seed),
    }
    print_report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
