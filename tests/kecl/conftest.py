"""A real uvicorn server on a free loopback port, over a real store and index."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


@dataclass
class LiveServer:
    url: str
    app: object
    client: httpx.Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(app, port: int) -> tuple[object, threading.Thread]:  # type: ignore[no-untyped-def]
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return server, thread


@pytest.fixture()
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    from kecl.api import create_app
    from kecl.settings import Settings

    settings = Settings(
        home=tmp_path / "home", api={"api_key": "secret", "max_body_bytes": 20_000, "max_k": 20, "max_text_chars": 500}
    )
    app = create_app(settings)
    port = free_port()
    server, thread = start_server(app, port)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=60) as client:
        yield LiveServer(url, app, client)
    server.should_exit = True  # type: ignore[attr-defined]
    thread.join(timeout=30)
