"""Errors over real HTTP: always JSON, a request id on every response and beside every logged
traceback, 422 for what SQL cannot hold, 401 for any key that does not match, 503 when the
database refuses, and one bad query never fails the others."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import httpx
import pytest

from kecl.api import create_app
from kecl.settings import Settings
from tests.servers import LiveServer, free_port, start_server

KEY = {"X-API-Key": "secret-key-for-tests"}


def test_numbers_beyond_sql_and_odd_keys_are_clean_client_errors(live_server: LiveServer) -> None:
    c = live_server.client
    huge = str(2**64)
    for path, params in (
        (f"/v1/documents/{huge}", {}),
        (f"/v1/runs/{huge}", {}),
        ("/v1/runs", {"offset": huge}),
        ("/v1/facts", {"offset": huge}),
    ):
        r = c.get(path, params=params)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["status"] == 422
    r = c.get(f"/v1/entities/{huge}")
    assert r.status_code == 404 and "error" in r.json()
    r = c.get("/v1/entities/²³")  # digits int() reads but SQL ids are not
    assert r.status_code == 404
    doc = {"documents": [{"text": "Zagreb is the capital of Croatia."}]}
    # a header can only carry latin-1; a key outside ASCII is simply wrong, not a crash
    r = c.post("/v1/documents", json=doc, headers={"X-API-Key": "clé-secrète-très-longue".encode("latin-1")})  # type: ignore[dict-item]
    assert r.status_code == 401 and r.json()["error"]["message"] == "wrong API key"


def test_an_unexpected_error_is_json_with_the_request_id_that_is_logged(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("a bug in a route")

    live_server.app.add_api_route("/broken-for-test", broken)
    c = live_server.client
    with caplog.at_level(logging.ERROR, logger="kecl.api"):
        r = c.get("/broken-for-test", headers={"X-Request-ID": "trace-me-42"})
    assert r.status_code == 500
    assert r.headers["X-Request-ID"] == "trace-me-42"
    assert r.json()["error"]["status"] == 500 and "trace-me-42" in r.json()["error"]["message"]
    logged = [rec for rec in caplog.records if "trace-me-42" in rec.getMessage()]
    assert logged and logged[0].exc_info is not None and "a bug in a route" in str(logged[0].exc_info[1])
    # ids the client did not send (or sent with odd characters) are made up, and differ
    a, b = c.get("/healthz"), c.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert a.headers["X-Request-ID"] != b.headers["X-Request-ID"] and " " not in b.headers["X-Request-ID"]


def test_a_long_query_among_valid_ones_costs_them_nothing(live_server: LiveServer) -> None:
    """The reproduction: four clients with valid queries, one with a 400-word query."""
    url = live_server.url
    statuses: list[int] = []
    lock = threading.Lock()

    def client(text: str, n: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            for _ in range(n):
                r = c.post("/v1/query", json={"text": text, "mode": "closed-book"})
                with lock:
                    statuses.append(r.status_code)

    # 400 one-character tokens: within api.max_text_chars (500 here), beyond the encoder's 256
    texts = ["The capital of France is [MASK] ."] * 4 + ["." * 400 + " [MASK] ."]
    threads = [threading.Thread(target=client, args=(t, 4)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert statuses == [200] * 20, statuses


def test_a_read_only_database_answers_503_and_stores_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    writable = Settings(home=home, api={"api_key": KEY["X-API-Key"]})
    app = create_app(writable)
    port = free_port()
    server, thread = start_server(app, port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
        assert c.post("/v1/documents", json={"documents": [{"text": "first."}]}, headers=KEY).status_code == 201
    server.should_exit = True
    thread.join(timeout=30)

    db = home / "kecl.db"
    read_only = Settings(
        home=home, database_url=f"sqlite:///file:{db}?mode=ro&uri=true", api={"api_key": KEY["X-API-Key"]}
    )
    app = create_app(read_only)
    port = free_port()
    server, thread = start_server(app, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            r = c.post("/v1/documents", json={"documents": [{"text": "second."}]}, headers=KEY)
            assert r.status_code == 503, r.text
            assert "readonly" in r.json()["error"]["message"] and r.headers["X-Request-ID"] in r.text
            assert c.get("/v1/stats").json()["store"]["documents"] == 1
    finally:
        server.should_exit = True
        thread.join(timeout=30)
