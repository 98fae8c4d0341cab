"""Continual learning, measured: acquisition and retention after one update cycle, per forgetting guard.

Per dataset and per arm, everything goes through the product's own update cycle
(``Kecl.run_update`` → ``updater.run_cycle``), configured as kecl configures it
(``kecl.wiring.cycle_config`` over settings made from the arguments):

1. a fresh kecl home whose active checkpoint is the adapted default model (``encoder.adapt_default``,
   as ``kecl init`` makes it; adapted once per benchmark run — or reused from ``--base-dir`` — and
   copied into each home, never re-adapted per experiment);
2. cycle 1 over the base slice (shared by both arms: the home is copied after it, so both arms
   start from the very same model, store and index);
3. cycle 2 over the fresh slice, once per arm (``--arms``, :data:`ARMS`): replay (``replay_ratio``
   > 0, earlier passages and verbalised unchanged facts sampled into every batch), none (nothing
   replayed), the L2 pull towards the active weights, LoRA adapters over frozen weights, replay +
   LoRA, replay + L2, and replay with new names added to the vocabulary — the same data and steps;
4. the cycle's own metrics: acquisition = P@1 on the fresh slice's new (and, for the demo, changed)
   facts, closed-book and augmented (``concat``: facts from the graph + retrieved passages);
   retention = P@1 on every base fact that is still current, before cycle 2 (the active model)
   and after (the candidate); held-out MLM loss; whether changed facts' new objects outrank the
   old ones; CKL's FUAR (forgotten / (updated + acquired)); the training stage's seconds; and what
   the default gates would have decided (the benchmark's own gates let every candidate through, so
   it can be measured).

Datasets:
- ``demo``: ``kecl/demo_data/base`` then ``kecl/demo_data/later``. Few later objects are one
  wordpiece (people's full names never are), so the demo also reports "last-name" probes: the
  person's first names stay in the sentence and the last name is masked ("… is Keir [MASK] .").
- ``lama``: LAMA T-REx (20 relations, one-token objects) and Google-RE facts; the evidence
  sentences (T-REx ``masked_sentence`` with ``[MASK]`` → ``obj_surface``, Google-RE snippets) of
  half of the facts of each relation are the base corpus, the other half the fresh one; feeds
  declare LAMA's relations with their templates, the subjects/objects as entities and the facts.

    .venv/bin/python -m benchmarks.bench_continual
    .venv/bin/python -m benchmarks.bench_continual --datasets demo --arms replay,l2,lora,replay+lora,replay+vocab
    .venv/bin/python -m benchmarks.bench_continual --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from kecl.settings import ModelSettings, TrainSettings  # noqa: E402 - after the offline switches above


class _DEFAULTS:
    """The product's default cycle recipe: the benchmark measures what ``kecl update`` runs."""

    train = TrainSettings()
    model = ModelSettings()


log = logging.getLogger("bench_continual")

DEMO_DATA = Path(__file__).resolve().parent.parent / "kecl" / "demo_data"
PERMISSIVE = {"max_retention_drop": 1.0, "max_loss_increase": 100.0, "min_acquisition": 0.0}
TARGETS = {
    "augmented_acquisition": 0.9,  # entity level, all fresh facts
    "closed_book_acquisition_one_token": 0.5,
    "closed_book_acquisition_multi_token": 0.35,
    "retention_drop_points": 1.0,  # entity level, unchanged facts
    "new_outranks_old_augmented": 0.9,
    "new_outranks_old_closed_book": 0.6,
}


# ----------------------------------------------------------------------------- data


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def lama_slices(
    lama: Path, folder: Path, per_relation: int, google_per_relation: int, evidences: int, tokenizer: Any, seed: int
) -> tuple[list[Path], list[Path], dict[str, int]]:
    """Write LAMA as two slices (feed + corpus each) under ``folder``; returns (base, fresh, counts).

    Facts of each relation are shuffled with ``seed`` and split in half: the base slice holds one
    half's facts and evidence, the fresh slice the other's. Relations are declared non-functional,
    so a fresh fact never closes a base one (LAMA has several objects for some subject–relation
    pairs, e.g. languages spoken).
    """
    from benchmarks.bench_lama import GOOGLE_RE_LABELS, load_facts
    from updater import GOOGLE_RE_TEMPLATES

    facts = load_facts(lama, per_relation, google_per_relation, evidences, tokenizer)
    by_relation: dict[str, list[dict]] = defaultdict(list)
    for fact in facts:
        by_relation[fact["relation"]].append(fact)
    rng = random.Random(seed)
    halves: dict[str, list[dict]] = {"base": [], "fresh": []}
    for rel in sorted(by_relation):
        group = by_relation[rel]
        rng.shuffle(group)
        halves["base"] += group[0::2]
        halves["fresh"] += group[1::2]
    relations = []
    with open(lama / "relations.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            relations.append(
                {
                    "kind": "relation",
                    "id": r["relation"],
                    "label": r["label"],
                    "template": r["template"],
                    "functional": False,
                }
            )
    relations += [
        {"kind": "relation", "id": k, "label": GOOGLE_RE_LABELS[k], "template": t, "functional": False}
        for k, t in GOOGLE_RE_TEMPLATES.items()
    ]

    def clean(aliases: list[str]) -> list[str]:
        return sorted({a for a in aliases if len(a) > 2})[:10]

    paths: dict[str, Path] = {}
    counts: dict[str, int] = {}
    seen_docs: set[str] = set()
    for name, part in halves.items():
        entities: dict[str, dict] = {}
        feed: list[dict] = []
        for fact in part:
            for ent in (fact["subject"], fact["object"]):
                if ent is None:
                    continue
                key, label, aliases = ent
                known = entities.setdefault(key, {"kind": "entity", "id": key, "name": label, "aliases": []})
                known["aliases"] = clean(known["aliases"] + aliases)
        for fact in part:
            rec = {
                "kind": "fact",
                "subject": fact["subject"][0],
                "relation": fact["relation"],
                "source": fact["dataset"],
            }
            if fact["object"] is not None:
                rec["object"] = fact["object"][0]
            else:
                rec["object_literal"] = fact["obj_label"]
            feed.append(rec)
        docs = []
        for fact in part:
            for text, _ in fact["evidence"]:
                text = text.strip()
                if text and text not in seen_docs:
                    seen_docs.add(text)
                    docs.append({"id": f"{name}-{len(docs):05d}", "text": text, "source": fact["dataset"]})
        write_jsonl(
            folder / name / "feed.jsonl", (relations if name == "base" else []) + list(entities.values()) + feed
        )
        write_jsonl(folder / name / "corpus.jsonl", docs)
        paths[name] = folder / name
        counts[f"{name}_facts"] = len(part)
        counts[f"{name}_documents"] = len(docs)
    return [paths["base"]], [paths["fresh"]], counts


# ----------------------------------------------------------------------------- homes and cycles


def base_checkpoint(args: argparse.Namespace) -> tuple[Path, str]:
    """The adapted default checkpoint folder (made once in ``--base-dir``, reused by later runs)."""
    from encoder import active_version, adapt_default
    from kecl.home import resolve_model_path
    from kecl.settings import DEFAULT_MODEL

    if args.base_checkpoint:
        return Path(args.base_checkpoint), f"given checkpoint {args.base_checkpoint}"
    root = Path(args.base_dir) / "checkpoints"
    t = time.perf_counter()
    reused = active_version(root) is not None
    version, _ = adapt_default(
        root, resolve_model_path(DEFAULT_MODEL), progress=False, device="cpu", name=DEFAULT_MODEL
    )
    made = time.perf_counter() - t
    meta = json.loads((root / version / "metrics.json").read_text())
    note = (
        f"default checkpoint {version} (encoder.adapt_default, {meta.get('steps')} adaptation steps, held-out "
        f"masked-token top-1 {meta.get('heldout_top1', float('nan')):.3f}; "
        f"{'reused from ' + str(root) if reused else f'made in {made:.0f}s'})"
    )
    return root / version, note


def new_home(home: Path, checkpoint: Path) -> Any:
    """A fresh kecl home whose active checkpoint is a copy of ``checkpoint``; returns ``Kecl``."""
    from encoder import set_active
    from kecl.home import ensure_home
    from kecl.services import Kecl
    from kecl.settings import Settings

    if home.exists():
        shutil.rmtree(home)
    settings = Settings(home=home, database_url=None, index={"kind": "flat"}, model={"device": "cpu"})
    ensure_home(settings)
    shutil.copytree(checkpoint, settings.checkpoints_dir / checkpoint.name)
    set_active(settings.checkpoints_dir, checkpoint.name)
    return Kecl(settings)


def open_home(home: Path) -> Any:
    from kecl.services import Kecl
    from kecl.settings import Settings

    return Kecl(Settings(home=home, database_url=None, index={"kind": "flat"}, model={"device": "cpu"}))


ARMS = ("replay", "none", "l2", "lora", "replay+lora", "replay+l2", "replay+vocab", "replay+facts")
"""Cycle-2 arms, each named by the guards it trains with, joined by "+": forgetting guards as CKL
compares them (replay, the L2 pull, LoRA), on the same data and the same number of steps, and
"vocab": new names learned as one token each (``train.vocabulary_min_count``); "facts": each replayed
fact stated in every verbalisation instead of ``--replay-fact-patterns`` of them."""


def cycle_config(args: argparse.Namespace, arm: str, home: Path) -> Any:
    """The cycle's configuration as kecl makes it from settings (``kecl.wiring.cycle_config``): the
    arguments as ``train``/``model``/``gates`` settings of the home, everything else kecl's defaults
    (the training log goes to the home's ``runs/train.jsonl``, as in ``kecl update``). ``arm``
    (a key of :data:`ARMS`) says which guards the cycle trains with."""
    guards = set(arm.split("+"))
    replay = "replay" in guards
    from kecl.settings import Settings
    from kecl.wiring import cycle_config as kecl_cycle_config
    from updater import VERBALISATIONS

    settings = Settings(
        home=home,
        database_url=None,
        model={"device": "cpu", "max_length": args.max_length, "evidence_boost": args.evidence_boost},
        train={
            "steps": args.steps,
            "batch_size": args.batch_size,
            "learning_rate": args.lora_lr if "lora" in guards and args.lora_lr else args.lr,
            "replay_ratio": args.replay_ratio if replay else 0.0,
            "seed": args.seed,
            "l2_pull": args.l2_pull if "l2" in guards else 0.0,
            "lora_rank": args.lora_rank if "lora" in guards else 0,
            "vocabulary_min_count": args.vocabulary_min_count if "vocab" in guards else None,
            "injection_probability": args.injection_probability,
            "hidden_dropout": args.hidden_dropout,
        },
        gates=PERMISSIVE,  # every candidate through, so it can be measured (summarise applies the default gates)
    )
    # What settings do not hold: the replay arm's sizes (none without replay), the retention
    # sample, the modes measured and --verbalisations.
    return replace(
        kecl_cycle_config(settings),
        replay_passages=args.replay_passages if replay else 0,
        replay_facts=args.replay_facts if replay else 0,
        replay_fact_patterns=len(VERBALISATIONS) if "facts" in guards else args.replay_fact_patterns,
        retention_probes=args.retention_probes,
        eval_modes=("closed-book", "concat"),
        verbalisations=VERBALISATIONS[: args.verbalisations or None],
    )


def run(kecl: Any, paths: list[Path], config: Any, trigger: str) -> Any:
    t = time.perf_counter()
    report = kecl.run_update(paths=paths, trigger=trigger, config=config)
    if report.status != "succeeded":
        raise RuntimeError(f"cycle {trigger} {report.status}: {report.error}\n{report.metrics.get('traceback')}")
    log.info(
        "%s: %s in %.0fs (%s)",
        trigger,
        report.decision,
        time.perf_counter() - t,
        {k: v for k, v in report.timings.items()},
    )
    return report


# ----------------------------------------------------------------------------- demo extras


def last_name_probes(store: Any, tokenizer: Any, fact_watermark: int) -> list[Any]:
    """Probes for facts whose object is a multi-word name ending in one wordpiece: the first names
    stay in the sentence, the last name is masked. Groups as the cycle's: new / changed (facts
    after ``fact_watermark``, changed when they closed an earlier fact) / unchanged."""
    from updater import Probe, gold_token_id

    closed = {(f.subject_id, f.relation_id) for f in store.facts(include_closed=True, limit=None) if f.valid_to}
    out = []
    for f in store.facts(limit=None):
        words = f.object.split()
        if not f.template or len(words) < 2 or gold_token_id(tokenizer, words[-1]) is None:
            continue
        if f.id > fact_watermark:
            group = "changed" if (f.subject_id, f.relation_id) in closed else "new"
        else:
            group = "unchanged"
        text = f.template.replace("[X]", f.subject).replace("[Y]", " ".join(words[:-1]) + " [MASK]")
        out.append(
            Probe(
                text=text,
                obj_label=words[-1],
                sub_label=f.subject,
                relation=f.relation_id,
                probe_id=f"fact:{f.id}",
                group=group,
                fact_id=f.id,
            )
        )
    return out


def eval_last_names(kecl: Any, report: Any, fact_watermark: int, evidence_boost: float) -> dict[str, Any]:
    from encoder import load_checkpoint
    from updater import evaluate

    ck = kecl.settings.checkpoints_dir
    manifest = json.loads((ck / report.candidate / "checkpoint.json").read_text())
    out: dict[str, Any] = {}
    probes = None
    for role, version in (("active", manifest["parent"]), ("candidate", report.candidate)):
        bundle = load_checkpoint(ck / version, device="cpu")
        probes = probes or last_name_probes(kecl.store, bundle.tokenizer, fact_watermark)
        ev = evaluate(
            bundle,
            probes,
            modes=("closed-book", "concat"),
            knowledge=kecl.knowledge_source(),
            max_length=kecl.settings.model.max_injected_length,
            evidence_boost=evidence_boost,
        )
        out[role] = {"modes": {m: {g: vars(x) for g, x in ev.metrics[m].items()} for m in ev.modes}}
    return out


# ----------------------------------------------------------------------------- summary


def p1(metrics: dict, mode: str, group: str) -> tuple[float | None, int]:
    m = metrics.get("modes", {}).get(mode, {}).get(group)
    return (m["p_at_1"], m["n"]) if m and m["n"] else (None, 0)


def pooled(metrics: dict, mode: str, groups: tuple[str, ...]) -> tuple[float | None, int]:
    """P@1 over the probes of several groups together (weighted by n)."""
    hits, n = 0.0, 0
    for g in groups:
        v, k = p1(metrics, mode, g)
        if v is not None:
            hits += v * k
            n += k
    return (hits / n if n else None), n


def split_by_tokens(metrics: dict, mode: str, groups: tuple[str, ...]) -> dict[str, Any]:
    """Entity-level P@1 of the one-token probes (``metrics["one_token"]``) and of the rest (the
    multi-token ones: all minus one-token, by counts), pooled over ``groups``."""
    hits_all, n_all, hits_one, n_one = 0.0, 0, 0.0, 0
    for g in groups:
        m = metrics.get("modes", {}).get(mode, {}).get(g)
        o = metrics.get("one_token", {}).get(mode, {}).get(g)
        if m and m["n"]:
            hits_all, n_all = hits_all + m["p_at_1"] * m["n"], n_all + m["n"]
        if o and o["n"]:
            hits_one, n_one = hits_one + o["p_at_1"] * o["n"], n_one + o["n"]
    n_multi = n_all - n_one
    return {
        "one_token": round(hits_one / n_one, 4) if n_one else None,
        "n_one_token": n_one,
        "multi_token": round((hits_all - hits_one) / n_multi, 4) if n_multi else None,
        "n_multi_token": n_multi,
    }


def summarise(report: Any) -> dict[str, Any]:
    from updater import GateConfig, decide

    act, cand = report.metrics["active"], report.metrics["candidate"]
    row: dict[str, Any] = {"level": cand.get("level", "token")}
    for mode, tag in (("closed-book", "cb"), ("concat", "aug")):
        row[f"acq_{tag}_by_tokens"] = split_by_tokens(cand, mode, ("new", "changed"))
        row[f"outranks_{tag}"] = cand.get("outranks_by_mode", {}).get(mode)
    for mode, tag in (("closed-book", "cb"), ("concat", "aug")):
        row[f"acq_{tag}"], row["n_fresh"] = pooled(cand, mode, ("new", "changed"))
        row[f"acq_{tag}_before"], _ = pooled(act, mode, ("new", "changed"))
        for g in ("new", "changed"):
            row[f"{g}_{tag}"], row[f"n_{g}"] = p1(cand, mode, g)
        row[f"ret_{tag}_before"], row["n_base"] = p1(act, mode, "unchanged")
        row[f"ret_{tag}_after"], _ = p1(cand, mode, "unchanged")
        b, a = row[f"ret_{tag}_before"], row[f"ret_{tag}_after"]
        row[f"ret_{tag}_drop_pts"] = round(100 * (b - a), 2) if a is not None and b is not None else None
    row["loss_before"], row["loss_after"] = act.get("heldout_loss"), cand.get("heldout_loss")
    row["outranks_before"] = act.get("changed_outranks", {}).get("new_outranks_old")
    row["outranks_after"] = cand.get("changed_outranks", {}).get("new_outranks_old")
    row["n_outranks"] = cand.get("changed_outranks", {}).get("n")
    row["fuar_cb"] = fuar(act, cand)
    decision, reasons = decide(GateConfig(), act, cand)
    row["default_gate"], row["default_gate_reasons"] = decision, reasons
    row["train"] = report.metrics.get("train")
    row["counts"] = {k: v for k, v in report.counts.items() if k != "issues"}
    row["timings_s"] = report.timings
    return row


def fuar(active: dict, candidate: dict, mode: str = "closed-book") -> float | None:
    """CKL's Forgotten / (Updated + Acquired), closed-book as CKL measures it, in probes: the net
    loss of correct unchanged facts over the net gain on changed facts plus that on new ones (the
    cycle keeps P@1 per group, not per probe, so a group's gains and losses net out). Lower is
    better; above 1 a cycle forgot more than it learned; None when it learned nothing."""

    def change(group: str) -> float:
        before, n = p1(active, mode, group)
        after, _ = p1(candidate, mode, group)
        return (after - before) * n if before is not None and after is not None else 0.0

    learned = max(0.0, change("new")) + max(0.0, change("changed"))
    forgotten = max(0.0, -change("unchanged"))
    return round(forgotten / learned, 3) if learned > 0 else None


def guards_table(rows: list[dict]) -> str:
    """The arms side by side as CKL compares forgetting guards: acquisition (closed-book split by
    the object's word pieces), retention, FUAR and the training stage's seconds."""
    lines = [
        "| dataset | arm | acq. closed-book one-token / multi-token | acq. augmented | retention drop cb / aug (pts) "
        "| FUAR (cb) | new outranks old cb / aug | held-out loss | train s | default gate |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        split = r.get("acq_cb_by_tokens") or {}
        lines.append(
            f"| {r['dataset']} | {r['arm']} | {fmt(split.get('one_token'))} (n={split.get('n_one_token')}) / "
            f"{fmt(split.get('multi_token'))} (n={split.get('n_multi_token')}) | {fmt(r['acq_aug'])} "
            f"| {fmt(r['ret_cb_drop_pts'], 1)} / {fmt(r['ret_aug_drop_pts'], 1)} | {fmt(r.get('fuar_cb'))} "
            f"| {fmt((r.get('outranks_cb') or {}).get('new_outranks_old'), 2)} / "
            f"{fmt((r.get('outranks_aug') or {}).get('new_outranks_old'), 2)} "
            f"| {fmt(r['loss_before'], 2)} → {fmt(r['loss_after'], 2)} "
            f"| {fmt((r.get('timings_s') or {}).get('train'), 0)} | {r['default_gate']} |"
        )
    return "\n".join(lines)


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def markdown_table(rows: list[dict]) -> str:
    head = (
        "| dataset | arm | acq. closed-book | acq. augmented | retention closed-book before → after (drop, pts) "
        "| retention augmented before → after (drop, pts) | held-out loss before → after | new outranks old "
        "| default gate |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['arm']} | {fmt(r['acq_cb'])} (n={r['n_fresh']}; before {fmt(r['acq_cb_before'])}) "
            f"| {fmt(r['acq_aug'])} (before {fmt(r['acq_aug_before'])}) "
            f"| {fmt(r['ret_cb_before'])} → {fmt(r['ret_cb_after'])} ({fmt(r['ret_cb_drop_pts'], 1)}; n={r['n_base']}) "
            f"| {fmt(r['ret_aug_before'])} → {fmt(r['ret_aug_after'])} ({fmt(r['ret_aug_drop_pts'], 1)}) "
            f"| {fmt(r['loss_before'], 2)} → {fmt(r['loss_after'], 2)} "
            f"| {fmt(r['outranks_before'], 2)} → {fmt(r['outranks_after'], 2)} (n={r['n_outranks']}) | {r['default_gate']} |"
        )
    return "\n".join(lines)


def last_name_table(rows: list[dict]) -> str:
    lines = [
        "| dataset | arm | group | n | closed-book before → after | augmented before → after |",
        "|" + "---|" * 6,
    ]
    for r in rows:
        ln = r.get("last_names")
        if not ln:
            continue
        for g in ("new", "changed", "unchanged"):
            cb_b, n = p1(ln["active"], "closed-book", g)
            cb_a, _ = p1(ln["candidate"], "closed-book", g)
            au_b, _ = p1(ln["active"], "concat", g)
            au_a, _ = p1(ln["candidate"], "concat", g)
            if n:
                lines.append(
                    f"| {r['dataset']} | {r['arm']} | {g} | {n} | {fmt(cb_b)} → {fmt(cb_a)} | {fmt(au_b)} → {fmt(au_a)} |"
                )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description="Continual learning: acquisition and retention after one cycle, per forgetting guard"
    )
    parser.add_argument("--lama", default=os.environ.get("KECL_LAMA", ""), help="the LAMA folder (default: $KECL_LAMA)")
    parser.add_argument("--datasets", default="demo,lama", help="comma-separated: demo, lama")
    parser.add_argument("--per-relation", type=int, default=10, help="T-REx facts per relation (20 relations)")
    parser.add_argument("--google-per-relation", type=int, default=6, help="Google-RE facts per relation (3)")
    parser.add_argument("--evidences", type=int, default=2, help="evidence texts kept per LAMA fact")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per cycle (default: the train.steps setting, --quick 15)",
    )
    parser.add_argument("--batch-size", type=int, default=_DEFAULTS.train.batch_size)
    parser.add_argument(
        "--max-length",
        type=int,
        default=_DEFAULTS.model.max_length,
        help="tokens per training block (the texts are short)",
    )
    parser.add_argument("--lr", type=float, default=_DEFAULTS.train.learning_rate)
    parser.add_argument("--replay-ratio", type=float, default=0.5, help="replay arm: share of each batch replayed")
    parser.add_argument(
        "--injection-probability",
        type=float,
        default=0.3,
        help="share of steps on reading exercises (the settings' train.injection_probability)",
    )
    parser.add_argument(
        "--arms",
        default="replay,none",
        help=f"comma-separated cycle-2 arms, each from the same cycle-1 home: {', '.join(ARMS)}",
    )
    parser.add_argument("--l2-pull", type=float, default=0.01, help="l2 arms: the pull's strength (train.l2_pull)")
    parser.add_argument("--lora-rank", type=int, default=16, help="lora arms: the adapters' rank (train.lora_rank)")
    parser.add_argument("--lora-lr", type=float, default=None, help="lora arms: learning rate (default: --lr)")
    parser.add_argument(
        "--vocabulary-min-count",
        type=int,
        default=2,
        help="vocab arm: new names met this often are added as one token (train.vocabulary_min_count)",
    )
    parser.add_argument("--replay-passages", type=int, default=2000, help="replay arm: earlier passages sampled")
    parser.add_argument("--replay-facts", type=int, default=500, help="replay arm: unchanged facts verbalised")
    parser.add_argument(
        "--replay-fact-patterns", type=int, default=1, help="replay arm: statements of each replayed fact"
    )
    parser.add_argument(
        "--retention-probes",
        type=int,
        default=100,
        help="base facts sampled as retention probes (the cycle's sample; evaluation is the slow part)",
    )
    parser.add_argument(
        "--verbalisations",
        type=int,
        default=None,
        help="state facts in only the first N of updater.VERBALISATIONS (CycleConfig.verbalisations; default: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed and LAMA split seed")
    from kecl.settings import ModelSettings, TrainSettings

    parser.add_argument(
        "--hidden-dropout",
        type=float,
        default=TrainSettings().hidden_dropout,
        help="hidden-state dropout while training (default: kecl's train.hidden_dropout)",
    )
    parser.add_argument(
        "--evidence-boost",
        type=float,
        default=ModelSettings().evidence_boost,
        help="augmented answers' copy prior (default: kecl's model.evidence_boost; 0: off)",
    )
    parser.add_argument("--base-checkpoint", default=None, help="an adapted checkpoint folder to start from")
    parser.add_argument(
        "--base-dir",
        default="bench-out/continual-base",
        help="where the default checkpoint is adapted once and reused by later runs",
    )
    parser.add_argument("--work-dir", default="bench-out/continual-work", help="homes of the experiments (rebuilt)")
    parser.add_argument("--quick", action="store_true", help="demo only, 15 steps")
    parser.add_argument("--out", default="bench-out/continual.json")
    args = parser.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        parser.error(f"--arms: unknown {unknown}; choose from {', '.join(ARMS)}")
    if args.quick:
        args.datasets = "demo"
    if args.steps is None:
        args.steps = 15 if args.quick else _DEFAULTS.train.steps
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in (
        "alembic",
        "httpx",
        "sentence_transformers",
        "kecl",
        "retrieval",
        "knowledge",
        "encoder",
        "transformers",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import torch

    from updater import VERBALISATIONS

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    started = time.perf_counter()
    load_start = os.getloadavg()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    checkpoint, base_note = base_checkpoint(args)
    timings["base checkpoint"] = time.perf_counter() - t
    log.info("base: %s", base_note)

    work = Path(args.work_dir)
    rows: list[dict] = []
    data_counts: dict[str, Any] = {}
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        t = time.perf_counter()
        if dataset == "demo":
            base_paths, fresh_paths = [DEMO_DATA / "base"], [DEMO_DATA / "later"]
        elif dataset == "lama":
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
            base_paths, fresh_paths, data_counts["lama"] = lama_slices(
                Path(args.lama),
                work / "lama-data",
                args.per_relation,
                args.google_per_relation,
                args.evidences,
                tokenizer,
                args.seed,
            )
        else:
            raise SystemExit(f"unknown dataset {dataset!r}: expected demo or lama")
        home1 = work / f"{dataset}-cycle1"
        kecl = new_home(home1, checkpoint)
        first = run(kecl, base_paths, cycle_config(args, "none", home1), f"{dataset}-base")
        fact_watermark = kecl.store.max_fact_id()
        kecl.close()
        timings[f"{dataset} cycle 1"] = time.perf_counter() - t
        for arm in arms:
            t = time.perf_counter()
            home = work / f"{dataset}-{arm}"
            if home.exists():
                shutil.rmtree(home)
            shutil.copytree(home1, home)
            kecl = open_home(home)
            report = run(kecl, fresh_paths, cycle_config(args, arm, home), f"{dataset}-fresh-{arm}")
            row = {
                "dataset": dataset,
                "arm": arm,
                **summarise(report),
                "cycle1": {
                    "decision": first.decision,
                    "train": first.metrics.get("train"),
                    "counts": {k: v for k, v in first.counts.items() if k != "issues"},
                    "timings_s": first.timings,
                    "acq_cb": pooled(first.metrics["candidate"], "closed-book", ("new", "changed"))[0],
                    "acq_aug": pooled(first.metrics["candidate"], "concat", ("new", "changed"))[0],
                    "acq_cb_before": pooled(first.metrics["active"], "closed-book", ("new", "changed"))[0],
                },
            }
            if dataset == "demo":
                row["last_names"] = eval_last_names(kecl, report, fact_watermark, args.evidence_boost)
            kecl.close()
            timings[f"{dataset} cycle 2, {arm}"] = time.perf_counter() - t
            rows.append(row)
            log.info(
                "%s %s: acquisition cb %s aug %s; retention cb %s → %s",
                dataset,
                arm,
                fmt(row["acq_cb"]),
                fmt(row["acq_aug"]),
                fmt(row["ret_cb_before"]),
                fmt(row["ret_cb_after"]),
            )
    timings["total"] = time.perf_counter() - started
    load_end = os.getloadavg()

    settings = {
        k: getattr(args, k)
        for k in (
            "steps",
            "batch_size",
            "max_length",
            "lr",
            "replay_ratio",
            "injection_probability",
            "hidden_dropout",
            "evidence_boost",
            "replay_passages",
            "replay_facts",
            "seed",
            "per_relation",
            "google_per_relation",
            "evidences",
            "arms",
            "l2_pull",
            "lora_rank",
            "lora_lr",
            "vocabulary_min_count",
        )
    }
    settings["verbalisations"] = len(VERBALISATIONS[: args.verbalisations or None])
    print(f"\nbase model: {base_note}")
    print(f"settings: {settings}")
    print(f"load average at start {load_start[0]:.1f}, at end {load_end[0]:.1f} (on {os.cpu_count()} cores)\n")
    print(markdown_table(rows))
    print("\nguards side by side\n" + guards_table(rows))
    ln = last_name_table(rows)
    if ln.count("\n") > 1:
        print("\nlast-name probes (demo)\n" + ln)
    for r in rows:
        print(
            f"\n{r['dataset']} {r['arm']}: cycle 1 acquisition cb {fmt(r['cycle1']['acq_cb'])} "
            f"(before {fmt(r['cycle1']['acq_cb_before'])}) aug {fmt(r['cycle1']['acq_aug'])}; "
            f"default gate {r['default_gate']}: " + "; ".join(r["default_gate_reasons"])
        )
    print("\ntimings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    out = {
        "rows": rows,
        "base_model": base_note,
        "settings": settings,
        "targets": TARGETS,
        "data": data_counts,
        "load_average": {"start": load_start, "end": load_end, "cores": os.cpu_count()},
        "timings_s": timings,
        "args": vars(args),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
