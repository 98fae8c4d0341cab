"""The demo story on the embedded default data (``make demo``).

Stage one (the foundation): ingest the base slice, show what the store holds, ingest the later
slice, show which facts changed (with their history and "as of" views), and show that bad input
is reported and skipped. Later stages add training, queries and a scheduled update cycle.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kecl.settings import Settings
from kecl.wiring import ensure_home, open_store
from knowledge import KnowledgeStore

DEMO_DATA = Path(__file__).parent / "demo_data"
MARKER = ".kecl-demo"


def prepare_home(home: Path) -> Settings:
    """A fresh demo home. Refuses to wipe a folder that is not a previous demo home."""
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).exists():
            raise SystemExit(f"{home} exists and is not a kecl demo home; choose another --home")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("created by `kecl demo`; removed and rebuilt by the next run\n")
    settings = Settings(home=home, database_url=None)
    ensure_home(settings)
    return settings


def store_table(store: KnowledgeStore, title: str) -> Table:
    table = Table(title=title)
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in store.stats().items():
        table.add_row(name, f"{n:,}")
    return table


def changed_facts_table(
    store: KnowledgeStore, closed_ids: list[int], before: dt.date, after: dt.date, limit: int = 20
) -> Table:
    """For each fact closed by the later slice: what the store believed before and after."""
    table = Table(title=f"facts that changed (as of {before} → as of {after})")
    for col in ("subject", "relation", f"as of {before}", f"as of {after}", "changed on"):
        table.add_column(col)
    closed = store.facts(ids=closed_ids, include_closed=True, limit=None)
    for f in closed[:limit]:
        now = store.facts(subject=f.subject_id, relation=f.relation_id, as_of=after)
        table.add_row(f.subject, f.relation, f.object, ", ".join(n.object for n in now) or "-", str(f.valid_to))
    if len(closed) > limit:
        table.caption = f"… and {len(closed) - limit} more (kecl inspect facts --history)"
    return table


def run_demo(home: Path, console: Console | None = None) -> dict:
    """Run the demo in ``home`` (rebuilt from scratch); returns the numbers it printed."""
    console = console or Console()
    settings = prepare_home(home)
    store = open_store(settings)
    console.rule("[bold]1. ingest the base slice")
    base = store.ingest_paths([DEMO_DATA / "base"])
    console.print(f"base slice: {base.entities_added} entities, {base.facts_added} facts, "
                  f"{base.documents_added} documents → {base.passages_added} passages, {base.mentions_added} mentions")
    console.print(store_table(store, "the store after the base slice"))

    console.rule("[bold]2. ingest the later slice")
    later = store.ingest_paths([DEMO_DATA / "later"])
    console.print(f"later slice: {later.entities_added} new entities, {later.entities_updated} renamed/updated, "
                  f"{later.facts_added} facts added, {later.facts_closed} facts closed (superseded)")
    console.print(changed_facts_table(store, later.closed_fact_ids, dt.date(2020, 1, 1), dt.date.today()))

    console.rule("[bold]3. bad input is reported and skipped")
    bad = store.ingest_paths([DEMO_DATA / "bad"])
    for issue in bad.issues:
        console.print(f"  [yellow]skipped[/yellow] {issue}")
    console.print(f"and the rest went in: {bad.documents_added} documents, {bad.facts_added} new facts "
                  f"({bad.facts_unchanged} already known)")

    console.rule("[bold]4. ingesting the same data again changes nothing")
    before = store.stats()
    store.ingest_paths([DEMO_DATA / "base", DEMO_DATA / "later"])
    console.print("unchanged" if store.stats() == before else "[red]changed![/red]")
    console.print(store_table(store, "the store now"))
    result = {"base": base.counts(), "later": later.counts(), "bad_issues": len(bad.issues), "stats": store.stats()}
    store.close()
    return result
