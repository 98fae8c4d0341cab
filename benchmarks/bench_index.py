"""Benchmark the passage index kinds: recall@10 against exact search, queries/s (batched and one
query at a time), add throughput, build time and bytes per vector, on clustered synthetic 384-d
vectors (default 1M) and on real MiniLM embeddings of LAMA evidence sentences; plus embedding
throughput (passages/s) on this CPU.

    .venv/bin/python -m benchmarks.bench_index                      # 1M vectors (minutes)
    .venv/bin/python -m benchmarks.bench_index --quick              # 50k vectors, small real set

Synthetic data: a Gaussian mixture (1,000 clusters) whose within-cluster spread lives in a
48-d random subspace plus a little isotropic noise, normalised to unit length. Real sentence
embeddings have a low intrinsic dimension; isotropic 384-d noise would not (every point nearly
equidistant), and would say nothing about real retrieval.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from retrieval import IndexConfig, PassageIndex

log = logging.getLogger("bench_index")


def clustered_vectors(
    n: int, dim: int, seed: int, clusters: int = 1000, latent: int = 48, chunk: int = 100_000
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    basis = rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centers[rng.integers(0, clusters, m)]
        x += 0.9 * rng.standard_normal((m, latent)).astype(np.float32) @ basis
        x += 0.15 * rng.standard_normal((m, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + m] = x
    return out


def recall_at(got: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(g[:k]) & set(t[:k])) / k for g, t in zip(got, truth)]))


def timed_search(index: PassageIndex, queries: np.ndarray, k: int, single: int) -> dict:
    t = time.perf_counter()
    _, ids = index.search(queries, k)
    batch_s = time.perf_counter() - t
    t = time.perf_counter()
    for q in queries[:single]:
        index.search(q[None, :], k)
    single_s = time.perf_counter() - t
    return {"ids": ids, "qps_batch": len(queries) / batch_s, "qps_single": single / single_s}


def index_bytes(index: PassageIndex) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "i.faiss")
        state = index.state()
        faiss.write_index(state.faiss_index, path)
        extras = sum(a.nbytes for a in state.extras.values())
        return os.path.getsize(path) + extras


def build(
    kind: str, ids: np.ndarray, vectors: np.ndarray, config: IndexConfig, batch: int
) -> tuple[PassageIndex, float]:
    index = PassageIndex(kind, vectors.shape[1], config)
    t = time.perf_counter()
    for start in range(0, len(ids), batch):
        index.add(ids[start : start + batch], vectors[start : start + batch])
    return index, time.perf_counter() - t


def bench_kinds(vectors: np.ndarray, queries: np.ndarray, args, label: str) -> list[dict]:
    n = len(vectors)
    ids = np.arange(n, dtype=np.int64) * 3 + 11  # passage ids are not positions
    rows = []
    flat, add_s = build("flat", ids, vectors, IndexConfig(), args.add_batch)
    exact = timed_search(flat, queries, 10, args.single)
    truth = exact["ids"]
    rows.append(
        {
            "data": label,
            "n": n,
            "kind": "flat (exact)",
            "params": "",
            "recall@10": 1.0,
            "qps_batch": exact["qps_batch"],
            "qps_single": exact["qps_single"],
            "add_per_s": n / add_s,
            "build_s": add_s,
            "bytes_per_vector": index_bytes(flat) / n,
        }
    )
    exact_qps = exact["qps_batch"]
    del flat
    log.info("%s flat: %.0f q/s batch", label, exact_qps)

    for m in args.hnsw_m:
        cfg = IndexConfig(hnsw_m=m, hnsw_ef_construction=args.ef_construction)
        hnsw, add_s = build("hnsw", ids, vectors, cfg, args.add_batch)
        size = index_bytes(hnsw) / n
        log.info("%s hnsw M=%d built in %.1fs", label, m, add_s)
        for ef in args.ef_search:
            hnsw.config.hnsw_ef_search = ef
            res = timed_search(hnsw, queries, 10, args.single)
            rows.append(
                {
                    "data": label,
                    "n": n,
                    "kind": "hnsw",
                    "params": f"M={m} efC={args.ef_construction} efS={ef}",
                    "recall@10": recall_at(res["ids"], truth),
                    "qps_batch": res["qps_batch"],
                    "qps_single": res["qps_single"],
                    "add_per_s": n / add_s,
                    "build_s": add_s,
                    "bytes_per_vector": size,
                    "speedup_vs_exact": res["qps_batch"] / exact_qps,
                }
            )
            log.info(
                "  efS=%d recall=%.3f %.0f q/s (%.1fx exact)",
                ef,
                rows[-1]["recall@10"],
                res["qps_batch"],
                rows[-1]["speedup_vs_exact"],
            )
        del hnsw

    if not args.skip_ivfpq and n >= 20_000:
        nlist = args.nlist or max(16, int(np.sqrt(n)))
        cfg = IndexConfig(
            ivf_nlist=nlist,
            ivf_train_min=min(n, args.ivf_train),
            ivf_train_sample=args.ivf_train,
            pq_m=48 if vectors.shape[1] % 48 == 0 else None,
        )
        ivf, add_s = build("ivfpq", ids, vectors, cfg, args.add_batch)
        size = index_bytes(ivf) / n
        for nprobe in args.nprobe:
            ivf.config.ivf_nprobe = nprobe
            res = timed_search(ivf, queries, 10, args.single)
            rows.append(
                {
                    "data": label,
                    "n": n,
                    "kind": "ivfpq",
                    "params": f"nlist={nlist} m=48x8b nprobe={nprobe}",
                    "recall@10": recall_at(res["ids"], truth),
                    "qps_batch": res["qps_batch"],
                    "qps_single": res["qps_single"],
                    "add_per_s": n / add_s,
                    "build_s": add_s,
                    "bytes_per_vector": size,
                    "speedup_vs_exact": res["qps_batch"] / exact_qps,
                }
            )
            log.info("  ivfpq nprobe=%d recall=%.3f %.0f q/s", nprobe, rows[-1]["recall@10"], res["qps_batch"])
    return rows


def lama_sentences(lama: Path, limit: int) -> tuple[list[str], list[str]]:
    """Evidence sentences (object filled in) and template queries from LAMA T-REx."""
    templates = {}
    with open(lama / "relations.jsonl") as f:
        for line in f:
            rel = json.loads(line)
            templates[rel["relation"]] = rel["template"]
    passages, queries, seen = [], [], set()
    files = sorted((lama / "TREx").glob("P*.jsonl"))
    per_file = limit // len(files) + 1
    for path in files:
        taken = 0
        with open(path) as f:
            for line in f:
                fact = json.loads(line)
                for ev in fact["evidences"][:1]:
                    text = ev["masked_sentence"].replace("[MASK]", ev["obj_surface"])
                    if text in seen:
                        continue
                    seen.add(text)
                    passages.append(text)
                    queries.append(
                        templates[fact["predicate_id"]].replace("[X]", fact["sub_label"]).replace("[Y]", "[MASK]")
                    )
                    taken += 1
                if taken >= per_file:
                    break
    return passages[:limit], queries[:limit]


def bench_real(args) -> tuple[list[dict], dict]:
    from kecl.home import resolve_model_path
    from kecl.settings import DEFAULT_MODEL
    from retrieval import Embedder

    texts, queries = lama_sentences(Path(args.lama), args.real_n)
    embedder = Embedder(resolve_model_path(DEFAULT_MODEL), batch_size=64, device="cpu", name=DEFAULT_MODEL)
    embedder.encode(texts[:64])  # warm-up
    t = time.perf_counter()
    vectors = embedder.encode(texts)
    embed_s = time.perf_counter() - t
    q = embedder.encode(queries[: args.queries])
    emb = {
        "model": embedder.version,
        "passages": len(texts),
        "seconds": embed_s,
        "passages_per_s": len(texts) / embed_s,
        "mean_chars": float(np.mean([len(x) for x in texts])),
    }
    log.info("embedded %d passages in %.1fs (%.0f/s)", len(texts), embed_s, emb["passages_per_s"])
    saved = args.hnsw_m, args.ef_search
    args.hnsw_m = args.hnsw_m[:1]
    rows = bench_kinds(vectors, q, args, f"MiniLM LAMA T-REx {len(texts)}")
    args.hnsw_m, args.ef_search = saved
    return rows, emb


def print_table(rows: list[dict]) -> None:
    head = f"{'data':<28} {'kind':<13} {'params':<30} {'R@10':>6} {'q/s batch':>10} {'q/s 1':>8} {'x exact':>8} {'add/s':>9} {'build s':>8} {'B/vec':>7}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['data']:<28} {r['kind']:<13} {r['params']:<30} {r['recall@10']:>6.3f} {r['qps_batch']:>10.0f} "
            f"{r['qps_single']:>8.0f} {r.get('speedup_vs_exact', 1.0):>8.1f} {r['add_per_s']:>9.0f} "
            f"{r['build_s']:>8.1f} {r['bytes_per_vector']:>7.0f}"
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    parser.add_argument("--hnsw-m", type=int, nargs="+", default=[32])
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--ivf-train", type=int, default=100_000)
    parser.add_argument("--add-batch", type=int, default=50_000)
    parser.add_argument("--skip-ivfpq", action="store_true")
    parser.add_argument(
        "--lama",
        default=os.environ.get("KECL_LAMA", ""),
        help="LAMA folder for the real-embedding part (default: $KECL_LAMA)",
    )
    parser.add_argument("--real-n", type=int, default=10_000)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--quick", action="store_true", help="50k synthetic vectors, 1k real passages")
    parser.add_argument("--out", default="bench-out/index.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.queries, args.real_n, args.single = 50_000, 200, 1000, 50
        args.ivf_train = 20_000
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # imported with kecl.home in bench_real
    t = time.perf_counter()
    data = clustered_vectors(args.n + args.queries, args.dim, seed=0)
    vectors, queries = data[: args.n], data[args.n :]
    log.info(
        "generated %d vectors in %.1fs; faiss %s, %d threads",
        len(data),
        time.perf_counter() - t,
        faiss.__version__,
        faiss.omp_get_max_threads(),
    )
    rows = bench_kinds(vectors, queries, args, f"synthetic {args.n}")
    del data, vectors
    embedding = None
    if not args.skip_real and Path(args.lama).is_dir():
        real_rows, embedding = bench_real(args)
        rows += real_rows
    print_table(rows)
    if embedding:
        print(
            f"\nembedding throughput: {embedding['passages_per_s']:.0f} passages/s "
            f"({embedding['passages']} passages, mean {embedding['mean_chars']:.0f} chars, {embedding['model']})"
        )
    result = {
        "rows": rows,
        "embedding": embedding,
        "args": vars(args),
        "faiss": faiss.__version__,
        "threads": faiss.omp_get_max_threads(),
        "cpus": os.cpu_count(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
