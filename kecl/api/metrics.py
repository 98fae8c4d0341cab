"""``GET /metrics``: Prometheus metrics of one server process.

Requests (count and latency per route template and status) and query batch sizes are counted as
they happen; the state of the system (index size and its lag behind SQL, the active checkpoint,
update-cycle outcomes and durations) is read at scrape time, so cycles run by another process
(``kecl worker``, ``kecl update``) are reported too. Each app has its own registry, so several apps
in one process (the tests) do not collide.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterator

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kecl.services import Kecl

# a cycle's outcomes and durations are read from this many of the newest runs
_RUNS_SCANNED = 1000


class Metrics:
    """The app's registry and the metrics recorded on the request path."""

    def __init__(self, kecl: Kecl) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kecl_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "kecl_http_request_duration_seconds",
            "time to answer an HTTP request",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "kecl_query_batch_size",
            "queries answered together in one forward pass",
            buckets=(1, 2, 4, 8, 16, 32),
            registry=self.registry,
        )
        self.registry.register(StateCollector(kecl))


class StateCollector(Collector):
    """Index size and lag, the active checkpoint and update cycles, read when Prometheus scrapes."""

    def __init__(self, kecl: Kecl) -> None:
        self.kecl = kecl

    def collect(self) -> Iterator[Metric]:
        kecl = self.kecl
        passages = kecl.store.passage_count()
        yield GaugeMetricFamily("kecl_store_passages", "passages in the store (SQL)", value=passages)
        if kecl.index_loaded:
            vectors = len(kecl.index.index)
            yield GaugeMetricFamily("kecl_index_vectors", "vectors in this process's passage index", value=vectors)
            yield GaugeMetricFamily(
                "kecl_index_lag_passages", "passages in SQL not (yet) in this process's index", value=passages - vectors
            )
        added = CounterMetricFamily(
            "kecl_index_vectors_added",
            "vectors this process put into its index since it started, by how they came: read from SQL "
            "(stored by the process that received the passage) or embedded here",
            labels=["how"],
        )
        added.add_metric(["read"], kecl.vector_tally.read)
        added.add_metric(["embedded"], kecl.vector_tally.embedded)
        yield added
        encoder = kecl.serving_checkpoint()
        if encoder is not None:
            yield InfoMetricFamily(
                "kecl_active_checkpoint", "the checkpoint this process answers with", {"version": encoder}
            )
        runs = kecl.store.runs(limit=_RUNS_SCANNED)
        outcomes = GaugeMetricFamily(
            "kecl_update_cycles",
            f"update cycles by status and decision (the newest {_RUNS_SCANNED})",
            labels=["status", "decision"],
        )
        for (status, decision), n in sorted(Tally((r["status"], r["decision"] or "none") for r in runs).items()):
            outcomes.add_metric([status, decision], n)
        yield outcomes
        finished = next((r for r in runs if r["status"] != "running" and r["timings"]), None)
        if finished is not None:
            yield GaugeMetricFamily(
                "kecl_last_update_cycle_duration_seconds",
                "the newest finished cycle's duration, all stages",
                value=sum(finished["timings"].values()),
            )


class RecordRequests:
    """Pure ASGI middleware that counts each HTTP request and its latency by method, route template
    and status (a request whose app raised before answering counts as a 500, as it is answered)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI call, timing and counting it when it is HTTP."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            template = route_template(Request(scope))
            self.metrics.latency.labels(scope["method"], template).observe(time.perf_counter() - started)
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()


def route_template(request: Request) -> str:
    """The matched route's path with its parameters as ``{name}`` (bounded labels, unlike raw paths);
    "unmatched" when no route matched."""
    if request.scope.get("route") is None:
        return "unmatched"
    names = {str(value): name for name, value in request.scope.get("path_params", {}).items()}
    return "/".join(f"{{{names[part]}}}" if part in names else part for part in request.url.path.split("/"))


def instrument(app: FastAPI, kecl: Kecl) -> Metrics:
    """Count every request and serve ``/metrics`` (left out of the OpenAPI document: not JSON)."""
    metrics = Metrics(kecl)
    app.state.metrics = metrics

    app.add_middleware(RecordRequests, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
