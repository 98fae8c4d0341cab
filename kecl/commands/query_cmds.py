"""``kecl serve`` (HTTP API) and ``kecl query`` (the same pipeline from the shell)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.table import Table

from kecl.commands.common import call_server, console, load_settings, parse_date_option, print_json
from kecl.settings import Settings

if TYPE_CHECKING:  # torch-heavy: annotations only
    from kecl.pipeline import Answer


def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default: api.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: api.port)")] = None,
    scheduler: Annotated[
        bool, typer.Option("--scheduler", help="also run the update scheduler in this process")
    ] = False,
    workers: Annotated[
        int, typer.Option(min=1, help="server processes on this port (each follows SQL like any replica)")
    ] = 1,
) -> None:
    """Serve the HTTP API with uvicorn (OpenAPI docs at /docs). Any number of servers may share one
    database and home; run the scheduler as one `kecl worker` beside them."""
    # deferred: the server loads the models; the other commands of this module start without them
    import uvicorn

    from kecl.api import create_app
    from kecl.wiring import make_scheduler

    settings = load_settings()
    bind_host, bind_port = host or settings.api.host, port or settings.api.port
    if not settings.api.api_key and not _is_loopback(bind_host):
        console.print(
            f"[yellow]warning: serving on {bind_host} without api.api_key: reads and /docs are open to anyone who can "
            "reach this address (mutations stay disabled); set KECL_API__API_KEY or bind to 127.0.0.1[/yellow]"
        )
    if workers > 1:
        if scheduler:
            raise typer.BadParameter("run the scheduler as `kecl worker`, not in each of several server processes")
        console.print(f"serving on http://{bind_host}:{bind_port} with {workers} processes (docs at /docs)")
        uvicorn.run(
            "kecl.api.app:create_app_from_settings",
            factory=True,
            workers=workers,
            host=bind_host,
            port=bind_port,
            log_level=settings.log_level.lower(),
        )
        return
    app = create_app(settings)
    if scheduler:
        # One scheduler per process, never per worker; scheduled cycles update this process's model.
        app.state.kecl.register_serving()
        app.state.scheduler = make_scheduler(settings)
    console.print(f"serving on http://{bind_host}:{bind_port} (docs at /docs)")
    uvicorn.run(
        app,
        host=bind_host,
        port=bind_port,
        log_level=settings.log_level.lower(),
        # JSON logs: uvicorn's records go through our handler instead of its own text format
        log_config=None if settings.log_json else uvicorn.config.LOGGING_CONFIG,
    )


def _is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def query(
    text: Annotated[str, typer.Argument(help='a cloze query, e.g. "The capital of Croatia is [MASK] ."')],
    mode: Annotated[str, typer.Option(help="closed-book, concat or tree")] = "concat",
    k: Annotated[int, typer.Option("-k", help="evidence passages to inject")] = 4,
    hops: Annotated[int, typer.Option(help="graph hops for facts")] = 1,
    as_of: Annotated[str | None, typer.Option("--as-of", help="facts believed on this date (YYYY-MM-DD)")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="predictions per [MASK]")] = 5,
    explain: Annotated[bool, typer.Option("--explain", help="attention over the evidence")] = False,
    evidence_boost: Annotated[
        float | None,
        typer.Option(
            "--evidence-boost",
            min=0.0,
            help="logit bonus for evidence words not in the query (default: the "
            "model.evidence_boost setting; 0: the encoder alone)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (as `POST /v1/query` answers)")] = False,
) -> None:
    """Answer a cloze query with knowledge: predictions, facts used, evidence, injected input.

    With `api.server_url` set (KECL_API__SERVER_URL), the running server answers: no models load here."""
    if mode not in ("closed-book", "concat", "tree"):
        raise typer.BadParameter(f"{mode!r}: expected closed-book, concat or tree", param_hint="--mode")
    settings = load_settings()
    date = parse_date_option(as_of)
    if settings.api.server_url:
        body = {"text": text, "mode": mode, "k": k, "hops": hops, "as_of": date, "top_k": top_k}
        answer = SimpleNamespace(
            **call_server(settings, "/v1/query", {**body, "explain": explain, "evidence_boost": evidence_boost})
        )
    else:
        local = _answer_here(settings, text, mode, k, hops, date, top_k, explain, evidence_boost)
        answer = SimpleNamespace(**local.to_dict())
    if as_json:
        print_json(vars(answer))
        return
    entities = getattr(answer, "entities", None) or []
    if entities:
        table = Table(title=f"answers ({answer.mode}): whole names, best first")
        for col in ("answer", "entity", "score", "source"):
            table.add_column(col, justify="right" if col == "score" else "left")
        for e in entities[:top_k]:
            table.add_row(e["text"], str(e["entity_id"] or "-"), f"{e['score']:.3f}", e["source"])
        console.print(table)
    for i, preds in enumerate(answer.predictions):
        table = Table(title=f"[MASK] #{i + 1} ({answer.mode}): word-pieces")
        table.add_column("token")
        table.add_column("score", justify="right")
        for p in preds:
            table.add_row(p["token"], f"{p['score']:.3f}")
        console.print(table)
    if answer.facts:
        console.print("[bold]facts used[/bold]")
        for f in answer.facts:
            console.print(
                f"  {f['text']}  [dim](fact {f['id']}, {f['source'] or 'no source'}, relevance {f['relevance']})[/dim]"
            )
    if answer.evidence:
        console.print("[bold]evidence[/bold]")
        for e in answer.evidence:
            console.print(
                f"  [{e['passage_id']}] {e['text'][:160]}  [dim](doc {e['document_id']} {e['title'] or ''}, {e['score']:.4f})[/dim]"
            )
    console.print(f"[bold]injected input[/bold]: {answer.injected_input}")
    if answer.explanation:
        console.print("[bold]attention over the evidence[/bold] (rollout from the first [MASK])")
        for seg in answer.explanation:
            console.print(f"  {seg['weight']:.3f}  {seg['text'][:120]}")
    console.print(f"[dim]snapshot: {answer.snapshot}[/dim]")


def _answer_here(
    settings: Settings,
    text: str,
    mode: str,
    k: int,
    hops: int,
    as_of: dt.date | None,
    top_k: int,
    explain: bool,
    evidence_boost: float | None,
) -> Answer:
    # deferred: torch and the models load only when a query is answered here, not for --help
    from kecl.pipeline import Mode, QueryOptions
    from kecl.services import Kecl

    kecl = Kecl(settings)
    opts = QueryOptions(
        mode=cast(Mode, mode),  # checked by the caller
        k_passages=k,
        hops=hops,
        as_of=as_of,
        top_k=top_k,
        explain=explain,
        evidence_boost=evidence_boost,
    )
    try:
        return kecl.answer([text], opts)[0]
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    finally:
        kecl.close()


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``query`` to the ``kecl`` app."""
    app.command()(serve)
    app.command()(query)
