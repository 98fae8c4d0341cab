"""Evidence recall of dense, lexical, entity and fused (RRF) retrieval on LAMA.

Passages: Google-RE Wikipedia snippets and T-REx evidence sentences ([MASK] filled with the
object's surface form), ingested into a temporary SQLite store (FTS5 for the lexical channel);
subjects are entities (name + aliases) so the store's linker writes mentions. Queries: the LAMA
templates with [X] = the subject and [Y] = [MASK] ("Dante was born in [MASK] ."). A query is a
hit at k when any passage of its own evidence is in the top k.

    .venv/bin/python -m benchmarks.bench_hybrid --lama "$KECL_LAMA"
    .venv/bin/python -m benchmarks.bench_hybrid --lama "$KECL_LAMA" --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

log = logging.getLogger("bench_hybrid")

GOOGLE_RE = {
    "place_of_birth": "[X] was born in [Y] .",
    "date_of_birth": "[X] (born [Y]).",
    "place_of_death": "[X] died in [Y] .",
}


def load_lama(lama: Path, google_limits: dict[str, int | None], trex_per_relation: int, trex_evidences: int):
    """Facts as dicts: dataset, query, subject (id, name, aliases), evidence texts."""
    facts = []
    for name, template in GOOGLE_RE.items():
        with open(lama / "Google_RE" / f"{name}_test.jsonl") as f:
            for i, line in enumerate(f):
                if google_limits.get(name) is not None and i >= google_limits[name]:
                    break
                d = json.loads(line)
                facts.append(
                    {
                        "dataset": f"Google_RE/{name}",
                        "query": _query(template, d["sub_label"]),
                        "subject": (d["sub"], d["sub_label"], d.get("sub_aliases") or []),
                        "evidence": [e["snippet"] for e in d["evidences"]],
                    }
                )
    templates = {}
    with open(lama / "relations.jsonl") as f:
        for line in f:
            r = json.loads(line)
            templates[r["relation"]] = r["template"]
    for path in sorted((lama / "TREx").glob("P*.jsonl")):
        with open(path) as f:
            for i, line in enumerate(f):
                if i >= trex_per_relation:
                    break
                d = json.loads(line)
                texts = list(
                    dict.fromkeys(e["masked_sentence"].replace("[MASK]", e["obj_surface"]) for e in d["evidences"])
                )[:trex_evidences]
                surfaces = sorted({e["sub_surface"] for e in d["evidences"]} - {d["sub_label"]})
                facts.append(
                    {
                        "dataset": f"TREx/{d['predicate_id']}",
                        "query": _query(templates[d["predicate_id"]], d["sub_label"]),
                        "subject": (d["sub_uri"], d["sub_label"], surfaces),
                        "evidence": texts,
                    }
                )
    return facts


def _query(template: str, subject: str) -> str:
    return template.replace("[X]", subject).replace("[Y]", "[MASK]")


def build_store(facts, folder: Path, count_tokens):
    from knowledge import DocumentRecord, EntityRecord, KnowledgeStore

    store = KnowledgeStore.open(f"sqlite:///{folder / 'bench.db'}", count_tokens=count_tokens)
    entities = {}
    for fact in facts:
        key, name, aliases = fact["subject"]
        entities.setdefault(key, EntityRecord(id=key, name=name, aliases=[a for a in aliases if len(a) > 2]))
    store.upsert_entities(list(entities.values()))
    keys: dict[str, str] = {}  # evidence text -> document key (the store deduplicates by content)
    docs = []
    for fact in facts:
        for text in fact["evidence"]:
            norm = text.strip()
            if norm not in keys:
                keys[norm] = f"ev{len(keys)}"
                docs.append(DocumentRecord(text=norm, external_id=keys[norm], source=fact["dataset"].split("/")[0]))
    for i in range(0, len(docs), 2000):
        store.add_documents(docs[i : i + 2000])
    info = store.passage_info(sorted(store.passage_ids()))
    passages_of = defaultdict(set)
    for pid, p in info.items():
        passages_of[p.document_key].add(pid)
    for fact in facts:
        fact["gold"] = set().union(*(passages_of[keys[t.strip()]] for t in fact["evidence"]))
    return store


def recall(ranked: list[list[int]], facts, k: int) -> float:
    return float(np.mean([bool(set(r[:k]) & f["gold"]) for r, f in zip(ranked, facts)])) if facts else float("nan")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="hybrid retrieval evidence recall on LAMA")
    parser.add_argument("--lama", default=os.environ.get("KECL_LAMA", ""), help="the LAMA folder (default: $KECL_LAMA)")
    parser.add_argument("--trex-per-relation", type=int, default=100)
    parser.add_argument("--trex-evidences", type=int, default=3, help="evidence sentences kept per T-REx fact")
    parser.add_argument("--google-max", type=int, default=500, help="facts from date_of_birth / place_of_death each")
    parser.add_argument("--depth", type=int, default=50, help="candidates per channel before fusion")
    parser.add_argument("--embedder", default=None, help="sentence-transformers id/path (default: packaged MiniLM)")
    parser.add_argument("--quick", action="store_true", help="300 place_of_birth facts, 20 T-REx facts a relation")
    parser.add_argument("--out", default="bench-out/hybrid.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from kecl.home import resolve_model_path, token_counter
    from kecl.search import channel_rankings
    from kecl.settings import DEFAULT_MODEL, RetrievalSettings
    from retrieval import Embedder, IndexHandle, build_from_passages, reciprocal_rank_fusion

    limits = {"place_of_birth": None, "date_of_birth": args.google_max, "place_of_death": args.google_max}
    if args.quick:
        limits = {"place_of_birth": 300, "date_of_birth": 50, "place_of_death": 50}
        args.trex_per_relation = 20
    facts = load_lama(Path(args.lama), limits, args.trex_per_relation, args.trex_evidences)
    name = args.embedder or DEFAULT_MODEL
    embedder = Embedder(resolve_model_path(name), device="cpu", name=name)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store = build_store(facts, Path(tmp), token_counter(embedder.name))
        stats = store.stats()
        log.info("store: %s in %.1fs", stats, time.perf_counter() - t)
        t = time.perf_counter()
        index = build_from_passages(embedder, lambda: store.iter_passages(batch_size=512), kind="flat")
        embed_s = time.perf_counter() - t
        log.info("embedded %d passages in %.1fs (%.0f/s)", len(index), embed_s, len(index) / embed_s)
        handle = IndexHandle(index, embedder)
        t = time.perf_counter()
        query_vecs = embedder.encode([f["query"] for f in facts])
        lists = []
        for fact, qv in zip(facts, query_vecs):
            # the query vector is computed once in a batch; the other channels per query
            per = channel_rankings(
                fact["query"], args.depth, store=store, index_handle=None, channels=("lexical", "entity")
            )
            _, ids = handle.search(qv[None, :], args.depth)
            per["dense"] = [(int(i), 0.0) for i in ids[0] if i >= 0]
            lists.append({c: [p for p, _ in v] for c, v in per.items()})
        search_s = time.perf_counter() - t
        store.close()

    settings = RetrievalSettings()
    variants = {
        "dense": {"dense": 1.0, "lexical": 0, "entity": 0},
        "lexical": {"dense": 0, "lexical": 1.0, "entity": 0},
        "entity": {"dense": 0, "lexical": 0, "entity": 1.0},
        "dense+lexical": {"dense": 1.0, "lexical": 1.0, "entity": 0},
        f"fused (settings {settings.dense_weight}/{settings.lexical_weight}/{settings.entity_weight})": {
            "dense": settings.dense_weight,
            "lexical": settings.lexical_weight,
            "entity": settings.entity_weight,
        },
        "fused 1/1/1": {"dense": 1.0, "lexical": 1.0, "entity": 1.0},
    }
    by_dataset = defaultdict(list)
    for i, f in enumerate(facts):
        by_dataset[f["dataset"].split("/")[0] if f["dataset"].startswith("TREx") else f["dataset"]].append(i)
    by_dataset["all"] = list(range(len(facts)))
    rows = []
    for name, w in variants.items():
        ranked = [[p for p, _ in reciprocal_rank_fusion(lst, w, rrf_k=settings.rrf_k, k=args.depth)] for lst in lists]
        for dataset, idx in by_dataset.items():
            sub_r, sub_f = [ranked[i] for i in idx], [facts[i] for i in idx]
            rows.append(
                {
                    "method": name,
                    "dataset": dataset,
                    "queries": len(idx),
                    "recall@1": recall(sub_r, sub_f, 1),
                    "recall@4": recall(sub_r, sub_f, 4),
                    "recall@10": recall(sub_r, sub_f, 10),
                }
            )
    print(f"{'method':<28} {'dataset':<28} {'queries':>7} {'R@1':>6} {'R@4':>6} {'R@10':>6}")
    for r in rows:
        print(
            f"{r['method']:<28} {r['dataset']:<28} {r['queries']:>7} {r['recall@1']:>6.3f} {r['recall@4']:>6.3f} {r['recall@10']:>6.3f}"
        )
    print(
        f"\n{stats['passages'] if 'passages' in stats else len(index)} passages, {len(facts)} queries; embedding "
        f"{len(index) / embed_s:.0f} passages/s; retrieval (3 channels, per query, SQLite) {len(facts) / search_s:.0f} queries/s"
    )
    result = {
        "rows": rows,
        "store": stats,
        "passages": len(index),
        "queries": len(facts),
        "embed_passages_per_s": len(index) / embed_s,
        "queries_per_s": len(facts) / search_s,
        "embedder": embedder.version,
        "args": vars(args),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
