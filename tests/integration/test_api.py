"""The HTTP API over real HTTP against a running uvicorn server (real store, real FAISS index)."""

from __future__ import annotations

from tests.servers import LiveServer

KEY = {"X-API-Key": "secret-key-for-tests"}

FEED = {
    "relations": [
        {"id": "P38", "label": "currency", "template": "The currency of [X] is the [Y] .", "functional": True},
        {"id": "P36", "label": "capital", "template": "The capital of [X] is [Y] .", "functional": True},
    ],
    "entities": [
        {"id": "croatia", "name": "Croatia", "aliases": ["Republic of Croatia"], "type": "country"},
        {"id": "kuna", "name": "kuna"},
        {"id": "euro", "name": "euro"},
        {"id": "zagreb", "name": "Zagreb"},
    ],
    "facts": [
        {"subject": "croatia", "relation": "P38", "object": "kuna", "valid_from": "1994-05-30"},
        {"subject": "croatia", "relation": "P36", "object": "zagreb"},
    ],
}


def test_ingest_and_inspect_over_http(live_server: LiveServer) -> None:
    c = live_server.client
    assert c.get("/healthz").json()["status"] == "ok"
    r = c.post("/v1/facts", json=FEED, headers=KEY)
    assert r.status_code == 201, r.text
    assert r.json()["facts_added"] == 2 and r.json()["issues"] == []
    r = c.post(
        "/v1/facts",
        json={
            "facts": [
                {"subject": "croatia", "relation": "P38", "object": "euro", "valid_from": "2023-01-01"},
                {"subject": "croatia", "relation": "P404", "object": "euro"},
            ]
        },
        headers=KEY,
    )
    body = r.json()
    assert body["facts_added"] == 1 and body["facts_closed"] == 1
    assert body["issues"] == ["facts[1]: unknown relation 'P404': define it in a relation record first"]

    found = c.get("/v1/entities", params={"q": "republic of cro"}).json()["entities"]
    assert [e["key"] for e in found] == ["croatia"]
    entity = c.get("/v1/entities/croatia").json()
    assert {f["object"] for f in entity["facts"]} == {"euro", "Zagreb"}
    assert [(f["object"], f["valid_to"]) for f in entity["history"]] == [("kuna", "2023-01-01")]
    assert c.get(f"/v1/entities/{entity['id']}").json()["key"] == "croatia"
    assert (entity["facts_total"], entity["history_total"]) == (2, 1)
    page = c.get("/v1/entities/croatia", params={"limit": 1}).json()
    assert (len(page["facts"]), page["facts_total"]) == (1, 2)
    assert page["facts"][0]["id"] == min(f["id"] for f in entity["facts"])
    assert c.get("/v1/entities/croatia", params={"limit": 0}).status_code == 422

    past = c.get("/v1/facts", params={"subject": "croatia", "relation": "P38", "as_of": "2010-05-01"}).json()["facts"]
    assert [f["object"] for f in past] == ["kuna"]
    assert past[0]["text"] == "The currency of Croatia is the kuna ."
    hood = c.get("/v1/entities/zagreb/neighbourhood", params={"hops": 2}).json()["facts"]
    assert {f["object"] for f in hood} == {"Zagreb", "euro"}

    r = c.post(
        "/v1/documents",
        json={
            "documents": [
                {
                    "text": "Zagreb is the capital and largest city of Croatia.",
                    "title": "Zagreb",
                    "published_at": "2024-02-01",
                },
                {"text": "The Sava river flows through Zagreb."},
            ]
        },
        headers=KEY,
    )
    assert r.status_code == 201, r.text
    pids = r.json()["passage_ids"]
    assert len(pids) == 2 and r.json()["mentions_added"] == 3
    doc = c.get("/v1/documents/1").json()
    assert doc["title"] == "Zagreb" and doc["passages"][0]["id"] == pids[0]
    hits = c.post("/v1/search", json={"text": "Which river flows through the city?", "k": 1}).json()["hits"]
    assert hits[0]["passage_id"] == pids[1]
    dated = c.post("/v1/search", json={"text": "river", "k": 5, "published_from": "2024-01-01"}).json()["hits"]
    assert [h["passage_id"] for h in dated] == [pids[0]]
    stats = c.get("/v1/stats").json()
    assert stats["store"]["facts_closed"] == 1 and stats["index"]["vectors"] == 2


def test_errors_are_clear_json(live_server: LiveServer) -> None:
    c = live_server.client
    doc = {"documents": [{"text": "x"}]}
    r = c.post("/v1/documents", json=doc)
    assert r.status_code == 401 and "missing API key" in r.json()["error"]["message"]
    r = c.post("/v1/documents", json=doc, headers={"X-API-Key": "nope"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "wrong API key"
    r = c.post("/v1/documents", json={"documents": [{"text": "y" * 30_000}]}, headers=KEY)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]["message"]
    r = c.post("/v1/facts", content=b'{"facts": [', headers={**KEY, "Content-Type": "application/json"})
    assert r.status_code == 422 and "malformed JSON" in r.json()["error"]["message"]
    r = c.post("/v1/facts", json={"facts": [{"subject": "a", "relation": "b"}]}, headers=KEY)
    assert r.status_code == 422 and "exactly one of 'object' or 'object_literal'" in r.json()["error"]["message"]
    r = c.get("/v1/entities/atlantis")
    assert r.status_code == 404 and "no entity 'atlantis'" in r.json()["error"]["message"]
    r = c.get("/v1/documents/999")
    assert r.status_code == 404
    r = c.post("/v1/search", json={"text": "q", "k": 500})
    assert r.status_code == 422 and "k=500 exceeds the limit of 20" in r.json()["error"]["message"]
    r = c.post("/v1/search", json={"text": "q" * 501})
    assert r.status_code == 422 and "limit is 500" in r.json()["error"]["message"]
    r = c.post("/v1/query", json={"text": "A [MASK] .", "evidence_boost": -1})
    assert r.status_code == 422 and "evidence_boost" in r.json()["error"]["message"]
    r = c.get("/v1/entities/x/neighbourhood", params={"hops": 9})
    assert r.status_code == 422 and "hops" in r.json()["error"]["message"]
    assert c.get("/nowhere").json()["error"]["status"] == 404
    spec = c.get("/openapi.json").json()
    assert "/v1/documents" in spec["paths"] and "X-API-Key" in str(spec["components"]["securitySchemes"])
    assert c.get("/docs").status_code == 200


def test_mutations_disabled_without_a_configured_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import httpx

    from kecl.api import create_app
    from kecl.settings import Settings
    from tests.servers import free_port, start_server

    app = create_app(Settings(home=tmp_path / "h"))
    port = free_port()
    server, thread = start_server(app, port)
    try:
        r = httpx.post(f"http://127.0.0.1:{port}/v1/facts", json={"facts": []}, headers=KEY)
        assert r.status_code == 403 and "KECL_API__API_KEY" in r.json()["error"]["message"]
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_trigger_an_update_run_over_http(live_server: LiveServer) -> None:
    """POST /v1/runs needs the key, starts a cycle in the background, and the run is then listed."""
    c = live_server.client
    assert c.post("/v1/runs").status_code == 401
    r = c.post("/v1/runs", headers=KEY)
    assert r.status_code == 202 and r.json()["status"] == "running"
    live_server.app.state.update_thread.join(timeout=120)
    runs = c.get("/v1/runs").json()["runs"]
    assert runs and runs[0]["trigger"] == "api" and runs[0]["id"] == r.json()["run_id"]
    one = c.get(f"/v1/runs/{runs[0]['id']}").json()
    # an empty inbox: the cycle runs, finds nothing new and records a no-op (the model is kept)
    assert one["id"] == runs[0]["id"] and one["status"] == "succeeded" and one["decision"] == "no-op"
    assert one["reasons"] == ["nothing new to learn"] and one["error"] is None
    assert c.get("/v1/runs/999999").status_code == 404
