"""What the API's middleware costs a request, in CPU on the interpreter lock every request shares.

The kecl app answers a request that fails validation (422: the whole middleware stack and
routing run, no model, no SQL) through httpx's ASGI transport, in process; beside it, the same
app with two pass-through ``BaseHTTPMiddleware`` layers added (Starlette's function middleware,
which runs each request through a task group and memory streams of its own), the baseline that
kecl's pure-ASGI body bound and request metrics are compared with. Medians over repetitions,
alternated.

    .venv/bin/python -m benchmarks.bench_middleware
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cpu_ms_per_request(app: Any, requests: int) -> float:
    """CPU milliseconds per invalid ``POST /v1/search`` answered by ``app``, after a warm-up."""
    import httpx

    body, headers = b'{"text": 1}', {"content-type": "application/json"}

    async def go() -> float:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for _ in range(50):
                await client.post("/v1/search", content=body, headers=headers)
            start = time.process_time()
            for _ in range(requests):
                r = await client.post("/v1/search", content=body, headers=headers)
            assert r.status_code == 422, r.text
            return (time.process_time() - start) / requests * 1000

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="300 requests, 3 repetitions")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.reps = 300, 3

    from fastapi import Request, Response

    from kecl.api.app import create_app
    from kecl.settings import Settings

    async def passthrough(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        return await call_next(request)

    with tempfile.TemporaryDirectory(prefix="kecl-bench-middleware-") as tmp:
        apps = {
            "kecl": create_app(Settings(home=Path(tmp) / "a")),
            "kecl + 2 BaseHTTPMiddleware": create_app(Settings(home=Path(tmp) / "b")),
        }
        for _ in range(2):
            apps["kecl + 2 BaseHTTPMiddleware"].middleware("http")(passthrough)
        runs: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(args.reps):
            for name, app in apps.items():
                runs[name].append(cpu_ms_per_request(app, args.requests))
    medians = {name: round(statistics.median(r), 3) for name, r in runs.items()}
    print(
        json.dumps(
            {
                "cpu_ms_per_request": medians,
                "runs": {name: [round(x, 3) for x in r] for name, r in runs.items()},
                "ratio": round(medians["kecl + 2 BaseHTTPMiddleware"] / medians["kecl"], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
