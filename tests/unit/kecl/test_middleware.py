"""The API's pure-ASGI middleware over a small FastAPI app, called through httpx's ASGI
transport (real ASGI messages, no socket): the body bound and the request metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from kecl.api.metrics import RecordRequests
from kecl.api.middleware import BodyLimitMiddleware

LIMIT = 100


def echo_app() -> tuple[FastAPI, list[int]]:
    """An app that answers with the length of the body it read; ``seen`` lists those lengths.
    FastAPI, as kecl's API is: its routes name themselves in the ASGI scope, where the metrics
    read the route template."""
    seen: list[int] = []
    app = FastAPI()

    @app.api_route("/echo", methods=["GET", "POST"])
    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        seen.append(len(body))
        return JSONResponse({"read": len(body)})

    @app.get("/fail/{n}")
    async def fail(n: int) -> JSONResponse:
        raise RuntimeError(f"boom {n}")

    app.state.settings = SimpleNamespace(api=SimpleNamespace(max_body_bytes=LIMIT))
    return app, seen


def call(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_a_declared_body_over_the_limit_is_refused_before_the_app_reads_it() -> None:
    app, seen = echo_app()
    app.add_middleware(BodyLimitMiddleware)
    r = call(app, "POST", "/echo", content=b"x" * (LIMIT + 1))
    assert r.status_code == 413
    assert r.json()["error"]["message"] == f"request body of {LIMIT + 1} bytes exceeds the limit of {LIMIT} bytes"
    assert seen == []
    r = call(app, "POST", "/echo", content=b"x" * LIMIT)
    assert r.status_code == 200 and r.json() == {"read": LIMIT}


def test_a_body_without_a_length_is_bounded_while_read_and_handed_on_whole() -> None:
    app, seen = echo_app()
    app.add_middleware(BodyLimitMiddleware)
    r = call(app, "POST", "/echo", content=chunks(b"a" * 60, b"b" * 60))
    assert r.status_code == 413 and "exceeds the limit of 100 bytes" in r.json()["error"]["message"]
    assert seen == []
    r = call(app, "POST", "/echo", content=chunks(b"a" * 40, b"b" * 50))
    assert r.status_code == 200 and r.json() == {"read": 90}
    assert seen == [90]


def test_reads_are_not_bounded() -> None:
    app, seen = echo_app()
    app.add_middleware(BodyLimitMiddleware)
    r = call(app, "GET", "/echo", content=b"x" * (LIMIT * 3))
    assert r.status_code == 200 and seen == [LIMIT * 3]


def test_requests_are_counted_by_route_template_and_status_a_raised_error_as_500() -> None:
    from kecl.api.metrics import Metrics

    app, _ = echo_app()

    class NoState:  # Metrics reads the store only when scraped: requests alone never touch it
        pass

    metrics = Metrics(NoState())  # type: ignore[arg-type]
    app.add_middleware(RecordRequests, metrics=metrics)
    assert call(app, "POST", "/echo", content=b"hi").status_code == 200
    assert call(app, "GET", "/fail/7").status_code == 500
    assert call(app, "GET", "/nowhere").status_code == 404

    def value(name: str, labels: dict[str, str]) -> float | None:
        # the request metrics alone: the registry's state collector would read the store
        for metric in (*metrics.requests.collect(), *metrics.latency.collect()):
            for sample in metric.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return None

    assert value("kecl_http_requests_total", {"method": "POST", "route": "/echo", "status": "200"}) == 1
    assert value("kecl_http_requests_total", {"method": "GET", "route": "/fail/{n}", "status": "500"}) == 1
    assert value("kecl_http_requests_total", {"method": "GET", "route": "unmatched", "status": "404"}) == 1
    assert value("kecl_http_request_duration_seconds_count", {"method": "GET", "route": "/fail/{n}"}) == 1
