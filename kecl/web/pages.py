"""The read pages of the web interface: search, entity, graph, ask, document, runs, ingest form, stats.

Every page is a GET with its state in the query string, so any view can be linked to. Bad input
(an unknown entity, a malformed date, a query without [MASK]) is shown on the page with a 4xx status.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from kecl.services import Kecl
from kecl.web import session as sessions
from kecl.web.views import ask_view, graph_view, highlight, runs_view, search_view, stats_view
from knowledge import FactView

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["highlight"] = highlight


def cloze(fact: FactView) -> str | None:
    """The fact as a cloze query with its object masked (None without a template), for "does the
    model know this?" links from an entity's facts to the Ask page."""
    if not fact.template or "[Y]" not in fact.template:
        return None
    return fact.template.replace("[X]", fact.subject).replace("[Y]", "[MASK]")


templates.env.globals["cloze"] = cloze

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


def get_kecl(request: Request) -> Kecl:
    """The app's :class:`Kecl` (the pages share the JSON API's, set by ``create_app``)."""
    kecl: Kecl = request.app.state.kecl
    return kecl


KeclDep = Annotated[Kecl, Depends(get_kecl)]


class PageError(Exception):
    """A request the page cannot answer: shown as the page's error with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """``template`` with the page's context plus the write session (for forms) and the nav state."""
    settings = request.app.state.settings
    session = sessions.current_session(request, settings.api.api_key)
    context.update(session=session, key_configured=bool(settings.api.api_key), path=request.url.path)
    return templates.TemplateResponse(request, template, context, status_code=status)


def parse_date(value: str | None) -> dt.date | None:
    """A YYYY-MM-DD date from a query parameter (None for empty); raises PageError(400) otherwise."""
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise PageError(400, f"as_of={value!r} is not a date: write it as YYYY-MM-DD") from None


def resolve(kecl: Kecl, ref: str) -> int:
    """The entity ``ref`` names (id, external id, name or alias); PageError(404) if none."""
    eid = kecl.store.resolve_entity(ref)
    if eid is None:
        raise PageError(404, f"no entity {ref!r}: search for it instead")
    return eid


@router.get("/")
def search_page(request: Request, kecl: KeclDep, q: str = "") -> HTMLResponse:
    """Search entities, documents and passages; results grouped by kind."""
    if len(q) > request.app.state.settings.api.max_text_chars:
        raise PageError(
            422, f"the query has {len(q)} characters; the limit is {request.app.state.settings.api.max_text_chars}"
        )
    return render(request, "search.html", results=search_view(kecl, q), q=q)


@router.get("/entity/{ref}")
def entity_page(request: Request, kecl: KeclDep, ref: str, as_of: str | None = None) -> HTMLResponse:
    """An entity's names, facts as of a date, timeline with provenance, and the passages mentioning it."""
    date = parse_date(as_of)
    eid = resolve(kecl, ref)
    page = kecl.store.entity_page(eid, as_of=date)
    if page is None:  # deleted between the two reads
        raise PageError(404, f"no entity {ref!r}")
    return render(request, "entity.html", page=page, as_of=as_of or "", today=dt.date.today().isoformat())


@router.get("/graph/{ref}")
def graph_page(
    request: Request,
    kecl: KeclDep,
    ref: str,
    hops: Annotated[int, Query(ge=1, le=3)] = 1,
    fanout: Annotated[int, Query(ge=1, le=200)] = 25,
    as_of: str | None = None,
) -> HTMLResponse:
    """The interactive k-hop neighbourhood of an entity, as of a date, with a fan-out cap."""
    date = parse_date(as_of)
    eid = resolve(kecl, ref)
    entity = kecl.store.entity_page(eid, fact_limit=0, passage_limit=0)
    name = entity.name if entity is not None else ref
    graph = graph_view(kecl, eid, name, hops=hops, as_of=date, fanout=fanout)
    return render(request, "graph.html", graph=graph, as_of=as_of or "", elements=graph.elements())


@router.get("/ask")
def ask_page(request: Request, kecl: KeclDep, q: str = "", as_of: str | None = None) -> HTMLResponse:
    """A cloze query answered closed-book, with concatenated evidence and with tree injection, side by side."""
    date = parse_date(as_of)
    limits = request.app.state.settings.api
    if not q:
        return render(request, "ask.html", q="", as_of=as_of or "", view=None)
    if len(q) > limits.max_text_chars:
        raise PageError(422, f"the query has {len(q)} characters; the limit is {limits.max_text_chars}")
    if "[mask]" not in q.lower():
        raise PageError(422, "the query has no [MASK]: write the word to predict as [MASK]")
    return render(request, "ask.html", q=q, as_of=as_of or "", view=ask_view(kecl, q, as_of=date))


@router.get("/document/{document_id}")
def document_page(request: Request, kecl: KeclDep, document_id: int) -> HTMLResponse:
    """A stored document with its passages."""
    doc = kecl.store.get_document(document_id)
    if doc is None:
        raise PageError(404, f"no document {document_id}")
    return render(request, "document.html", doc=doc)


@router.get("/runs")
def runs_page(request: Request, kecl: KeclDep, message: str = "") -> HTMLResponse:
    """Update cycles with their metrics plotted over cycles, and the checkpoint lineage."""
    view = runs_view(kecl)
    return render(request, "runs.html", view=view, plot=view.plot_data(), message=message)


@router.get("/ingest")
def ingest_form(request: Request) -> HTMLResponse:
    """The upload / paste form (writes need the API key)."""
    return render(request, "ingest.html", result=None)


@router.get("/stats")
def stats_page(request: Request, kecl: KeclDep) -> HTMLResponse:
    """Counts, the index and its drift against SQL, the database, the next cycle, the active model."""
    return render(request, "stats.html", stats=stats_view(kecl))


async def page_error(request: Request, exc: Exception) -> HTMLResponse:
    """A :class:`PageError` as the error page, with its status."""
    assert isinstance(exc, PageError)
    return render(request, "error.html", status=exc.status, message=exc.message)
