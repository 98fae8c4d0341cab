"""``kecl init``, ``kecl ingest`` and ``kecl inspect …``: set up and look into the knowledge store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kecl.commands.common import (
    console,
    existing_store,
    load_settings,
    parse_date_option,
    print_json,
    quiet_model_loading,
)
from kecl.settings import Settings, default_toml

if TYPE_CHECKING:  # annotations only
    from knowledge import FactView

inspect_app = typer.Typer(help="Inspect the knowledge store: stats, entities, facts, documents.", no_args_is_help=True)


def init(
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing kecl.toml")] = False,
    adapt: Annotated[
        bool,
        typer.Option(
            "--adapt/--no-adapt",
            help="make the first usable checkpoint now (the default model's shipped adaptation, else trained: minutes)",
        ),
    ] = True,
) -> None:
    """Create KECL_HOME, a commented kecl.toml, the database schema and the first checkpoint."""
    from kecl.home import (  # deferred: SQLAlchemy, Alembic and networkx load only for commands that open the store
        ensure_home,
        open_store,
    )

    settings = load_settings()
    home = ensure_home(settings)
    config = home / "kecl.toml"
    if config.exists() and not force:
        console.print(f"kept existing {config} (use --force to overwrite)")
    else:
        config.write_text(default_toml(), encoding="utf-8")
        console.print(f"wrote {config}")
    store = open_store(settings)
    console.print(f"database ready: {settings.db_url}")
    store.close()
    if adapt:
        # deferred: the models (torch) load only when the first checkpoint is made
        from kecl.wiring import ensure_default_checkpoint

        ensure_default_checkpoint(settings)


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="corpus files, fact feeds or folders (recursive)")],
    vectors: Annotated[
        bool,
        typer.Option(
            "--vectors/--no-vectors",
            help="embed new passages here and store their vectors with them, so that every serving "
            "process reads them instead of embedding them itself (loads the embedder when a file "
            "brings new passages; off when processes.share_vectors is, or index.embedder is 'encoder')",
        ),
    ] = True,
) -> None:
    """Ingest corpora (.txt/.md/.jsonl) and fact feeds (.jsonl/.tsv); report what was skipped and why."""
    from kecl.home import (
        open_store,  # deferred: SQLAlchemy, Alembic and networkx load only for commands that open the store
    )
    from knowledge import iter_input_files  # deferred: with the store

    settings = load_settings()
    store = open_store(settings)
    files = list(iter_input_files(paths))
    embed = _chunk_embedder(settings) if vectors else None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("ingesting", total=len(files))
        try:
            summary = store.ingest_paths(files, on_file=lambda path, _s: progress.advance(task), embed=embed)
        finally:
            if embed is not None:
                embed.close()
    table = Table(title="ingested")
    table.add_column("what")
    table.add_column("count", justify="right")
    for name, value in summary.counts().items():
        if value:
            table.add_row(name.replace("_", " "), str(value))
    console.print(table)
    if summary.issues:
        issues = Table(title=f"skipped ({len(summary.issues)})", show_lines=False)
        issues.add_column("where", style="yellow")
        issues.add_column("reason")
        for issue in summary.issues:
            issues.add_row(f"{issue.path}:{issue.line}" if issue.line else issue.path, issue.reason)
        console.print(issues)
    store.close()


class _LazyChunkEmbedder:
    """The index's embedder for ``kecl ingest``, loaded at the first new passages (a feed of facts
    alone never loads torch)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedder: Any = None

    def __call__(self, texts: list[str]) -> Any:
        # deferred: torch and the embedder load only when a file brings new passages
        from kecl.follow import embed_chunks
        from kecl.wiring import make_embedder

        if self.embedder is None:
            quiet_model_loading()
            self.embedder = make_embedder(self.settings)
        return embed_chunks(self.embedder, texts)

    def close(self) -> None:
        if self.embedder is not None:
            self.embedder.close()


def _chunk_embedder(settings: Settings) -> _LazyChunkEmbedder | None:
    # "encoder" embeds with the active checkpoint: loading it here would cost a server's start-up,
    # so the serving processes embed those passages themselves.
    if not settings.processes.share_vectors or settings.index.embedder == "encoder":
        return None
    return _LazyChunkEmbedder(settings)


@inspect_app.command("stats")
def inspect_stats(
    as_json: Annotated[
        bool, typer.Option("--json", help="print JSON (the HTTP API's shape) instead of a table")
    ] = False,
) -> None:
    """Counts of everything in the store (as `GET /v1/stats` reports the store)."""
    store = existing_store(load_settings())
    if as_json:
        print_json(store.stats())
        return
    table = Table(title="knowledge store")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in store.stats().items():
        table.add_row(name, str(n))
    console.print(table)


@inspect_app.command("entity")
def inspect_entity(
    name: Annotated[str, typer.Argument(help="name, alias, external id or numeric id")],
    mentions: Annotated[int, typer.Option(help="how many mentions to show")] = 5,
    as_json: Annotated[
        bool, typer.Option("--json", help="print JSON (the HTTP API's shape) instead of a table")
    ] = False,
) -> None:
    """An entity's aliases, current facts, history and mentions (JSON: as `GET /v1/entities/{ref}`)."""
    store = existing_store(load_settings())
    eid = store.resolve_entity(name)
    view = store.get_entity(eid) if eid is not None else None
    if view is None:
        console.print(f"[red]no entity matches {name!r}[/red]")
        raise typer.Exit(1)
    if as_json:
        print_json(view.to_dict())
        return
    console.print(f"[bold]{view.name}[/bold]  id={view.id} key={view.key} type={view.type or '-'}")
    if view.description:
        console.print(view.description)
    console.print(f"aliases: {', '.join(view.aliases)}")
    _print_facts("current facts", view.facts)
    if view.history:
        _print_facts("history", view.history)
    console.print(f"mentions: {view.mention_count}")
    for m in store.mentions(view.id, limit=mentions):
        text = store.passage_texts([m["passage_id"]])[m["passage_id"]]
        console.print(f"  passage {m['passage_id']}: …{text[max(0, m['start'] - 40) : m['end'] + 40]}…")


@inspect_app.command("facts")
def inspect_facts(
    as_of: Annotated[str | None, typer.Option("--as-of", help="facts believed on this date (YYYY-MM-DD)")] = None,
    relation: Annotated[str | None, typer.Option("--relation", "-r", help="relation id, e.g. P36")] = None,
    entity: Annotated[str | None, typer.Option("--entity", "-e", help="subject or object entity")] = None,
    history: Annotated[bool, typer.Option("--history", help="include closed facts")] = False,
    limit: Annotated[int, typer.Option(min=1, help="at most this many")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="skip this many")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="print JSON (the HTTP API's shape) instead of a table")
    ] = False,
) -> None:
    """Facts, current by default; --as-of for a past date, --history for everything (closed and retracted)."""
    store = existing_store(load_settings())
    eid = None
    if entity is not None:
        eid = store.resolve_entity(entity)
        if eid is None:
            console.print(f"[red]no entity matches {entity!r}[/red]")
            raise typer.Exit(1)
    filters: dict[str, Any] = {
        "entity": eid,
        "relation": relation,
        "as_of": parse_date_option(as_of),
        "include_closed": history,
    }
    facts = store.facts(**filters, limit=limit, offset=offset)
    if as_json:
        total = store.count_facts(**filters)
        print_json({"total": total, "limit": limit, "offset": offset, "facts": [f.to_dict() for f in facts]})
        return
    _print_facts(f"facts{' as of ' + as_of if as_of else ''}", facts)


@inspect_app.command("documents")
def inspect_documents(
    limit: Annotated[int, typer.Option(min=1, help="at most this many")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="skip this many")] = 0,
    source: Annotated[str | None, typer.Option(help="only from this source")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print JSON (the HTTP API's shape) instead of a table")
    ] = False,
) -> None:
    """Documents with their source, date and passage count (JSON: as `GET /v1/documents`)."""
    store = existing_store(load_settings())
    if as_json:
        docs = store.documents(limit=limit, offset=offset, source=source)
        total = store.count_documents(source=source)
        print_json({"total": total, "limit": limit, "offset": offset, "documents": docs})
        return
    table = Table(title="documents")
    for col in ("id", "external id", "title", "published", "source", "passages"):
        table.add_column(col)
    for d in store.documents(limit=limit, offset=offset, source=source):
        table.add_row(
            str(d["id"]),
            d["external_id"] or "",
            d["title"] or "",
            d["published_at"] or "",
            d["source"] or "",
            str(d["passages"]),
        )
    console.print(table)


def _print_facts(title: str, facts: Sequence[FactView]) -> None:
    table = Table(title=title)
    for col in ("id", "subject", "relation", "object", "valid from", "valid to", "source"):
        table.add_column(col)
    for f in facts:
        table.add_row(
            str(f.id),
            f.subject,
            f.relation_id + f" ({f.relation})",
            f.object,
            str(f.valid_from or ""),
            str(f.valid_to or ""),
            f.source or "",
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``init``, ``ingest`` and ``inspect`` to the ``kecl`` app."""
    app.command()(init)
    app.command()(ingest)
    app.add_typer(inspect_app, name="inspect")
