"""The demo story on the embedded default data (``make demo``): knowledge changes, the system keeps up.

1. set up a fresh home: the first usable checkpoint (MiniLM with its MLM head adapted);
2. an update cycle over the base slice (2020): ingest, index, train, evaluate, promote;
3. ask cloze questions closed-book and augmented;
4. drop the later slice (2025) into the inbox and let the scheduler run one cycle;
5. print, for changed, new and unchanged facts, what the system answered before and after,
   closed-book and augmented, with acquisition and retention; save a PNG of the metrics over
   cycles and the model lineage.

Answers are whole entities (a new prime minister, a renamed country, a new CEO are several
word-pieces each): the best entity-level answer, right when it names the gold entity (any of its
names) or reads as the gold value.
"""

from __future__ import annotations

import shutil
import time
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kecl.home import ensure_home
from kecl.pipeline import QueryOptions
from kecl.plots import plot_history
from kecl.reports import print_report
from kecl.services import Kecl
from kecl.settings import Settings
from kecl.wiring import ensure_default_checkpoint, make_scheduler
from knowledge import KnowledgeStore, read_paths

DEMO_DATA = Path(__file__).parent / "demo_data"
MARKER = ".kecl-demo"


def prepare_home(home: Path, **overrides: Any) -> Settings:
    """A fresh demo home. Refuses to wipe a folder that is not a previous demo home."""
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).exists():
            raise SystemExit(f"{home} exists and is not a kecl demo home; choose another --home")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("created by `kecl demo`; removed and rebuilt by the next run\n")
    settings = Settings(home=home, database_url=None, **overrides)
    ensure_home(settings)
    return settings


@dataclass
class DemoProbe:
    group: str  # "changed" | "new" | "unchanged"
    subject: str
    relation: str
    text: str
    gold_before: str | None
    gold_after: str
    gold_before_id: int | None = None  # the gold entities, when the store knows them
    gold_after_id: int | None = None
    gold_after_key: str | None = None  # the later gold's external id (its entity may not be stored yet)


Reply = tuple[str, int | None]
"""One answer as the demo shows it: the text and the entity it names (None for a value or a
decoded string)."""


def _stored_name(store: KnowledgeStore, key: str) -> str | None:
    """The stored name of the entity with external id ``key``, if the store has it."""
    entity_id = store.entity_id(key)
    view = store.get_entity(entity_id) if entity_id is not None else None
    return view.name if view is not None else None


def demo_probes(store: KnowledgeStore, per_group: int = 8) -> list[DemoProbe]:
    """Probes for the later slice's changed and new facts (read from its feed) and for unchanged
    base facts, whatever the number of word-pieces of their answers; within a group the relations
    take turns, so heads of government, CEOs and official names all show."""
    later = read_paths([DEMO_DATA / "later" / "feed.jsonl"])
    names = {e.id: e.name for e in later.entities}
    relations = {r["id"]: r for r in store.relations()}
    current = {(f.subject_key, f.relation_id): f for f in store.facts(limit=None)}
    out: list[DemoProbe] = []
    touched = set()
    # a relation that changed twice (two prime ministers in a row) is asked once: about the last
    last = {(rec.subject, rec.relation): rec for rec in later.facts}
    for rec in last.values():
        rel = relations.get(rec.relation)
        if not rel or not rel["template"]:
            continue
        touched.add((rec.subject, rec.relation))
        subject = names.get(rec.subject) or _stored_name(store, rec.subject)
        gold = (
            rec.object_literal
            or names.get(rec.object or "")
            or (_stored_name(store, rec.object) if rec.object else None)
        )
        if not subject or not gold:
            continue
        before = current.get((rec.subject, rec.relation))
        group = "changed" if before is not None and before.object != gold else "new" if before is None else "unchanged"
        text = rel["template"].replace("[X]", subject).replace("[Y]", "[MASK]")
        out.append(
            DemoProbe(
                group,
                subject,
                rel["label"],
                text,
                before.object if before else None,
                gold,
                before.object_id if before else None,
                store.entity_id(rec.object) if rec.object else None,
                rec.object,
            )
        )
    kept = [p for g in ("changed", "new") for p in _by_relation_in_turn([q for q in out if q.group == g])[:per_group]]
    unchanged = [f for (s, r), f in sorted(current.items()) if (s, r) not in touched and f.template]
    step = max(len(unchanged) // per_group, 1)
    for f in unchanged[::step][:per_group]:
        template = f.template or ""
        kept.append(
            DemoProbe(
                "unchanged",
                f.subject,
                f.relation,
                template.replace("[X]", f.subject).replace("[Y]", "[MASK]"),
                f.object,
                f.object,
                f.object_id,
                f.object_id,
            )
        )
    return kept


def resolve_gold(store: KnowledgeStore, probes: list[DemoProbe]) -> None:
    """Fill in the later gold entities' ids once the store has them (after the later cycle)."""
    for p in probes:
        if p.gold_after_id is None and p.gold_after_key:
            p.gold_after_id = store.entity_id(p.gold_after_key)


def _by_relation_in_turn(probes: list[DemoProbe]) -> list[DemoProbe]:
    """The probes reordered so that each relation's next probe comes in turn."""
    queues: dict[str, list[DemoProbe]] = defaultdict(list)
    for p in probes:
        queues[p.relation].append(p)
    out = []
    while any(queues.values()):
        for q in queues.values():
            if q:
                out.append(q.pop(0))
    return out


def ask(kecl: Kecl, probes: list[DemoProbe]) -> dict[str, list[Reply]]:
    """The best entity-level answer closed-book and augmented (concat: facts + 4 passages)."""
    texts = [p.text for p in probes]
    closed = kecl.answer(texts, QueryOptions(mode="closed-book"))
    augmented = kecl.answer(texts, QueryOptions(mode="concat", k_passages=4))

    def best(a: Any) -> Reply:
        return (a.entities[0]["text"], a.entities[0]["entity_id"]) if a.entities else (a.top or "", None)

    return {"closed": [best(a) for a in closed], "augmented": [best(a) for a in augmented]}


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def correct(reply: Reply, gold: str | None, gold_id: int | None) -> bool:
    """Whether ``reply`` names the gold entity (by id: any of its names) or reads as the gold value."""
    if gold is None:
        return False
    text, entity_id = reply
    return (gold_id is not None and entity_id == gold_id) or _plain(text) == _plain(gold)


def _mark(reply: Reply, gold: str | None, gold_id: int | None) -> str:
    if gold is None:
        return f"[dim]{reply[0]}[/dim]"
    return f"[green]{reply[0]}[/green]" if correct(reply, gold, gold_id) else f"[red]{reply[0]}[/red]"


def comparison_table(probes: list[DemoProbe], before: dict[str, list[Reply]], after: dict[str, list[Reply]]) -> Table:
    """One row per question: the facts of 2020 and 2025, and the answers before → after the cycle."""
    table = Table(title="answers before → after the update cycle (green: the fact of the time)")
    for col in ("group", "subject", "relation", "2020", "2025", "closed-book", "augmented"):
        table.add_column(col)
    for i, p in enumerate(probes):
        table.add_row(
            p.group,
            p.subject,
            p.relation,
            p.gold_before or "-",
            p.gold_after,
            f"{_mark(before['closed'][i], p.gold_before, p.gold_before_id)} → "
            f"{_mark(after['closed'][i], p.gold_after, p.gold_after_id)}",
            f"{_mark(before['augmented'][i], p.gold_before, p.gold_before_id)} → "
            f"{_mark(after['augmented'][i], p.gold_after, p.gold_after_id)}",
        )
    return table


def accuracy(
    probes: list[DemoProbe], answers: dict[str, list[Reply]], group: str, when: str
) -> tuple[dict[str, int], int]:
    """Correct top-1 entity-level answers per mode against the gold of ``when`` ("before"/"after"), and n."""
    idx = [i for i, p in enumerate(probes) if p.group == group]
    gold = [
        (probes[i].gold_after, probes[i].gold_after_id)
        if when == "after"
        else (probes[i].gold_before, probes[i].gold_before_id)
        for i in idx
    ]
    hits = {k: sum(correct(a[i], g, gid) for i, (g, gid) in zip(idx, gold)) for k, a in answers.items()}
    return hits, len(idx)


def run_demo(home: Path, console: Console | None = None, steps: int = 150, quiet_seconds: float = 2.0) -> dict:
    """Run the whole story in ``home`` (rebuilt from scratch); returns what it measured."""
    console = console or Console()
    t_start = time.perf_counter()
    settings = prepare_home(
        home, scheduler={"interval_minutes": None, "inbox_quiet_seconds": quiet_seconds}, train={"steps": steps}
    )
    console.rule("[bold]1. set up: the first usable checkpoint")
    ensure_default_checkpoint(settings)
    kecl = Kecl(settings)
    kecl.register_serving()

    console.rule("[bold]2. update cycle over the base slice (2020)")
    base_report = kecl.run_update(paths=[DEMO_DATA / "base"], trigger="demo-base")
    print_report(base_report, console)
    console.print(f"store: {kecl.store.stats()}")

    console.rule("[bold]3. questions before the world changes")
    probes = demo_probes(kecl.store)
    before = ask(kecl, probes)
    example = kecl.answer([probes[0].text], QueryOptions(mode="concat", k_passages=4))[0]
    console.print(f"example: {example.text!r} → {example.top_entity!r} (word-piece: {example.top!r})")
    console.print(f"  ranked answers: {[(e['text'], e['source'], e['score']) for e in example.entities[:5]]}")
    console.print(f"  facts used: {[f['text'] for f in example.facts][:3]}")
    console.print(f"  evidence: {[e['text'][:80] for e in example.evidence][:2]}")
    console.print(f"  snapshot: {example.snapshot}")

    console.rule("[bold]4. the later slice (2025) arrives in the inbox; the scheduler runs a cycle")
    for f in sorted((DEMO_DATA / "later").iterdir()):
        if f.suffix == ".jsonl":
            shutil.copy(f, settings.inbox_dir / f.name)
    scheduler = make_scheduler(settings)
    scheduler.start()
    try:
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            runs = [r for r in kecl.store.runs() if r["trigger"] != "demo-base" and r["status"] != "running"]
            if runs:
                break
            time.sleep(2)
        else:
            raise RuntimeError("the scheduler did not finish a cycle in 30 minutes")
    finally:
        scheduler.shutdown(wait=True)
    later_run = runs[0]
    console.print(
        f"run {later_run['id']} ({later_run['trigger']}): {later_run['status']}, decision "
        f"{later_run['decision']}: " + "; ".join(later_run["reasons"] or [])
    )
    if later_run["error"]:
        console.print(f"[red]{later_run['error']}[/red]")

    console.rule("[bold]5. before and after")
    resolve_gold(kecl.store, probes)
    after = ask(kecl, probes)
    console.print(comparison_table(probes, before, after))
    summary = Table(title="acquisition and retention on these questions (top-1 entity correct / n)")
    for col in ("group", "closed-book before", "closed-book after", "augmented before", "augmented after"):
        summary.add_column(col)
    results: dict[str, Any] = {}
    for group in ("changed", "new", "unchanged"):
        hb, n = accuracy(probes, before, group, "before" if group == "unchanged" else "after")
        ha, _ = accuracy(probes, after, group, "after")
        results[group] = {"n": n, "before": hb, "after": ha}
        summary.add_row(
            group, f"{hb['closed']}/{n}", f"{ha['closed']}/{n}", f"{hb['augmented']}/{n}", f"{ha['augmented']}/{n}"
        )
    console.print(summary)
    cand = later_run["metrics"].get("candidate", {}).get("modes", {})
    act = later_run["metrics"].get("active", {}).get("modes", {})
    for mode in ("closed-book", "concat"):
        for group in ("new", "changed", "unchanged"):
            a, c = act.get(mode, {}).get(group), cand.get(mode, {}).get(group)
            if c and c["n"]:
                console.print(
                    f"cycle metrics, {mode:<11} {group:<9}: P@1 {a['p_at_1'] if a else float('nan'):.3f} → "
                    f"{c['p_at_1']:.3f} (n={c['n']})"
                )
    png = plot_history(kecl.store.runs(), kecl.store.checkpoints(), settings.runs_dir / "demo.png")
    console.print(f"plot of metrics over cycles and the model lineage: {png}")
    console.print(f"demo finished in {time.perf_counter() - t_start:.0f} s")
    kecl.close()
    return {"base_run": base_report.run_id, "later_run": later_run, "probes": results, "png": str(png)}
