"""LAMA probes: closed-book vs knowledge-augmented, before and after continued MLM training.

The real LAMA data (T-REx relations and Google-RE) goes into a temporary kecl home (SQLite +
FAISS): the evidence text (T-REx evidence sentences with [MASK] filled by the object's surface
form, Google-RE Wikipedia snippets) as documents, subjects and objects as entities (labels and
surface forms as aliases), and the facts subject–relation–object under LAMA's templates. Probes
are LAMA's template sentences ("Allan Peiper was born in [MASK] ."), scored with P@1, P@10 and
MRR on one-token objects (``updater.evaluate``).

Columns:
- ``closed-book``: the weights alone;
- ``concat passages``: the passages the hybrid retriever finds for the probe, injected
  (the honest open-book setting: the evidence sentences do contain the object, as they would in
  a real corpus, but they have to be found among all the others; tree without facts lays
  passages out exactly as concat, so it has no column of its own);
- ``concat/tree facts+passages``: also the linked entity's facts from the graph. The store holds
  the probed fact itself, so this column mostly shows that the graph path works, not knowledge.

Rows: each dataset split into the facts whose evidence the model was trained on (``trained``,
acquisition) and the other half (``held-out``: nothing of it was trained on — what changes there
is generalisation or forgetting). "after" = the same model after ``--steps`` steps of continued
MLM training (salient-span masking on the subject and object mentions) on the trained half's
evidence.

    .venv/bin/python -m benchmarks.bench_lama --lama "$KECL_LAMA"
    .venv/bin/python -m benchmarks.bench_lama --lama "$KECL_LAMA" --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger("bench_lama")

GOOGLE_RE_LABELS = {
    "place_of_birth": "place of birth",
    "date_of_birth": "date of birth",
    "place_of_death": "place of death",
}


# ----------------------------------------------------------------------------- data


def _spans(text: str, needles: list[str]) -> list[tuple[int, int]]:
    out = []
    for needle in needles:
        if needle and len(needle) > 1:
            for m in re.finditer(re.escape(needle), text):
                out.append((m.start(), m.end()))
    return out


def load_facts(lama: Path, per_relation: int, google_per_relation: int, evidences: int, tokenizer: Any) -> list[dict]:
    """LAMA facts with one-token objects: probe, subject/object entities, evidence texts with salient spans."""
    from updater import GOOGLE_RE_TEMPLATES, fill_template, gold_token_id, read_relation_templates

    templates = read_relation_templates(lama / "relations.jsonl")
    facts: list[dict] = []
    for path in sorted((lama / "TREx").glob("P*.jsonl")):
        taken = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                if taken >= per_relation:
                    break
                d = json.loads(line)
                if gold_token_id(tokenizer, d["obj_label"]) is None:
                    continue
                texts = []
                for e in d["evidences"]:
                    if e["masked_sentence"].count("[MASK]") != 1:
                        continue
                    text = e["masked_sentence"].replace("[MASK]", e["obj_surface"])
                    spans = _spans(text, [e["obj_surface"], e["sub_surface"]])
                    if text not in (t for t, _ in texts):
                        texts.append((text, spans))
                texts = texts[:evidences]
                if not texts:
                    continue
                taken += 1
                surfaces = sorted({e["sub_surface"] for e in d["evidences"]} - {d["sub_label"]})
                obj_surfaces = sorted({e["obj_surface"] for e in d["evidences"]} - {d["obj_label"]})
                facts.append(
                    {
                        "dataset": "TREx",
                        "relation": d["predicate_id"],
                        "id": d["uuid"],
                        "probe": fill_template(templates[d["predicate_id"]], d["sub_label"]),
                        "subject": (d["sub_uri"], d["sub_label"], surfaces),
                        "object": (d["obj_uri"], d["obj_label"], obj_surfaces),
                        "obj_label": d["obj_label"],
                        "evidence": texts,
                    }
                )
    for name, template in GOOGLE_RE_TEMPLATES.items():
        taken = 0
        with open(lama / "Google_RE" / f"{name}_test.jsonl", encoding="utf-8") as f:
            for line in f:
                if taken >= google_per_relation:
                    break
                d = json.loads(line)
                if gold_token_id(tokenizer, d["obj_label"]) is None or not d.get("evidences"):
                    continue
                taken += 1
                texts = [
                    (e["snippet"], _spans(e["snippet"], [d["obj_label"], d["sub_label"]]))
                    for e in d["evidences"][:evidences]
                ]
                obj_key = d.get("obj_w") or (d["obj"] if str(d["obj"]).startswith("/m/") else None)
                facts.append(
                    {
                        "dataset": "Google_RE",
                        "relation": name,
                        "id": d["uuid"],
                        "probe": fill_template(template, d["sub_label"]),
                        "subject": (
                            d["sub"],
                            d["sub_label"],
                            [a for a in d.get("sub_aliases") or [] if isinstance(a, str)],
                        ),
                        "object": (
                            obj_key,
                            d["obj_label"],
                            [a for a in d.get("obj_aliases") or [] if isinstance(a, str)],
                        )
                        if obj_key
                        else None,
                        "obj_label": d["obj_label"],
                        "evidence": texts,
                    }
                )
    return facts


def build_home(facts: list[dict], lama: Path, home: Path):
    """A kecl home with the facts' relations, entities, facts and evidence documents; returns ``Kecl``."""
    from kecl.services import Kecl
    from kecl.settings import Settings
    from knowledge import DocumentRecord, EntityRecord, FactRecord, RelationRecord
    from updater import GOOGLE_RE_TEMPLATES

    settings = Settings(home=home, index={"kind": "flat"})
    kecl = Kecl(settings)
    store = kecl.store
    relations = []
    with open(lama / "relations.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            relations.append(RelationRecord(r["relation"], r["label"], r["template"]))
    relations += [RelationRecord(k, GOOGLE_RE_LABELS[k], t) for k, t in GOOGLE_RE_TEMPLATES.items()]
    store.upsert_relations(relations)

    def clean(aliases: list[str]) -> list[str]:
        return [a for a in aliases if len(a) > 2][:10]

    entities: dict[str, EntityRecord] = {}
    for fact in facts:
        for ent in (fact["subject"], fact["object"]):
            if ent is None:
                continue
            key, name, aliases = ent
            if key in entities:
                entities[key].aliases = sorted(set(entities[key].aliases) | set(clean(aliases)))[:10]
            else:
                entities[key] = EntityRecord(id=key, name=name, aliases=clean(aliases))
    store.upsert_entities(list(entities.values()))
    records = []
    for fact in facts:
        if fact["object"] is not None:
            records.append(FactRecord(fact["subject"][0], fact["relation"], fact["object"][0], source=fact["dataset"]))
        else:
            records.append(
                FactRecord(
                    fact["subject"][0], fact["relation"], object_literal=fact["obj_label"], source=fact["dataset"]
                )
            )
    store.add_facts(records)
    seen: set[str] = set()
    docs = []
    for fact in facts:
        for text, _ in fact["evidence"]:
            if text.strip() not in seen:
                seen.add(text.strip())
                docs.append(DocumentRecord(text=text.strip(), external_id=f"ev{len(docs)}", source=fact["dataset"]))
    for i in range(0, len(docs), 1000):
        kecl.ingest_documents(docs[i : i + 1000])
    return kecl


# ----------------------------------------------------------------------------- the encoder


def base_bundle(args: argparse.Namespace) -> tuple[Any, str]:
    """The starting encoder and a sentence saying what it is.

    ``--checkpoint``: that model (a checkpoint folder, a model folder or a model name). Otherwise
    the product's default checkpoint, made as ``kecl init`` makes it (``encoder.adapt_default``:
    MiniLM's fresh MLM head adapted on the default corpus) in ``--base-dir``, and reused from there
    by later runs.
    """
    from encoder import adapt_default, load_mlm
    from kecl.home import resolve_model_path
    from kecl.settings import DEFAULT_MODEL

    if args.checkpoint:
        bundle = load_mlm(resolve_model_path(args.checkpoint), device="cpu", name=args.checkpoint)
        return bundle, f"checkpoint {args.checkpoint}"
    t = time.perf_counter()
    version, bundle = adapt_default(
        Path(args.base_dir) / "checkpoints",
        resolve_model_path(DEFAULT_MODEL),
        progress=False,
        device="cpu",
        name=DEFAULT_MODEL,
    )
    made = time.perf_counter() - t
    return bundle, (
        f"the default checkpoint {version} (encoder.adapt_default, as `kecl init` makes it; "
        f"{'made' if made > 30 else 'reused from ' + str(args.base_dir)} in {made:.0f}s)"
    )


# ----------------------------------------------------------------------------- run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="LAMA: closed-book vs augmented, before/after continued MLM")
    parser.add_argument("--lama", default=os.environ.get("KECL_LAMA", ""), help="the LAMA folder (default: $KECL_LAMA)")
    parser.add_argument("--per-relation", type=int, default=15, help="T-REx facts per relation (20 relations)")
    parser.add_argument("--google-per-relation", type=int, default=50, help="Google-RE facts per relation (3)")
    parser.add_argument("--evidences", type=int, default=3, help="evidence texts kept per fact")
    parser.add_argument("--steps", type=int, default=150, help="continued MLM steps on the trained half's evidence")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=64, help="tokens per training block (evidence is short)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--k", type=int, default=4, help="passages injected")
    parser.add_argument("--checkpoint", default=None, help="start from this model/checkpoint")
    parser.add_argument("--base-dir", default="bench-out/lama-base", help="where the default checkpoint is made/reused")
    from kecl.settings import ModelSettings

    parser.add_argument(
        "--boosts",
        default=f"{ModelSettings().evidence_boost:g}",
        help="also evaluate concat passages with these evidence boosts (comma-separated logit "
        "bonuses, e.g. 2,4,6; default: kecl's model.evidence_boost; the other columns have none)",
    )
    parser.add_argument(
        "--normalisations",
        default="",
        help="also evaluate at entity level (graph candidates scored with one [MASK] per word-piece, every "
        "object counted) closed-book and with facts+passages, once per length normalisation "
        "(comma-separated: mean,sqrt,sum)",
    )
    parser.add_argument("--quick", action="store_true", help="4 T-REx facts a relation, 20 Google-RE, 40 steps")
    parser.add_argument("--out", default="bench-out/lama.json")
    args = parser.parse_args(argv)
    boosts = [float(b) for b in args.boosts.split(",") if b.strip()]
    if args.quick:
        args.per_relation, args.google_per_relation, args.steps = 4, 20, 40
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("alembic", "httpx", "sentence_transformers", "kecl", "retrieval", "knowledge"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import torch

    from encoder import SpanText, TrainConfig, train_mlm
    from kecl.evidence import cached_source, pipeline_retrieval
    from kecl.pipeline import QueryOptions
    from updater import Probe, evaluate

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    started = time.perf_counter()
    timings: dict[str, float] = {}
    lama = Path(args.lama)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        t = time.perf_counter()
        bundle, base_note = base_bundle(args)
        timings["base model"] = time.perf_counter() - t
        log.info("base: %s", base_note)

        t = time.perf_counter()
        facts = load_facts(lama, args.per_relation, args.google_per_relation, args.evidences, bundle.tokenizer)
        # Train on the evidence of every other fact of each relation: acquisition (trained) vs the rest.
        by_relation: dict[str, list[dict]] = defaultdict(list)
        for fact in facts:
            by_relation[fact["relation"]].append(fact)
        rng = random.Random(0)
        for group in by_relation.values():
            order = list(range(len(group)))
            rng.shuffle(order)
            for rank, i in enumerate(order):
                group[i]["split"] = "trained" if rank % 2 == 0 else "held-out"
        kecl = build_home(facts, lama, home)
        stats = kecl.store.stats()
        timings["store + index"] = time.perf_counter() - t
        log.info("store %s in %.0fs", stats, timings["store + index"])

        probes = [
            Probe(f["probe"], f["obj_label"], f["subject"][1], f["relation"], f["id"], f"{f['dataset']} {f['split']}")
            for f in facts
        ]
        opts = QueryOptions(k_passages=args.k, hops=1, max_facts=8)
        # One retrieval per probe, shared by both evaluations (the retriever is frozen).
        cache: dict[str, Any] = {}
        passages_only = cached_source(kecl, opts, "passages", cache)
        with_facts = cached_source(kecl, opts, "all", cache)
        max_length = kecl.settings.model.max_injected_length

        def run_all(tag: str) -> Any:
            t0 = time.perf_counter()
            report = evaluate(bundle, probes, modes=("closed-book",), max_length=max_length)
            # tree without facts is concat (passages are appended the same way): one column suffices
            report = report.merge(
                evaluate(
                    bundle, probes, modes=("concat",), knowledge=passages_only, label="passages", max_length=max_length
                )
            )
            report = report.merge(
                evaluate(
                    bundle,
                    probes,
                    modes=("concat", "tree"),
                    knowledge=with_facts,
                    label="facts+passages",
                    max_length=max_length,
                )
            )
            for normalisation in [n for n in args.normalisations.split(",") if n]:
                _, candidates = pipeline_retrieval(kecl)
                for modes, knowledge, what in ((("closed-book",), None, "entity"), (("concat",), with_facts, "entity")):
                    report = report.merge(
                        evaluate(
                            bundle,
                            probes,
                            modes=modes,
                            knowledge=knowledge,
                            label=f"{what} {normalisation}",
                            max_length=max_length,
                            evidence_boost=kecl.settings.model.evidence_boost if knowledge else 0.0,
                            candidates=candidates,
                            normalisation=normalisation,
                            shortlist=kecl.settings.answers.shortlist,
                        )
                    )
            for boost in boosts:
                report = report.merge(
                    evaluate(
                        bundle,
                        probes,
                        modes=("concat",),
                        knowledge=passages_only,
                        label=f"passages boost {boost:g}",
                        max_length=max_length,
                        evidence_boost=boost,
                    )
                )
            timings[f"evaluate {tag}"] = time.perf_counter() - t0
            log.info("evaluated %s in %.0fs", tag, timings[f"evaluate {tag}"])
            return report

        before = run_all("before")
        log.info("before: %s", {m: round(before.metrics[m]["all"].p_at_1, 3) for m in before.modes})

        train_texts = [SpanText(text, spans) for f in facts if f["split"] == "trained" for text, spans in f["evidence"]]
        t = time.perf_counter()
        result = train_mlm(
            bundle,
            train_texts,
            config=TrainConfig(
                steps=args.steps, batch_size=args.batch_size, max_length=args.max_length, learning_rate=args.lr, seed=0
            ),
            progress=False,
        )
        timings["train"] = time.perf_counter() - t
        log.info(
            "trained %d steps in %.0fs, loss %.3f → %.3f",
            args.steps,
            timings["train"],
            result.losses[0],
            result.final_loss,
        )
        after = run_all("after")
        kecl.close()
    # How often the injected knowledge holds the answer at all (the ceiling of reading it).
    has_answer = {"passages": 0, "facts": 0, "any fact": 0}
    for p in probes:
        facts_in, passages_in = cache.get(p.text, ([], []))
        gold = p.obj_label.lower()
        has_answer["passages"] += any(gold in x.text.lower() for x in passages_in[: args.k])
        has_answer["facts"] += any(gold in x.text.lower() for x in facts_in)
        has_answer["any fact"] += bool(facts_in)
    answer_rate = {k: v / max(len(probes), 1) for k, v in has_answer.items()}
    timings["total"] = time.perf_counter() - started

    rows = []
    for tag, report in (("before", before), ("after", after)):
        for row in report.rows():
            rows.append({"model": tag, **row})
    columns = before.modes
    print(f"\nbase model: {base_note}")
    print(
        f"{len(probes)} probes ({len(facts)} facts, {before.dropped} dropped); trained on {len(train_texts)} evidence "
        f"texts of the 'trained' half for {args.steps} steps (loss {result.losses[0]:.2f} → {result.final_loss:.2f})\n"
    )
    header = f"{'model':<7} {'group':<20} {'n':>5} " + " ".join(f"{c:>24}" for c in columns)
    print("P@1 / P@10 / MRR")
    print(header)
    for row in rows:
        cells = " ".join(
            f"{row[f'{c} P@1']:.3f}/{row[f'{c} P@10']:.3f}/{row[f'{c} MRR']:.3f}".rjust(24) for c in columns
        )
        print(f"{row['model']:<7} {row['group']:<20} {row['n']:>5} {cells}")
    print(
        f"\nanswer string present in the retrieved passages for {answer_rate['passages']:.1%} of probes, in the "
        f"linked facts for {answer_rate['facts']:.1%}; {answer_rate['any fact']:.1%} of probes got at least one fact"
    )
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    out = {
        "rows": rows,
        "columns": columns,
        "base_model": base_note,
        "store": stats,
        "probes": len(probes),
        "dropped": before.dropped,
        "train": {
            "steps": args.steps,
            "texts": len(train_texts),
            "first_loss": result.losses[0],
            "final_loss": result.final_loss,
            "seconds": result.seconds,
        },
        "before": before.to_dict(),
        "after": after.to_dict(),
        "answer_in_knowledge": answer_rate,
        "timings_s": timings,
        "args": vars(args),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
