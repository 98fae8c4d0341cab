"""The OpenAPI document says what the API sends: every response has a schema, and real responses match it.

``assert_exact`` is stricter than validation: a body must validate against its model *and* come back
as the same JSON text when dumped again, so a field the model lacks (which FastAPI would silently
drop), an int turned float, a reformatted date or a reordered key all fail. It is applied both to
what the server sends and to what the store, search and pipeline produce for the same request, and
the two must be equal: the response models lose nothing those produce.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from kecl.api import create_app, resources, schemas
from kecl.api.errors import ErrorBody
from kecl.pipeline import QueryOptions
from kecl.settings import Settings
from tests.integration.test_api import FEED, KEY
from tests.servers import LiveServer
from updater.locking import CYCLE_LOCK_NAME

OPERATIONS = {
    ("get", "/healthz"): "healthz",
    ("get", "/readyz"): "readyz",
    ("get", "/v1/stats"): "getStats",
    ("get", "/v1/entities"): "findEntities",
    ("get", "/v1/entities/{ref}"): "getEntity",
    ("get", "/v1/entities/{ref}/neighbourhood"): "getNeighbourhood",
    ("get", "/v1/facts"): "listFacts",
    ("post", "/v1/facts"): "addFacts",
    ("get", "/v1/documents/{document_id}"): "getDocument",
    ("post", "/v1/documents"): "addDocuments",
    ("post", "/v1/query"): "query",
    ("post", "/v1/search"): "search",
    ("get", "/v1/runs"): "listRuns",
    ("get", "/v1/runs/{run_id}"): "getRun",
    ("post", "/v1/runs"): "startRun",
}
# The resource endpoints: their real responses are checked in test_api_resources.py.
RESOURCE_OPERATIONS = {
    ("get", "/v1/documents"): "listDocuments",
    ("delete", "/v1/documents/{document_id}"): "deleteDocument",
    ("get", "/v1/facts/{fact_id}"): "getFact",
    ("post", "/v1/facts/{fact_id}/end"): "endFact",
    ("post", "/v1/facts/{fact_id}/retract"): "retractFact",
    ("post", "/v1/entities"): "createEntity",
    ("patch", "/v1/entities/{ref}"): "updateEntity",
    ("get", "/v1/relations"): "listRelations",
    ("post", "/v1/relations"): "putRelation",
    ("get", "/v1/models"): "listModels",
    ("get", "/v1/models/{version}"): "getModel",
    ("post", "/v1/models/{version}/activate"): "activateModel",
    ("post", "/v1/models/rollback"): "rollbackModel",
}
KEYED = {"addFacts", "addDocuments", "startRun", "deleteDocument", "endFact", "retractFact", "createEntity"} | {
    "updateEntity",
    "putRelation",
    "activateModel",
    "rollbackModel",
}
# FastAPI documents a 422 for every route with parameters; a string path parameter cannot fail.
CANNOT_HAPPEN = {("getEntity", 422)}
MODELS = {
    name: model
    for module in (schemas, resources)
    for name, model in vars(module).items()
    if isinstance(model, type) and issubclass(model, BaseModel)
}
BIG = {"documents": [{"text": "y" * 30_000}]}  # over the fixture's 20 000-byte body limit


def assert_exact(model: type[BaseModel], body: Any) -> None:
    """``body`` is exactly what ``model`` describes (see the module docstring)."""
    again = model.model_validate(body).model_dump(mode="json", exclude_unset=True)
    assert json.dumps(again) == json.dumps(body), f"{model.__name__} does not describe {body}"


def plain(data: Any) -> Any:
    """What a producer's dict looks like on the wire (its dates are already ISO strings)."""
    return json.loads(json.dumps(data))


def documented_statuses(spec: dict[str, Any]) -> set[tuple[str, int]]:
    return {
        (op["operationId"], int(status))
        for methods in spec["paths"].values()
        for op in methods.values()
        for status in op["responses"]
    }


class Checker:
    """Sends requests and checks each response against the model its operation documents for that status."""

    def __init__(self, client: httpx.Client | TestClient, app: FastAPI) -> None:
        spec = app.openapi()
        self.client = client
        self.documented = documented_statuses(spec)
        self.models = {
            (op["operationId"], int(status)): MODELS[ref.rsplit("/", 1)[1]]
            for methods in spec["paths"].values()
            for op in methods.values()
            for status, response in op["responses"].items()
            if status.startswith("2")
            for ref in [response["content"]["application/json"]["schema"]["$ref"]]
        }
        self.seen: set[tuple[str, int]] = set()

    def __call__(self, op: str, method: str, url: str, status: int, **kwargs: Any) -> Any:
        r = self.client.request(method, url, **kwargs)
        assert r.status_code == status, r.text
        assert (op, status) in self.documented, f"{op} sent an undocumented {status}"
        assert_exact(self.models[(op, status)] if status < 300 else ErrorBody, r.json())
        self.seen.add((op, status))
        return r.json()


# ----------------------------------------------------------------------------- the document


@pytest.fixture()
def spec(tmp_path: Path) -> Iterator[dict[str, Any]]:
    app = create_app(Settings(home=tmp_path / "home", api={"api_key": "secret-key-for-tests"}))
    yield app.openapi()
    app.state.kecl.close()


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def test_every_operation_has_an_id_a_tag_and_a_typed_success_response(spec: dict[str, Any]) -> None:
    ops = {(m, p): op for p, methods in spec["paths"].items() for m, op in methods.items()}
    assert {k: op["operationId"] for k, op in ops.items()} == OPERATIONS | RESOURCE_OPERATIONS
    for (method, path), op in ops.items():
        assert len(op["tags"]) == 1 and op["description"], (method, path)
        ok = [s for s in op["responses"] if s.startswith("2")]
        assert ok, (method, path)
        for status in ok:  # 201 and 207 (partly written), 201 and 200 (created or updated): each typed
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            model = resolve(spec, schema)
            assert "$ref" in schema and model["type"] == "object" and model["properties"], (method, path)


def test_every_error_is_documented_with_the_error_shape(spec: dict[str, Any]) -> None:
    assert not {"HTTPValidationError", "ValidationError"} & set(spec["components"]["schemas"])
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["status", "message"] and set(error["properties"]) == {"status", "message", "details"}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            errors = {int(s): r for s, r in op["responses"].items() if not s.startswith("2")}
            for status, response in errors.items():
                if (path, status) == ("/readyz", 503):  # a readiness probe answers "not ready" with its report
                    continue
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
                assert response["description"], (path, status)
            takes_input = op.get("parameters") or op.get("requestBody")
            assert (422 in errors) == bool(takes_input), (method, path)
            assert (413 in errors) == (method in {"post", "put", "patch"}), (method, path)
            keyed = op["operationId"] in KEYED
            assert ({401, 403} <= set(errors)) == keyed and bool(op.get("security")) == keyed, (method, path)


def test_every_reference_resolves(spec: dict[str, Any]) -> None:
    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    names = set(spec["components"]["schemas"])
    found = set(refs(spec))
    assert found and {r.removeprefix("#/components/schemas/") for r in found} <= names


def test_limits_are_documented(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    query, search = schemas["QueryIn"]["properties"], schemas["SearchIn"]["properties"]
    assert "[MASK]" in query["text"]["description"] and "api.max_text_chars" in query["text"]["description"]
    assert all("api.max_k" in p["description"] for p in (query["k"], query["top_k"], search["k"]))
    assert "api.max_text_chars" in search["text"]["description"]
    assert "api.max_body_bytes" in json.dumps(spec["paths"]["/v1/documents"]["post"]["responses"]["413"])


# ----------------------------------------------------------------------------- real responses


def test_real_responses_match_their_models_and_lose_nothing(live_server: LiveServer, tmp_path: Path) -> None:
    """Every documented (operation, status) is produced by a real request and checked."""
    app = live_server.app
    check = Checker(live_server.client, app)  # type: ignore[arg-type]
    kecl = app.state.kecl  # type: ignore[attr-defined]
    store = kecl.store

    check("healthz", "GET", "/healthz", 200)
    check("addFacts", "POST", "/v1/facts", 201, json=FEED, headers=KEY)
    later = {"subject": "croatia", "relation": "P38", "object": "euro", "valid_from": "2023-01-01"}
    added = check(
        "addFacts", "POST", "/v1/facts", 207, json={"facts": [later, {**later, "relation": "P9"}]}, headers=KEY
    )
    assert added["facts_closed"] == 1 and len(added["issues"]) == 1
    docs = {
        "documents": [{"text": "Zagreb is the capital of Croatia.", "title": "Zagreb", "published_at": "2024-02-01"}]
    }
    check("addDocuments", "POST", "/v1/documents", 201, json=docs, headers=KEY)

    # what the store produces is what the client gets, field for field
    croatia = store.resolve_entity("croatia")
    for model_body, produced in [
        (check("getEntity", "GET", "/v1/entities/croatia", 200), store.get_entity(croatia).to_dict()),
        (
            check("findEntities", "GET", "/v1/entities", 200, params={"q": "cro"}),
            {"total": 1, "limit": 20, "offset": 0, "entities": store.find_entities("cro")},
        ),
        (
            check("listFacts", "GET", "/v1/facts", 200, params={"history": "true"}),
            {"total": 3, "limit": 100, "offset": 0, "facts": [f.to_dict() for f in store.facts(include_closed=True)]},
        ),
        (
            check("getNeighbourhood", "GET", "/v1/entities/croatia/neighbourhood", 200, params={"hops": 2}),
            {"entity_id": croatia, "hops": 2, "facts": [f.to_dict() for f in store.neighbourhood(croatia, hops=2)]},
        ),
        (check("getDocument", "GET", "/v1/documents/1", 200), store.get_document(1)),
        (
            check("search", "POST", "/v1/search", 200, json={"text": "capital city", "k": 3}),
            {"hits": [h.to_dict() for h in kecl.search("capital city", 3)]},
        ),
        (
            check("getStats", "GET", "/v1/stats", 200),
            {"store": store.stats(), "index": {"kind": kecl.index.index.kind, "vectors": len(kecl.index.index)}},
        ),
    ]:
        assert json.dumps(model_body) == json.dumps(plain(produced))

    for body in [
        {"text": "The capital of Croatia is [MASK] .", "mode": "tree", "top_k": 3},
        {"text": "The currency of Croatia is the [MASK] .", "explain": True, "k": 2, "evidence_boost": 0},
    ]:
        answer = check("query", "POST", "/v1/query", 200, json=body)
        opts = QueryOptions(
            mode=body.get("mode", "concat"),
            k_passages=body.get("k", 4),
            top_k=body.get("top_k", 5),
            explain=body.get("explain", False),
            evidence_boost=body.get("evidence_boost"),
        )
        produced = plain(kecl.answer([body["text"]], opts)[0].to_dict())
        assert answer["facts"] and answer["evidence"] and answer["snapshot"]["index"]
        assert (answer["explanation"] is not None) == body.get("explain", False)
        timings, _ = answer.pop("timings_ms"), produced.pop("timings_ms")
        # the event watermark moves as the process's follower applies the log: not part of the answer
        answer["snapshot"]["watermark"].pop("event"), produced["snapshot"]["watermark"].pop("event")
        assert json.dumps(answer) == json.dumps(produced) and timings["batch_size"] == 1

    check("startRun", "POST", "/v1/runs", 202, headers=KEY)
    app.state.update_thread.join(timeout=120)  # type: ignore[attr-defined]
    # 200 once the index and the active checkpoint are loaded and in step with SQL; 503 with the report else
    ready = live_server.client.get("/readyz").status_code
    check("readyz", "GET", "/readyz", ready)
    runs = check("listRuns", "GET", "/v1/runs", 200)
    assert json.dumps(runs) == json.dumps(plain({"total": 1, "limit": 50, "offset": 0, "runs": store.runs()}))
    run = check("getRun", "GET", f"/v1/runs/{runs['runs'][0]['id']}", 200)
    assert run == runs["runs"][0] and run["started_at"] and run["timings"]

    assert store.try_lock(CYCLE_LOCK_NAME, "another-process", 60)
    try:
        err = check("startRun", "POST", "/v1/runs", 409, headers=KEY)
        assert err["error"]["message"] == "an update cycle is already running: a run (holder another-process)"
    finally:
        store.release_lock(CYCLE_LOCK_NAME, "another-process")

    # every error, on every route that documents it
    for op, method, url in [("addFacts", "POST", "/v1/facts"), ("addDocuments", "POST", "/v1/documents")]:
        check(op, method, url, 401, json={})
        check(op, method, url, 401, json={}, headers={"X-API-Key": "nope"})
        check(op, method, url, 413, json=BIG, headers=KEY)
    check("startRun", "POST", "/v1/runs", 401, headers={"X-API-Key": "nope"})
    check("startRun", "POST", "/v1/runs", 413, json=BIG, headers=KEY)
    check("query", "POST", "/v1/query", 413, json=BIG)
    check("search", "POST", "/v1/search", 413, json=BIG)
    for op, url in [
        ("getEntity", "/v1/entities/atlantis"),
        ("getNeighbourhood", "/v1/entities/atlantis/neighbourhood"),
        ("listFacts", "/v1/facts?object=atlantis"),
        ("getDocument", "/v1/documents/999"),
        ("getRun", "/v1/runs/999"),
    ]:
        check(op, "GET", url, 404)
    invalid = [
        ("findEntities", "GET", "/v1/entities", {}),
        ("getNeighbourhood", "GET", "/v1/entities/croatia/neighbourhood?hops=9", {}),
        ("listFacts", "GET", "/v1/facts?as_of=yesterday", {}),
        ("getDocument", "GET", "/v1/documents/abc", {}),
        ("listRuns", "GET", "/v1/runs?limit=0", {}),
        ("getRun", "GET", "/v1/runs/abc", {}),
        ("addDocuments", "POST", "/v1/documents", {"json": {"documents": []}, "headers": KEY}),
        ("addFacts", "POST", "/v1/facts", {"content": b'{"facts": [', "headers": KEY}),
        ("addFacts", "POST", "/v1/facts", {"json": {"facts": [{"subject": "a", "relation": "b"}]}, "headers": KEY}),
        ("query", "POST", "/v1/query", {"json": {"text": "no mask here"}}),
        ("query", "POST", "/v1/query", {"json": {"text": "[MASK]", "top_k": 21}}),
        ("query", "POST", "/v1/query", {"json": {"text": "[MASK]", "evidence_boost": -1}}),
        ("search", "POST", "/v1/search", {"json": {"text": "q" * 501}}),
        ("search", "POST", "/v1/search", {"json": {"text": "q", "k": 21}}),
    ]
    for op, method, url, kwargs in invalid:
        err = check(op, method, url, 422, **kwargs)
        # schema failures list each problem; the server's own checks (limits, [MASK], object) do not
        assert ("details" in err["error"]) == err["error"]["message"].startswith(("invalid request", "malformed"))

    # without a key configured and before start-up: 403s, and `index` is absent rather than null
    bare = create_app(Settings(home=tmp_path / "bare"))
    try:
        client = TestClient(bare)  # not entered: the lifespan (which loads the index) does not run
        cold = Checker(client, bare)
        for op, url in [("addFacts", "/v1/facts"), ("addDocuments", "/v1/documents"), ("startRun", "/v1/runs")]:
            cold(op, "POST", url, 403, json={}, headers=KEY)
        assert cold("healthz", "GET", "/healthz", 200)["index_loaded"] is False
        assert "index" not in cold("getStats", "GET", "/v1/stats", 200)
        closed = cold("query", "POST", "/v1/query", 200, json={"text": "Paris is the capital of [MASK] .", "k": 0})
        assert "index" not in closed["snapshot"] and closed["facts"] == [] and closed["explanation"] is None
        check.seen |= cold.seen
    finally:
        bare.state.kecl.close()

    resource_ops = set(RESOURCE_OPERATIONS.values())
    # 500 and 503 (a bug, a database that went away) are documented on every operation and
    # produced by tests/integration/test_api_errors.py
    faults = {(op, status) for op, status in check.documented if status in (500, 503)}
    not_ready = {("readyz", 200)} if ready == 503 else set()
    documented = {(op, s) for op, s in check.documented if op not in resource_ops}
    assert documented - CANNOT_HAPPEN - faults - not_ready <= check.seen
