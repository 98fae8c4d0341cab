"""``kecl index build|status|reconcile`` and ``kecl search``: the passage index and hybrid retrieval."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from kecl.commands.common import (
    call_server,
    console,
    existing_store,
    load_settings,
    parse_date_option,
    print_json,
    quiet_model_loading,
)
from kecl.home import current_index_folder
from kecl.settings import Settings

if TYPE_CHECKING:  # torch-heavy: annotations only
    from kecl.search import SearchHit


index_app = typer.Typer(
    help="The FAISS passage index: build, status, reconcile with the database.", no_args_is_help=True
)


@index_app.command("build")
def index_build(
    kind: Annotated[str | None, typer.Option(help="flat, hnsw or ivfpq (default: settings, else by size)")] = None,
) -> None:
    """Embed every passage in the database and write a new index (replacing the old one atomically)."""
    # deferred: embedding loads torch and the embedder; `index status` does without them
    from kecl.wiring import build_index_from_store, make_embedder
    from retrieval import IndexHandle

    settings = load_settings()
    if kind is not None and kind not in ("flat", "hnsw", "ivfpq"):
        raise typer.BadParameter(f"{kind!r} is not an index kind (flat, hnsw, ivfpq)", param_hint="--kind")
    store = existing_store(settings)
    quiet_model_loading()
    embedder = make_embedder(settings)
    start = time.perf_counter()
    through = store.settled_passage_event_id(settings.processes.gap_seconds)  # the build covers SQL from here
    index = build_index_from_store(settings, store, embedder, kind=kind)
    _publish_or_exit(settings, store, IndexHandle(index, embedder), through)
    console.print(
        f"built {index.kind} index: {len(index)} passages, embedder {index.embedder_version}, "
        f"{time.perf_counter() - start:.1f}s -> {current_index_folder(settings, store)}"
    )
    store.close()


def _publish_or_exit(settings: Any, store: Any, handle: Any, through: int) -> None:
    """Publish ``handle`` as a new generation, or exit 1 naming the process that publishes."""
    from kecl.publish import PUBLISHER_LOCK, publish_once  # deferred: FAISS

    if not publish_once(settings, store, handle, lambda: through):
        console.print(
            f"[red]the index publisher ({store.lock_holder(PUBLISHER_LOCK)}) writes this home's index; "
            "it follows the database by itself — stop it to rebuild by hand[/red]"
        )
        store.close()
        raise typer.Exit(1)


@index_app.command("status")
def index_status(
    verify: Annotated[
        bool, typer.Option(help="re-hash the index files against the manifest (--no-verify: the manifest only)")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """The saved index's manifest compared with the database, its files checked against their
    checksums (no embedding, no changes). Exit code 1 when the index is missing or damaged."""
    from retrieval import IndexLoadError, read_manifest, verify_files  # deferred: FAISS, for the manifest only

    settings = load_settings()
    store = existing_store(settings)
    folder = current_index_folder(settings, store)
    sql_count, sql_max = store.passage_count(), store.max_passage_id()
    store.close()
    try:
        m = read_manifest(folder)
        problems = verify_files(folder) if verify else None
    except IndexLoadError as e:
        if as_json:
            typer.echo(json.dumps({"error": str(e), "database_passages": sql_count}))
        else:
            console.print(f"[yellow]{e}[/yellow]")
            console.print(f"database: {sql_count} passages")
        raise typer.Exit(1) from e
    if problems is None:
        files = "not verified (--no-verify)"
    elif problems:
        files = "damaged: " + "; ".join(problems) + " — rebuild with `kecl index build`"
    else:
        files = "verified (sha256)"
    in_step = (m.count, m.max_id) == (sql_count, sql_max or -1) and not problems
    rows = {
        "kind": m.kind,
        "embedder": m.embedder_version or "?",
        "dimension": m.dim,
        "vectors": m.count,
        "highest id": m.max_id,
        "database passages": sql_count,
        "database highest id": sql_max,
        "saved": dt.datetime.fromtimestamp(m.created_at).isoformat(timespec="seconds"),
        "files": files,
        "in step": "yes" if in_step else "no: run `kecl index build`" if problems else "no: run `kecl index reconcile`",
    }
    if as_json:
        typer.echo(json.dumps({k.replace(" ", "_"): v for k, v in rows.items()} | {"damaged": problems or []}))
    else:
        table = Table(title=f"index at {folder}")
        table.add_column("what")
        table.add_column("value")
        for name, value in rows.items():
            table.add_row(name, str(value))
        console.print(table)
    if problems:
        raise typer.Exit(1)


@index_app.command("reconcile")
def index_reconcile() -> None:
    """Embed passages the index lacks, drop ids the database no longer has, save (builds if needed)."""
    # deferred: embedding loads torch and the embedder
    from kecl.wiring import build_index_from_store, make_embedder, stored_vectors_of
    from retrieval import EmbedderMismatchError, IndexHandle, IndexLoadError, load_index, reconcile

    settings = load_settings()
    store = existing_store(settings)
    quiet_model_loading()
    embedder = make_embedder(settings)
    through = store.settled_passage_event_id(settings.processes.gap_seconds)
    try:
        index = load_index(current_index_folder(settings, store))
        report = reconcile(
            index, embedder, store.passage_ids(), store.passage_texts, fetch_vectors=stored_vectors_of(settings, store)
        )
    except (IndexLoadError, EmbedderMismatchError) as e:
        console.print(f"[yellow]{e}[/yellow]\nrebuilding")
        index = build_index_from_store(settings, store, embedder)
        _publish_or_exit(settings, store, IndexHandle(index, embedder), through)
        console.print(f"built {index.kind} index with {len(index)} passages")
        store.close()
        return
    if report.changed:
        _publish_or_exit(settings, store, IndexHandle(index, embedder), through)
    console.print(
        f"added {report.added}"
        + (f" ({report.read} of them stored vectors, read)" if report.read else "")
        + f", removed {report.removed}"
        + (", compacted" if report.compacted else "")
        + f"; {report.count} passages indexed"
        + (
            " [yellow](IVF-PQ outgrew its training sample: run `kecl index build`)[/yellow]"
            if report.needs_retrain
            else ""
        )
    )
    store.close()


def search(
    query: Annotated[str, typer.Argument(help="the query text")],
    k: Annotated[int, typer.Option("-k", "--k", help="passages to return")] = 5,
    source: Annotated[str | None, typer.Option(help="only passages from this source")] = None,
    since: Annotated[str | None, typer.Option(help="published on or after (YYYY-MM-DD)")] = None,
    until: Annotated[str | None, typer.Option(help="published on or before (YYYY-MM-DD)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Hybrid passage search (dense + full-text + entity mentions, fused): passages with scores and documents.

    With `api.server_url` set (KECL_API__SERVER_URL), the running server answers: no models load here."""
    settings = load_settings()
    if k <= 0:
        raise typer.BadParameter("must be positive", param_hint="-k")
    date_from, date_to = parse_date_option(since, "--since"), parse_date_option(until, "--until")
    if settings.api.server_url:
        body = {"text": query, "k": k, "source": source, "published_from": date_from, "published_to": date_to}
        hits = call_server(settings, "/v1/search", body)["hits"]
    else:
        hits = [h.to_dict() for h in _search_here(settings, query, k, source, date_from, date_to)]
    if as_json:
        print_json({"hits": hits})
        return
    if not hits:
        console.print("no passages found")
        return
    table = Table(title=f"{len(hits)} passages for {query!r}", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("found by")
    table.add_column("passage")
    table.add_column("document")
    for i, h in enumerate(hits, start=1):
        found = ", ".join(f"{c}#{r}" for c, r in h["ranks"].items())
        doc = " · ".join(str(x) for x in (h["title"], h["source"], h["published_at"], f"doc {h['document_id']}") if x)
        table.add_row(str(i), f"{h['score']:.4f}", found, h["text"], doc)
    console.print(table)


def _search_here(
    settings: Settings, query: str, k: int, source: str | None, date_from: dt.date | None, date_to: dt.date | None
) -> list[SearchHit]:
    # deferred: search loads torch, FAISS and the embedder
    from kecl.search import hybrid_search
    from kecl.wiring import make_embedder, open_index

    store = existing_store(settings)
    quiet_model_loading()
    embedder = make_embedder(settings)
    handle = open_index(settings, store, embedder)
    allowed = None
    if source or date_from or date_to:
        allowed = store.passage_ids_where(source=source, published_from=date_from, published_to=date_to)
    hits = hybrid_search(query, k, store=store, index_handle=handle, weights=settings.retrieval, allowed_ids=allowed)
    store.close()
    return hits


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `kecl` app."""
    app.add_typer(index_app, name="index")
    app.command("search")(search)
