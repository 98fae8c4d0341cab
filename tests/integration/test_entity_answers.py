"""Over real HTTP with the packaged model: what is POSTed is learned by the next cycle, and
answers rank whole entities."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kecl.api import create_app
from kecl.settings import Settings
from tests.integration.test_api import FEED, KEY
from tests.servers import LiveServer, free_port, start_server


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[LiveServer]:
    settings = Settings(
        home=tmp_path / "home",
        api={"api_key": "secret-key-for-tests"},
        train={"steps": 4, "batch_size": 4, "injection_probability": 0.0},  # a short cycle: the path, not the skill
        gates={"max_retention_drop": 1.0, "max_loss_increase": 100.0, "min_acquisition": 0.0},
    )
    app = create_app(settings)
    server, thread = start_server(app, free_port())
    url = f"http://127.0.0.1:{server.config.port}"
    with httpx.Client(base_url=url, timeout=120) as client:
        yield LiveServer(url, app, client)
    server.should_exit = True
    thread.join(timeout=30)


def run_cycle(s: LiveServer) -> dict:
    r = s.client.post("/v1/runs", headers=KEY)
    assert r.status_code == 202, r.text
    s.app.state.update_thread.join(timeout=900)
    run = s.client.get("/v1/runs").json()["runs"][0]
    return s.client.get(f"/v1/runs/{run['id']}").json()


def test_posted_knowledge_is_learned_and_answers_are_entities(server: LiveServer) -> None:
    c = server.client
    assert c.post("/v1/facts", json=FEED, headers=KEY).status_code == 201
    change = {"facts": [{"subject": "croatia", "relation": "P38", "object": "euro", "valid_from": "2023-01-01"}]}
    assert c.post("/v1/facts", json=change, headers=KEY).status_code == 201
    doc = {"documents": [{"text": "Since 2023 the euro is the currency of Croatia, replacing the kuna."}]}
    assert c.post("/v1/documents", json=doc, headers=KEY).status_code == 201

    first = run_cycle(server)  # nothing in the inbox: the cycle learns what was POSTed
    assert first["status"] == "succeeded", first["error"]
    assert first["decision"] == "promote", first["reasons"]
    taken = first["counts"]["taken"]
    assert taken["facts"] == 3 and taken["closed_facts"] == 1 and taken["passages"] == 1
    assert first["counts"]["changed_facts"] == 1
    assert first["metrics"]["candidate"]["level"] == "entity"

    again = run_cycle(server)
    assert again["decision"] == "no-op" and again["reasons"] == ["nothing new to learn"]

    answer = c.post("/v1/query", json={"text": "The currency of Croatia is the [MASK] .", "mode": "concat"}).json()
    assert answer["predictions"] and answer["entities"]
    euro = [e for e in answer["entities"] if e["text"] == "euro"]
    assert euro and euro[0]["source"] == "fact" and euro[0]["entity_id"] is not None
    closed = c.post("/v1/query", json={"text": "The currency of Croatia is the [MASK] .", "mode": "closed-book"}).json()
    assert all(e["source"] != "fact" for e in closed["entities"])  # never the subject's own facts
