"""The status page in a real browser (headless Chromium, driven by Playwright).

A two-node swarm on loopback: node a's page must load without console errors, show
both nodes (a as itself, b as an alive peer), and after a question show the request
with candidates from both. The API key form is checked too. A screenshot is saved
to tests/artifacts/status_page.png (the README's picture comes from it).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.debian import need
from tests.http.conftest import start_node
from zswarm.testing.cluster import wait_until

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
WAIT_MS = 15_000
#: a peer's name is the peer's to choose: the page must show it as text, never as HTML
EVIL = '<img src=x onerror="console.error(1)"><i>evil</i>'

pytestmark = pytest.mark.slow


@contextmanager
def browser_page() -> Iterator[tuple[object, list[str]]]:
    """A Chromium page and the list its console errors and uncaught exceptions go to."""
    chromium = need(("chromium",), ("chromium",))["chromium"]
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        # --no-sandbox: the tests run as root in CI, where Chromium's sandbox refuses to start
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page, errors
        finally:
            browser.close()


def test_status_page_shows_the_swarm_and_a_request(tmp_path):
    swarm = "page-" + secrets.token_hex(6)
    with start_node(tmp_path, "a", answers=["42"], swarm=swarm) as a, \
            start_node(tmp_path, "b", answers=["42"], swarm=swarm), \
            start_node(tmp_path, "c", answers=["42"], swarm=swarm, node={"name": EVIL}), \
            browser_page() as (page, errors):
        wait_until(lambda: httpx.get(f"{a.base}/status").json()["peer_counts"]["alive"] == 2,
                   15, what="a sees b and c alive")
        b_id = next(p["node_id"] for p in httpx.get(f"{a.base}/status").json()["peers"]
                    if p["name"] == "b")  # the allow-list is by node id
        page.goto(f"{a.root}/")
        page.wait_for_selector('#peers tr[data-name="b"][data-state="alive"]', timeout=WAIT_MS)
        assert page.text_content("#node-name").startswith("a (")
        assert page.is_hidden("#key-form")  # no API key configured: no form
        assert "2 alive" in page.text_content("#peer-counts")
        assert EVIL in page.text_content("#peers") and EVIL in page.text_content("#events")
        assert page.locator("img, i").count() == 0  # shown as text, not made into elements
        assert "127.0.0.1" in page.text_content("#node")

        r = httpx.post(f"{a.base}/chat/completions", timeout=30, json={
            "model": "default", "messages": [{"role": "user", "content": "What is 6 x 7?"}],
            "zswarm": {"n": 4, "strategy": "majority", "peers": [b_id]}})
        assert r.status_code == 200
        page.wait_for_selector("#requests details.request", timeout=WAIT_MS)
        # the report is announced on the request, not behind an unmarked click
        page.get_by_text("show the report: candidates, scores, who said what").click()
        page.get_by_text("hide the report").wait_for(timeout=WAIT_MS)
        rows = page.locator("#requests details.request table.candidates tbody tr")
        rows.first.wait_for(timeout=WAIT_MS)
        nodes = {row.split("/")[0] for row in
                 rows.locator("td:nth-child(2)").all_text_contents()}
        assert nodes == {"a", "b"}
        assert page.locator("#requests tr.winner").count() == 1
        assert "What is 6 x 7?" in page.text_content("#requests")
        events = page.text_content("#events")
        assert "peer b joined" in events

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "status_page.png"), full_page=True)

        # a phone (420 px): nothing wider than the screen, every peer cell named
        page.set_viewport_size({"width": 420, "height": 900})
        page.locator("#peers td[data-label='state']").first.wait_for(timeout=WAIT_MS)
        assert page.evaluate("document.documentElement.scrollWidth") <= 420
        for box in (page.locator(sel).bounding_box() for sel in
                    ("#peers", "#requests table.candidates", "#node", "#events")):
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 420, box
        assert page.is_hidden("#peers thead")  # the rows stack, each cell with its label
        page.screenshot(path=str(ARTIFACTS / "status_page_420px.png"), full_page=True)
        assert errors == []


def test_status_page_asks_for_the_api_key(tmp_path):
    with start_node(tmp_path, answers=["42"], http={"api_keys": ["k1"]}) as node, \
            browser_page() as (page, errors):
        page.goto(f"{node.root}/")
        page.wait_for_selector("#key-form:not([hidden])", timeout=WAIT_MS)
        assert page.is_hidden("#main")
        page.fill("#key-input", "wrong")
        page.click("#key-form button")
        # a locator, not wait_for_function: that evaluates a string, which the page's CSP
        # (script-src 'self') refuses whenever the condition is not true at once
        page.locator("#key-error", has_text="wrong key").wait_for(timeout=WAIT_MS)
        page.fill("#key-input", "k1")
        page.click("#key-form button")
        page.wait_for_selector("#main:not([hidden])", timeout=WAIT_MS)
        assert page.text_content("#node-name").startswith("h (")
        # the two 401s are the browser reporting the refused fetches; nothing else may fail
        assert [e for e in errors if "401" not in e] == []
