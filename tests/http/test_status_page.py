"""The status page over real HTTP: its files, /v1/status, the API key, peer counts."""

from __future__ import annotations

import httpx

from tests.http.conftest import start_node

CHAT = {"model": "default", "messages": [{"role": "user", "content": "What is 6 x 7?"}]}


def test_page_files_and_status_snapshot(tmp_path):
    with start_node(tmp_path, answers=["42"], delay_ms=200) as node:
        page = httpx.get(f"{node.root}/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="/status.js"' in page.text
        for path, kind in (("/status.js", "text/javascript"), ("/status.css", "text/css")):
            r = httpx.get(f"{node.root}{path}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind)

        before = httpx.get(f"{node.base}/status").json()
        assert before["node"]["name"] == "h" and before["node"]["state"] == "ready"
        assert before["node"]["address"] == "127.0.0.1" and before["node"]["federation"]
        assert before["requests"] == [] and before["peers"] == []
        assert before["peer_counts"]["alive"] == 0

        r = httpx.post(f"{node.base}/chat/completions",
                       json={**CHAT, "zswarm": {"n": 2, "strategy": "majority"}})
        assert r.status_code == 200
        bad = httpx.post(f"{node.base}/chat/completions",
                         json={**CHAT, "zswarm": {"deadline_ms": 20}})
        assert bad.status_code == 504
        after = httpx.get(f"{node.base}/status").json()
        newest, older = after["requests"][0], after["requests"][1]
        assert newest["error"] and not newest["report"]  # failures are shown too
        assert older["question"] == "What is 6 x 7?" and older["answer"] == "42"
        report = older["report"]
        assert report["strategy"] == "majority" and report["agreement"] == 1.0
        assert [c["text"] for c in report["candidates"]] == ["42", "42"]
        assert report["candidates"][0]["node"] == "h"
        assert report["participants"][0]["outcome"] == "answered"
        assert after["totals"]["tokens_generated"] > 0
        assert after["calibration"] == {}  # no closed question yet

        r = httpx.post(f"{node.base}/chat/completions", json={**CHAT, "messages": [
            {"role": "user", "content": "6 x 7? (a) 42 (b) 43"}], "zswarm": {"n": 2}})
        assert r.status_code == 200
        (lean,) = httpx.get(f"{node.base}/status").json()["calibration"].values()
        # two "42" are two (a), beside 16 pseudo-answers per letter
        assert lean == {"option:a": round(18 / 34, 3), "option:b": round(16 / 34, 3)}

        assert httpx.get(f"{node.root}/health").json()["peers"]["alive"] == 0
        assert httpx.get(f"{node.base}/federation/health").json()["peers"]["dead"] == 0


def test_status_honours_the_api_key_and_can_be_turned_off(tmp_path):
    with start_node(tmp_path, answers=["42"], http={"api_keys": ["k1"]}) as node:
        page = httpx.get(f"{node.root}/")
        assert page.status_code == 200  # the page holds no data
        assert "zswarm http-token" in page.text  # a keyed swarm's token is where to look
        assert httpx.get(f"{node.base}/status").status_code == 401
        ok = httpx.get(f"{node.base}/status", headers={"authorization": "Bearer k1"})
        assert ok.status_code == 200 and ok.json()["node"]["name"] == "h"
    with start_node(tmp_path / "off", answers=["42"], http={"status_page": False}) as node:
        for path in ("/", "/status.js", "/v1/status"):
            r = httpx.get(f"{node.root}{path}")
            assert r.status_code == 404 and "status_page = false" in r.json()["error"]["message"]
