"""The resource API under /v1 over real HTTP against a running uvicorn server: documents, facts,
entities, relations, models and runs, each write with and without the key, one pagination scheme.

The server runs on tiny random models (a tiny index embedder, a tiny active checkpoint): these
tests are about the HTTP contract and the store, not about answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from encoder import save_checkpoint
from kecl.api import create_app
from kecl.api.errors import ErrorBody
from kecl.api.resources import DocumentPage, ModelPage, RelationPage
from kecl.api.schemas import EntityList, FactList, RunList
from tests.factories import activate_tiny_checkpoint, save_tiny_sentence_encoder, tiny_bundle, tiny_settings
from tests.integration.test_api_schemas import Checker, assert_exact
from tests.servers import free_port, start_server

KEY = {"X-API-Key": "secret-key-for-tests"}
FEED = {
    "relations": [{"id": "P286", "label": "head coach", "template": "[X] is coached by [Y] .", "functional": True}],
    "entities": [
        {"id": "lfc", "name": "Liverpool FC", "aliases": ["Liverpool"], "type": "club"},
        {"id": "liverpool-city", "name": "Liverpool", "type": "city"},
        {"id": "klopp", "name": "Jürgen Klopp"},
        {"id": "slot", "name": "Arne Slot"},
    ],
    "facts": [{"subject": "lfc", "relation": "P286", "object": "klopp", "valid_from": "2015-10-08"}],
}


def documented_models(app: FastAPI) -> Callable[[httpx.Response], None]:
    """A response hook: every response of an API operation must be documented for its status and
    match its model exactly (the success model, or the error shape)."""
    checker = Checker(httpx.Client(), app)
    operations = [
        (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), method.upper(), op["operationId"])
        for path, methods in app.openapi()["paths"].items()
        for method, op in methods.items()
    ]

    def check(response: httpx.Response) -> None:
        response.read()
        path, method = response.request.url.path, response.request.method
        op = next((o for pattern, m, o in operations if m == method and pattern.match(path)), None)
        if op is None:  # the docs pages and their assets
            return
        status = response.status_code
        assert (op, status) in checker.documented, f"{op} sent an undocumented {status}: {response.text}"
        assert_exact(checker.models[(op, status)] if status < 300 else ErrorBody, response.json())
        checked.append((op, status))

    return check


checked: list[tuple[str, int]] = []


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    settings = tiny_settings(
        tmp_path / "home", save_tiny_sentence_encoder(tmp_path / "embedder"), api={"api_key": "secret-key-for-tests"}
    )
    activate_tiny_checkpoint(settings)
    app = create_app(settings)
    port = free_port()
    server, thread = start_server(app, port)
    hooks = {"response": [documented_models(app)]}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, event_hooks=hooks) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c
    server.should_exit = True
    thread.join(timeout=30)


def keyless(c: httpx.Client, method: str, url: str, **kw: Any) -> None:
    """A write without the key is refused (401) and one with a wrong key too."""
    assert c.request(method, url, **kw).status_code == 401
    assert c.request(method, url, headers={"X-API-Key": "nope"}, **kw).status_code == 401


def test_documents_list_filter_page_and_delete(client: httpx.Client) -> None:
    c = client
    c.post("/v1/facts", json=FEED, headers=KEY)
    docs = [
        {"text": "Liverpool FC play at Anfield.", "source": "news", "published_at": "2024-01-01"},
        {"text": "Arne Slot arrived in Liverpool.", "source": "news", "published_at": "2024-07-01"},
        {"text": "A blog about Jürgen Klopp.", "source": "blog", "published_at": "2024-06-01"},
    ]
    r = c.post("/v1/documents", json={"documents": docs}, headers=KEY)
    assert r.status_code == 201, r.text
    page = DocumentPage.model_validate(c.get("/v1/documents", params={"limit": 2}).json())
    assert (page.total, page.limit, page.offset, [d.id for d in page.documents]) == (3, 2, 0, [1, 2])
    page = DocumentPage.model_validate(c.get("/v1/documents", params={"source": "news", "offset": 1}).json())
    assert page.total == 2 and [d.id for d in page.documents] == [2]
    page = DocumentPage.model_validate(c.get("/v1/documents", params={"published_from": "2024-06-01"}).json())
    assert [d.id for d in page.documents] == [2, 3]

    doc = c.get("/v1/documents/2").json()
    keyless(c, "DELETE", "/v1/documents/2")
    r = c.delete("/v1/documents/2", headers=KEY)
    assert r.status_code == 200, r.text
    assert r.json()["passage_ids"] == [p["id"] for p in doc["passages"]]
    assert c.get("/v1/documents/2").status_code == 404
    assert c.delete("/v1/documents/2", headers=KEY).status_code == 404
    hits = c.post("/v1/search", json={"text": "Arne Slot arrived", "k": 5}).json()["hits"]
    assert all(h["passage_id"] not in r.json()["passage_ids"] for h in hits) and len(hits) == 2
    slot = c.get("/v1/entities/slot").json()
    assert slot["mention_count"] == 0
    assert c.get("/v1/stats").json()["index"]["vectors"] == 2


def test_facts_by_name_partial_failures_end_and_retract(client: httpx.Client) -> None:
    c = client
    keyless(c, "POST", "/v1/facts", json=FEED)
    assert c.post("/v1/facts", json=FEED, headers=KEY).status_code == 201
    # names instead of ids; an ambiguous name is reported, the rest is written: 207
    r = c.post(
        "/v1/facts",
        json={
            "facts": [
                {"subject": "Liverpool FC", "relation": "P286", "object": "Arne Slot", "valid_from": "2024-06-01"},
                {"subject": "Liverpool", "relation": "P286", "object": "Jürgen Klopp"},
            ]
        },
        headers=KEY,
    )
    assert r.status_code == 207, r.text
    body = r.json()
    assert body["facts_added"] == 1 and body["facts_closed"] == 1
    assert body["issues"] == [
        "facts[1]: subject 'Liverpool' is ambiguous: it names lfc (Liverpool FC), "
        "liverpool-city (Liverpool); give the id"
    ]
    # nothing writable: 422 with every record's problem
    r = c.post(
        "/v1/facts",
        json={"facts": [{"subject": "Atlantis", "relation": "P286", "object": "slot"}]},
        headers=KEY,
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"] == ["facts[0]: unknown subject entity 'Atlantis'"]

    facts = FactList.model_validate(c.get("/v1/facts", params={"history": True, "limit": 1}).json())
    assert (facts.total, len(facts.facts)) == (2, 1)
    current = FactList.model_validate(c.get("/v1/facts", params={"subject": "lfc"}).json())
    slot_fact = current.facts[0]
    assert (current.total, slot_fact.object) == (1, "Arne Slot")

    keyless(c, "POST", f"/v1/facts/{slot_fact.id}/end", json={"valid_to": "2030-01-01"})
    r = c.post(f"/v1/facts/{slot_fact.id}/end", json={"valid_to": "2020-01-01"}, headers=KEY)
    assert r.status_code == 409 and "before the fact's valid_from" in r.json()["error"]["message"]
    r = c.post(f"/v1/facts/{slot_fact.id}/end", json={"valid_to": "2030-01-01"}, headers=KEY)
    assert r.status_code == 200 and r.json()["valid_to"] == "2030-01-01"
    assert c.get("/v1/facts", params={"subject": "lfc"}).json()["total"] == 0
    assert c.get("/v1/facts", params={"subject": "lfc", "as_of": "2025-01-01"}).json()["total"] == 1

    klopp_fact = c.get("/v1/facts", params={"subject": "lfc", "as_of": "2020-01-01"}).json()["facts"][0]
    keyless(c, "POST", f"/v1/facts/{klopp_fact['id']}/retract", json={"reason": "x"})
    r = c.post(f"/v1/facts/{klopp_fact['id']}/retract", json={"reason": "never coached here"}, headers=KEY)
    assert r.status_code == 200 and r.json()["retraction_reason"] == "never coached here"
    assert c.get("/v1/facts", params={"subject": "lfc", "as_of": "2020-01-01"}).json()["total"] == 0
    history = c.get("/v1/entities/lfc").json()["history"]
    assert {f["retraction_reason"] for f in history} == {None, "never coached here"}
    assert c.post(f"/v1/facts/{klopp_fact['id']}/retract", json={"reason": "x"}, headers=KEY).status_code == 409
    assert c.post("/v1/facts/999/retract", json={"reason": "x"}, headers=KEY).status_code == 404
    assert c.get("/v1/facts/999").status_code == 404


def test_entities_create_update_and_page(client: httpx.Client) -> None:
    c = client
    new = {"id": "anfield", "name": "Anfield", "type": "venue", "aliases": ["Anfield Road"]}
    keyless(c, "POST", "/v1/entities", json=new)
    r = c.post("/v1/entities", json=new, headers=KEY)
    assert r.status_code == 201 and r.json()["aliases"] == ["Anfield", "Anfield Road"]
    assert c.post("/v1/entities", json=new, headers=KEY).status_code == 409
    keyless(c, "PATCH", "/v1/entities/anfield", json={"aliases": ["The Kop"]})
    r = c.patch("/v1/entities/Anfield Road", json={"name": "Anfield Stadium", "aliases": ["The Kop"]}, headers=KEY)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Anfield Stadium" and "The Kop" in r.json()["aliases"]
    assert c.patch("/v1/entities/nowhere", json={}, headers=KEY).status_code == 404
    found = EntityList.model_validate(c.get("/v1/entities", params={"q": "anf", "limit": 1}).json())
    assert (found.total, [e.key for e in found.entities]) == (1, ["anfield"])


def test_relations_list_and_put(client: httpx.Client) -> None:
    c = client
    rel = {"id": "P115", "label": "home venue", "template": "[X] plays at [Y] .", "functional": True}
    keyless(c, "POST", "/v1/relations", json=rel)
    assert c.post("/v1/relations", json=rel, headers=KEY).status_code == 201
    r = c.post("/v1/relations", json={**rel, "label": "home ground"}, headers=KEY)
    assert r.status_code == 200 and r.json()["label"] == "home ground"
    page = RelationPage.model_validate(c.get("/v1/relations").json())
    assert page.total == 1 and page.relations[0].label == "home ground"


def test_models_list_activate_and_rollback(client: httpx.Client) -> None:
    c = client
    settings = c.app.state.settings  # type: ignore[attr-defined]
    child = save_checkpoint(tiny_bundle(max_positions=256), settings.checkpoints_dir, parent="v0001")
    page = ModelPage.model_validate(c.get("/v1/models").json())
    assert [(m.version, m.active, m.parent) for m in page.models] == [("v0001", True, None), (child, False, "v0001")]
    assert page.total == 2 and c.get(f"/v1/models/{child}").json()["active"] is False
    assert c.get("/v1/models/v0099").status_code == 404
    keyless(c, "POST", f"/v1/models/{child}/activate")
    r = c.post(f"/v1/models/{child}/activate", headers=KEY)
    assert r.status_code == 200 and r.json()["active"] is True, r.text
    assert c.app.state.kecl.encoder.version == child  # type: ignore[attr-defined]  # serving it now
    assert c.post("/v1/models/v0099/activate", headers=KEY).status_code == 404
    keyless(c, "POST", "/v1/models/rollback")
    r = c.post("/v1/models/rollback", headers=KEY)
    assert r.status_code == 200 and r.json()["version"] == "v0001"
    r = c.post("/v1/models/rollback", headers=KEY)
    assert r.status_code == 409 and "has no parent" in r.json()["error"]["message"]


def test_runs_answer_with_the_run_id_or_409_with_the_running_one(client: httpx.Client) -> None:
    c = client
    keyless(c, "POST", "/v1/runs")
    store = c.app.state.kecl.store  # type: ignore[attr-defined]
    # another process's cycle holds the lock: refused, naming its run
    other = store.start_run("schedule")
    assert store.try_lock("update-cycle", "elsewhere:1:x", lease_seconds=60)
    r = c.post("/v1/runs", headers=KEY)
    assert r.status_code == 409 and f"run {other}" in r.json()["error"]["message"]
    assert r.headers["location"] == f"/v1/runs/{other}"
    store.release_lock("update-cycle", "elsewhere:1:x")
    store.finish_run(other, status="failed", error="killed")
    r = c.post("/v1/runs", headers=KEY)
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    assert run_id == other + 1 and r.json()["poll"] == f"/v1/runs/{run_id}"
    c.app.state.update_thread.join(timeout=300)  # type: ignore[attr-defined]
    assert c.get(f"/v1/runs/{run_id}").json()["status"] in {"succeeded", "failed"}
    runs = RunList.model_validate(c.get("/v1/runs", params={"limit": 1, "offset": 1}).json())
    assert (runs.total, [r.id for r in runs.runs]) == (2, [other])
    # a cycle whose run row is late: 503 that says it may still start, never a bare 500
    c.app.state.run_start_wait = 0.0  # type: ignore[attr-defined]
    r = c.post("/v1/runs", headers=KEY)
    assert r.status_code == 503 and "may still start" in r.json()["error"]["message"], r.text
    assert r.headers["retry-after"] == "10"
    c.app.state.update_thread.join(timeout=300)  # type: ignore[attr-defined]
    late = c.get("/v1/runs", params={"limit": 1}).json()
    assert late["total"] == 3 and late["runs"][0]["status"] in {"succeeded", "failed", "skipped"}


def test_docs_pages_load_their_assets_from_the_server(client: httpx.Client) -> None:
    c = client
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = c.get(page).text
        assert f"/static/api-docs/{asset}" in html and "cdn.jsdelivr" not in html and "fonts.googleapis" not in html
        r = c.get(f"/static/api-docs/{asset}")
        assert r.status_code == 200 and len(r.content) > 500_000
    spec = c.get("/openapi.json").json()
    c.get("/v1/relations")
    ops = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert checked, "the response hook checks what the server sends"
    assert {"listDocuments", "deleteDocument", "endFact", "retractFact", "createEntity", "updateEntity"} <= ops
    assert {"listRelations", "putRelation", "listModels", "activateModel", "rollbackModel"} <= ops


def test_metrics_in_prometheus_format(client: httpx.Client) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    c = client
    # one connection per request: a keep-alive connection the server closes while idle can make
    # a client send a request again, and the counts below are exact
    close = {"Connection": "close"}
    c.post("/v1/documents", json={"documents": [{"text": "Anfield is in Liverpool."}]}, headers={**KEY, **close})
    assert c.get("/v1/documents/1", headers=close).status_code == 200
    assert c.get("/v1/documents/2", headers=close).status_code == 404
    c.post("/v1/query", json={"text": "Anfield is in [MASK] ."}, headers=close)
    store = c.app.state.kecl.store  # type: ignore[attr-defined]
    run = store.start_run("schedule")
    store.finish_run(run, status="succeeded", decision="promote", timings={"train": 2.0, "evaluate": 0.5})
    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    route = "/v1/documents/{document_id}"
    counted = "\n".join(line for line in r.text.splitlines() if "requests_total{" in line)
    assert value("kecl_http_requests_total", method="GET", route=route, status="200") == 1, counted
    assert value("kecl_http_requests_total", method="GET", route=route, status="404") == 1
    assert value("kecl_http_request_duration_seconds_count", method="GET", route=route) == 2
    assert value("kecl_query_batch_size_count") == 1
    assert value("kecl_store_passages") == value("kecl_index_vectors") == 1
    assert value("kecl_index_lag_passages") == 0
    assert value("kecl_active_checkpoint_info", version="v0001") == 1
    assert value("kecl_update_cycles", status="succeeded", decision="promote") == 1
    assert value("kecl_last_update_cycle_duration_seconds") == 2.5
    assert "/metrics" not in c.get("/openapi.json").json()["paths"]


def test_cli_search_and_query_ask_a_running_server(client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from kecl.api.schemas import Answer, SearchResults
    from kecl.cli import app as cli

    c = client
    c.post("/v1/documents", json={"documents": [{"text": "Anfield is a stadium in Liverpool."}]}, headers=KEY)
    monkeypatch.setenv("KECL_HOME", "/nonexistent/kecl-home")  # nothing local is opened
    monkeypatch.setenv("KECL_API__SERVER_URL", str(c.base_url))
    runner = CliRunner()
    result = runner.invoke(cli, ["search", "stadium in Liverpool", "-k", "1", "--json"])
    assert result.exit_code == 0, result.output
    hits = SearchResults.model_validate(json.loads(result.stdout)).hits
    assert [h.text for h in hits] == ["Anfield is a stadium in Liverpool."]
    result = runner.invoke(cli, ["query", "Anfield is a [MASK] in Liverpool .", "--json", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    answer = Answer.model_validate(json.loads(result.stdout))
    assert len(answer.predictions[0]) == 2 and answer.evidence
    refused = runner.invoke(cli, ["query", "no mask here"])
    assert refused.exit_code == 1 and "422 text has no [MASK]" in " ".join(refused.output.split())
