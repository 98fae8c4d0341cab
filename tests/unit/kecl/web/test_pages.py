"""The web pages through the real app in-process (Starlette's test client: no socket): each view
renders, data is escaped, and writes need the key's session, its CSRF token and this origin."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kecl.api import create_app
from kecl.services import Kecl
from kecl.web.views import lineage
from tests.factories import activate_tiny_checkpoint
from tests.unit.kecl.web.conftest import SCRIPT_ALIAS

BASE = "http://testserver"


@pytest.fixture()
def client(web_kecl: Kecl) -> Iterator[TestClient]:
    with TestClient(create_app(kecl=web_kecl), base_url=BASE) as c:
        yield c


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]*)"', html)
    assert found is not None
    return found.group(1)


def login(client: TestClient, key: str = "sesame-sesame-sesame") -> None:
    r = client.post("/session", data={"key": key, "next": "/ingest"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ingest"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "max-age" not in cookie


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/?q=Croatia",
        "/entity/croatia",
        "/entity/croatia?as_of=2000-01-01",
        "/graph/hub?hops=2&fanout=3",
        "/ask",
        "/runs",
        "/ingest",
        "/stats",
        "/document/1",
    ],
)
def test_every_view_renders(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "https://" not in r.text and "http://" not in r.text  # nothing loaded from the internet


def test_markup_from_data_is_shown_as_text(client: TestClient) -> None:
    page = client.get("/entity/hub").text
    assert SCRIPT_ALIAS not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    graph = client.get("/graph/hub").text  # embedded JSON must not close its <script> element
    assert "</script>alert" not in graph and "<script>alert" not in graph


def test_entity_page_as_of_and_bad_input(client: TestClient) -> None:
    now, then = client.get("/entity/croatia").text, client.get("/entity/croatia?as_of=2000-01-01").text
    facts = lambda html: html.split('id="facts"')[1].split("</table>")[0]  # noqa: E731
    assert "euro" in facts(now) and "kuna" not in facts(now)
    assert "kuna" in facts(then) and "euro" not in facts(then)
    assert "superseded by euro" in now
    bad = client.get("/entity/croatia?as_of=yesterday")
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.text
    missing = client.get("/entity/atlantis")
    assert missing.status_code == 404 and "atlantis" in missing.text
    assert client.get("/ask?q=no+mask+here").status_code == 422


def test_ask_shows_three_modes_side_by_side(client: TestClient) -> None:
    html = client.get("/ask", params={"q": "The currency of Croatia is the [MASK] ."}).text
    assert [m for m in re.findall(r'data-mode="([^"]+)"', html)] == ["closed-book", "concat", "tree"]
    assert 'class="att"' in html and "Injected input" in html


def test_writes_need_the_session_and_its_csrf_token(client: TestClient, web_kecl: Kecl) -> None:
    feed = (
        '{"kind": "entity", "id": "atlantis", "name": "Atlantis"}\n{"kind": "fact", "subject": "atlantis"}\nnot json\n'
    )
    refused = client.post("/ingest", data={"text": feed, "name": "feed.jsonl", "csrf": "x"})
    assert refused.status_code == 401 and web_kecl.store.resolve_entity("atlantis") is None
    assert client.post("/session", data={"key": "wrong"}).status_code == 401
    login(client)
    form = client.get("/ingest").text
    token = csrf_of(form)
    no_token = client.post("/ingest", data={"text": feed, "name": "feed.jsonl"})
    assert no_token.status_code == 403 and web_kecl.store.resolve_entity("atlantis") is None
    cross_site = client.post(
        "/ingest", data={"text": feed, "name": "feed.jsonl", "csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert cross_site.status_code == 403 and web_kecl.store.resolve_entity("atlantis") is None
    ok = client.post("/ingest", data={"text": feed, "name": "feed.jsonl", "csrf": token}, headers={"Origin": BASE})
    assert ok.status_code == 200, ok.text
    assert web_kecl.store.resolve_entity("atlantis") is not None
    assert "feed.jsonl:2: " in ok.text and "feed.jsonl:3: malformed JSON" in ok.text
    upload = client.post(
        "/ingest", data={"csrf": token}, files={"file": ("../../etc/news.txt", b"Atlantis sank beneath the sea.")}
    )
    assert upload.status_code == 200 and "news.txt" in upload.text and "../" not in upload.text
    client.post("/session/end", data={"next": "/"})
    assert client.post("/ingest", data={"text": feed, "csrf": token}).status_code == 401


def test_activate_a_checkpoint_with_the_key(client: TestClient, web_kecl: Kecl) -> None:
    versions = [c["version"] for c in lineage(web_kecl)]
    activate_tiny_checkpoint(web_kecl.settings)  # a second version becomes active
    login(client)
    token = csrf_of(client.get("/runs").text)
    r = client.post("/runs/activate", data={"version": versions[0], "csrf": token}, follow_redirects=False)
    assert r.status_code == 303
    assert f'id="active">{versions[0]}<' in client.get("/stats").text
    statuses = {c["version"]: c["status"] for c in web_kecl.store.checkpoints()}
    assert statuses[versions[0]] == "active"
    bad = client.post("/runs/activate", data={"version": "../x", "csrf": token})
    assert bad.status_code == 422


def test_each_fact_links_to_asking_the_model_about_it(client: TestClient) -> None:
    html = client.get("/entity/croatia?as_of=2000-01-01").text
    links = re.findall(r'href="(/ask\?q=[^"]+)" class="ask-link"', html)
    assert any("currency" in link.lower() for link in links)
    page = client.get(links[0].replace("&amp;", "&"))
    assert page.status_code == 200 and 'data-mode="tree"' in page.text
