"""Which length normalisation ranks whole answers best, on multi-token objects too (the demo's facts).

LAMA's objects are all one word-piece, so comparing normalisations there favours "sum" by
construction: the gold answer never gains from dividing by its length while longer wrong
candidates do. The demo's facts (heads of state, CEOs, cities, renamed countries) are mostly
several pieces long. A fresh home holds both slices of the demo data; one probe per fact the store
holds (its relation's template, the object masked), grouped by how many pieces the object has;
each probe is answered at entity level, closed-book and with facts + passages injected, once per
normalisation, by the given checkpoint (the adapted default, as ``kecl init`` makes it).
``--length-branches on,off`` also compares asking every candidate length as a branch of the
one-mask row (the default, ``answers.length_branches``) with a row of its own per length (the
exact pseudo-log-likelihood), scores and seconds side by side.

    .venv/bin/python -m benchmarks.bench_normalisation --checkpoint ~/.cache/kecl/<adapted checkpoint>
    .venv/bin/python -m benchmarks.bench_normalisation --checkpoint <...> --normalisations mean --length-branches on,off
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

NORMALISATIONS = ("mean", "sqrt", "sum")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="an adapted checkpoint folder")
    ap.add_argument("--normalisations", default=",".join(NORMALISATIONS))
    ap.add_argument("--length-branches", default="on", help="on, off or on,off")
    ap.add_argument("--out", default="bench-out/normalisation.json")
    args = ap.parse_args(argv)
    normalisations = [n for n in args.normalisations.split(",") if n]
    branches = [b == "on" for b in args.length_branches.split(",") if b]
    arms = [
        (f"{n} {'branches' if b else 'rows'}" if len(branches) > 1 else n, n, b)
        for n in normalisations
        for b in branches
    ]

    from benchmarks.demo_home import demo_kecl
    from kecl.evidence import pipeline_retrieval
    from updater import evaluate, probes_from_facts

    with demo_kecl("kecl-bench-norm-", ["base", "later"], args.checkpoint) as kecl:
        settings = kecl.settings
        bundle = kecl.encoder
        tokenizer = bundle.tokenizer

        def pieces(fact: Any) -> str:
            n = len(tokenizer(fact.object, add_special_tokens=False)["input_ids"])
            return "one piece" if n == 1 else ("two pieces" if n == 2 else "three or more")

        probes = probes_from_facts(kecl.store.facts(limit=None), group=pieces)
        knowledge, candidates = pipeline_retrieval(kecl)
        results: dict[str, Any] = {"probes": len(probes), "checkpoint": str(args.checkpoint), "by": {}}
        for name, normalisation, length_branches in arms:
            t0 = time.perf_counter()
            report = evaluate(
                bundle,
                probes,
                modes=("closed-book", "concat"),
                knowledge=knowledge,
                max_length=settings.model.max_injected_length,
                evidence_boost=settings.model.evidence_boost,
                candidates=candidates,
                normalisation=normalisation,
                shortlist=settings.answers.shortlist,
                length_branches=length_branches,
            )
            results["by"][name] = {
                mode: {g: vars(m) for g, m in groups.items()} for mode, groups in report.metrics.items()
            }
            results.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    groups = sorted({g for per in results["by"].values() for m in per.values() for g in m})
    print(f"{results['probes']} probes; P@1 / MRR (n)")
    for mode in ("closed-book", "concat"):
        for g in groups:
            cells = []
            for name, _, _ in arms:
                m = results["by"][name][mode].get(g)
                cells.append(f"{name} {m['p_at_1']:.3f}/{m['mrr']:.3f} (n={m['n']})" if m else "-")
            print(f"{mode:<12} {g:<14} " + "   ".join(cells))
    print("seconds (both modes):", results["seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
