"""The web interface end to end: a real headless Chromium (Debian's ``chromium``, driven by
Playwright without a browser download) against a real ``kecl serve`` process on the demo data.

The path a person takes: search → entity → as-of change → graph node click → ask (three modes,
evidence highlighted) → runs plot drawn → ingest refused without the key, accepted with it →
a ``<script>`` alias shown as text. A screenshot of every view is saved in the folder the test
prints (``KECL_TEST_ARTIFACTS``, else a temporary folder).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kecl.demo import DEMO_DATA
from kecl.home import ensure_home
from knowledge import KnowledgeStore, read_paths
from tests.factories import activate_tiny_checkpoint, save_tiny_sentence_encoder, tiny_settings, write_jsonl
from tests.servers import free_port

CHROMIUM = "/usr/bin/chromium"
KEY = "open-sesame-0123456789"
SCRIPT_ALIAS = "<script>window.pwned = 1</script>"

if not Path(CHROMIUM).exists():
    if os.environ.get("KECL_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"{CHROMIUM} is missing and KECL_REQUIRE_BROWSER=1: install Debian's chromium")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def build_home(root: Path) -> dict[str, str]:
    """A home with the demo's two slices, a tiny encoder and embedder, two evaluated cycles and an
    entity whose alias is markup; the environment that makes ``kecl serve`` use it."""
    embedder = save_tiny_sentence_encoder(root / "embedder")
    settings = tiny_settings(root / "home", embedder)
    ensure_home(settings)
    activate_tiny_checkpoint(settings)
    store = KnowledgeStore.open(settings.db_url)
    # A source path is one long word: the phone-width check below must hold whatever the checkout's
    # path. Ingested first (after the feed that names Croatia), so the entity page lists it.
    store.ingest_batch(read_paths([DEMO_DATA / "base" / "feed.jsonl"]))
    deep = root / ("a_folder_with_a_long_name_" * 5) / "corpus.jsonl"
    deep.parent.mkdir()
    write_jsonl(
        deep,
        [{"id": "deep-1", "title": "Croatia", "text": "Croatia is a country in Europe.", "published_at": "2019-01-02"}],
    )
    store.ingest_batch(read_paths([deep]))
    for part in ("base", "later"):
        store.ingest_batch(read_paths([DEMO_DATA / part]))
    markup = write_jsonl(
        root / "markup.jsonl", [{"kind": "entity", "id": "markup-co", "name": "Markup Co", "aliases": [SCRIPT_ALIAS]}]
    )
    store.ingest_batch(read_paths([markup]))
    for new, kept, loss in [(0.2, 0.9, 3.4), (0.6, 0.88, 3.1), (0.7, 0.9, 3.0)]:
        run = store.start_run("schedule")
        group = {
            "new": {"p_at_1": new, "n": 5},
            "changed": {"p_at_1": new / 2, "n": 4},
            "unchanged": {"p_at_1": kept, "n": 9},
        }
        store.finish_run(
            run,
            status="finished",
            decision="promote",
            reasons=["retention held"],
            timings={"ingest": 0.4, "train": 12.0, "evaluate": 3.0},
            metrics={"candidate": {"modes": {"closed-book": group, "concat": group}, "heldout_loss": loss}},
        )
    store.close()
    return {
        "KECL_HOME": str(settings.home),
        "KECL_INDEX__EMBEDDER": str(embedder),
        "KECL_API__API_KEY": KEY,
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("web")
    env = {**os.environ, **build_home(root)}
    port = free_port()
    kecl_bin = shutil.which("kecl") or str(Path(sys.executable).parent / "kecl")
    log = (root / "serve.log").open("w")
    proc = subprocess.Popen([kecl_bin, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kecl serve did not start:\n{(root / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("KECL_TEST_ARTIFACTS") or tmp_path_factory.mktemp("artifacts")) / "web-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nweb screenshots: {folder}")
    return folder


def test_a_person_inspects_kecl_in_a_browser(served: str, shots: Path) -> None:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        expect = sync_api.expect

        # search, keyboard to the first entity, open it
        page.goto(f"{served}/?q=Croatia")
        expect(page.locator("#h-entities")).to_contain_text("Entities")
        page.screenshot(path=shots / "search.png", full_page=True)
        page.locator("#q").press("ArrowDown")
        first = page.locator("a.result").first
        expect(first).to_be_focused()
        expect(first).to_have_text("Croatia")
        page.keyboard.press("Enter")
        expect(page.locator("#entity-name")).to_have_text("Croatia")
        expect(page.locator("#facts")).to_contain_text("euro")
        expect(page.locator("#timeline")).to_contain_text("superseded by euro")
        page.screenshot(path=shots / "entity.png", full_page=True)

        # as of a day in 2020: the kuna, not yet the euro
        page.fill("#as-of", "2020-06-01")
        page.click("#as-of-form button")
        expect(page).to_have_url(f"{served}/entity/{page.url.split('/entity/')[1].split('?')[0]}?as_of=2020-06-01")
        expect(page.locator("#facts")).to_contain_text("kuna")
        expect(page.locator("#facts")).not_to_contain_text("euro")
        page.screenshot(path=shots / "entity-as-of.png", full_page=True)

        # the graph: drawn by Cytoscape.js; clicking a neighbour opens its page (as of the same day)
        page.click("#graph-link")
        page.wait_for_function("window.keclGraph && window.keclGraph.nodes().length > 1")
        page.screenshot(path=shots / "graph.png", full_page=True)
        target = page.evaluate(
            """() => { const cy = window.keclGraph; const n = cy.nodes('[entity]').filter(n => n.data('distance') === 1)[0];
                       const p = n.renderedPosition(); const box = cy.container().getBoundingClientRect();
                       return {x: box.left + p.x, y: box.top + p.y, label: n.data('label')}; }"""
        )
        page.mouse.click(target["x"], target["y"])
        expect(page.locator("#entity-name")).to_have_text(target["label"])
        assert "as_of=2020-06-01" in page.url

        # ask: three modes side by side, the evidence highlighted by attention
        page.goto(f"{served}/ask")
        page.fill("#q", "The currency of Croatia is the [MASK] .")
        page.keyboard.press("Enter")
        expect(page.locator("section.mode")).to_have_count(3)
        for mode in ("closed-book", "concat", "tree"):
            expect(page.locator(f"section[data-mode='{mode}'] .preds li").first).to_be_visible()
        assert page.locator("section[data-mode='concat'] .evidence mark.att").count() > 0
        assert page.locator("section[data-mode='tree'] .evidence mark.att").count() > 0
        page.screenshot(path=shots / "ask.png", full_page=True)

        # runs: the plot is drawn on a canvas over the three cycles
        page.goto(f"{served}/runs")
        expect(page.locator("#plot")).to_have_attribute("data-drawn", "3")
        assert page.locator("#plot canvas").count() == 1
        expect(page.locator("#runs")).to_contain_text("retention held")
        page.screenshot(path=shots / "runs.png", full_page=True)

        # ingest: refused without the key, accepted with it; skipped lines as file:line: reason
        feed = '{"kind": "entity", "id": "atlantis", "name": "Atlantis"}\n{"kind": "fact", "subject": "atlantis"}\n'
        page.goto(f"{served}/ingest")
        expect(page.locator("#need-key")).to_be_visible()
        page.fill("#text", feed)
        page.fill("#name", "feed.jsonl")
        page.click("#ingest-form button")
        expect(page.locator("#error")).to_contain_text("enter the API key")
        assert httpx.get(f"{served}/v1/entities", params={"q": "atlantis"}).json().get("entities") in ([], None)
        page.goto(f"{served}/ingest")
        page.fill("#api-key", KEY)
        page.click("#key-form button")
        expect(page.locator("#key-state")).to_have_text("key entered")
        assert "open-sesame" not in page.url
        page.fill("#text", feed)
        page.fill("#name", "feed.jsonl")
        page.click("#ingest-form button")
        expect(page.locator("#result")).to_contain_text("entities added")
        expect(page.locator("#issues")).to_contain_text("feed.jsonl:2: ")
        page.screenshot(path=shots / "ingest.png", full_page=True)
        page.goto(f"{served}/?q=Atlantis")
        expect(page.locator("a.result").first).to_have_text("Atlantis")

        # markup in an alias is text: shown verbatim, never run
        page.goto(f"{served}/entity/markup-co")
        expect(page.locator("#aliases")).to_contain_text(SCRIPT_ALIAS)
        assert page.evaluate("window.pwned === undefined") and dialogs == []
        page.screenshot(path=shots / "script-alias.png", full_page=True)

        page.goto(f"{served}/stats")
        expect(page.locator("#drift")).to_contain_text("0 (in step)")
        page.screenshot(path=shots / "stats.png", full_page=True)

        # phone width: the same pages stay usable (no horizontal scrolling of the page body)
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        for name, path in [
            ("entity", "/entity/croatia"),
            ("search", "/?q=Croatia"),
            ("ask", "/ask?q=The+capital+of+Croatia+is+[MASK]+."),
        ]:
            phone.goto(f"{served}{path}")
            wider = phone.evaluate(
                """() => Array.from(document.querySelectorAll('main *'))
                      .filter(e => !e.closest('table') && e.getBoundingClientRect().right > window.innerWidth + 1)
                      .map(e => e.tagName + '.' + e.className + ': ' + (e.textContent || '').slice(0, 60))"""
            )
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), (name, wider)
            phone.screenshot(path=shots / f"phone-{name}.png", full_page=True)
        browser.close()
    assert sorted(p.name for p in shots.glob("*.png")) == sorted(
        [
            "search.png",
            "entity.png",
            "entity-as-of.png",
            "graph.png",
            "ask.png",
            "runs.png",
            "ingest.png",
            "script-alias.png",
            "stats.png",
            "phone-entity.png",
            "phone-search.png",
            "phone-ask.png",
        ]
    )
