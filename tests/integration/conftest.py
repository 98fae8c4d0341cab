"""Integration fixtures: a real uvicorn server on a free loopback port, over a real store, index
and the packaged model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kecl.api import create_app
from kecl.settings import Settings
from tests.servers import LiveServer, free_port, start_server


@pytest.fixture()
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    settings = Settings(
        home=tmp_path / "home",
        api={"api_key": "secret-key-for-tests", "max_body_bytes": 20_000, "max_k": 20, "max_text_chars": 500},
        train={"steps": 20},  # these tests check the API's contract, not what a full cycle learns
    )
    app = create_app(settings)
    port = free_port()
    server, thread = start_server(app, port)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=60) as client:
        yield LiveServer(url, app, client)
    server.should_exit = True
    thread.join(timeout=30)
