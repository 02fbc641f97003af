"""HTTP closed where it matters: a keyed node serves nothing but /health and the status
page's files without the swarm's HTTP token; Host headers are checked (DNS rebinding);
bodies are JSON only (no cross-site "simple" POST). Real node processes, real HTTP, the
official OpenAI client."""

from __future__ import annotations

import subprocess
import sys

import httpx
import openai
import pytest

from tests.http.conftest import start_node
from zswarm.net.security import http_token, write_key_file

CHAT = {"model": "default", "messages": [{"role": "user", "content": "What is 6 x 7?"}]}


def test_a_keyed_node_answers_only_holders_of_its_http_token(tmp_path):
    key = write_key_file(tmp_path / "swarm.key")
    with start_node(tmp_path, answers=["42"],
                    security={"swarm_key_file": str(tmp_path / "swarm.key")}) as node:
        for method, path in (("POST", "/chat/completions"), ("POST", "/completions"),
                             ("GET", "/status"), ("GET", "/models"),
                             ("POST", "/federation/vote"), ("GET", "/federation/peers"),
                             ("GET", "/federation/health")):
            r = httpx.request(method, node.base + path, json=CHAT)
            assert r.status_code == 401, (path, r.status_code)
        assert httpx.get(f"{node.root}/health").status_code == 200  # for load balancers
        assert httpx.get(f"{node.root}/").status_code == 200  # the page; it asks for the key
        printed = subprocess.run(
            [sys.executable, "-m", "zswarm", "http-token", "--config", str(node.proc.config)],
            capture_output=True, text=True, check=True).stdout.strip()
        assert printed == http_token(key)
        client = openai.OpenAI(base_url=node.base, api_key=printed, max_retries=0)
        reply = client.chat.completions.create(model="default", messages=CHAT["messages"])
        assert reply.choices[0].message.content == "42"
        wrong = openai.OpenAI(base_url=node.base, api_key="zswarm-guess", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="default", messages=CHAT["messages"])


def test_http_token_without_a_swarm_key_says_what_to_use(tmp_path):
    with start_node(tmp_path, answers=["42"]) as node:
        r = subprocess.run([sys.executable, "-m", "zswarm", "http-token", "--config",
                            str(node.proc.config)], capture_output=True, text=True)
        assert r.returncode == 2 and "api_keys" in r.stderr


def test_foreign_host_headers_and_non_json_bodies_are_refused(tmp_path):
    with start_node(tmp_path, answers=["42"], http={"allowed_hosts": ["llm.home.arpa"]}) as node:
        port = node.root.rsplit(":", 1)[1]
        # DNS rebinding: the browser sends the attacker's host name to our address
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
            r = httpx.post(f"{node.base}/chat/completions", json=CHAT, headers={"Host": host})
            assert r.status_code == 403 and "allowed_hosts" in r.text, host
            assert httpx.get(f"{node.base}/status", headers={"Host": host}).status_code == 403
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LLM.home.arpa"):
            r = httpx.post(f"{node.base}/chat/completions", json=CHAT, headers={"Host": host})
            assert r.status_code == 200, (host, r.text)
        # a cross-site form or fetch without preflight: text/plain, or no type at all
        body = b'{"model": "default", "messages": [{"role": "user", "content": "hi"}]}'
        for headers in ({"content-type": "text/plain"}, {}):
            r = httpx.post(f"{node.base}/chat/completions", content=body, headers=headers)
            assert r.status_code == 415, headers
        r = httpx.options(f"{node.base}/chat/completions",
                          headers={"Origin": "http://evil.example",
                                   "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers  # no CORS unless configured


def test_host_names_and_a_node_bound_to_every_interface():
    from types import SimpleNamespace

    from zswarm.http.app import host_name, own_hosts
    from zswarm.net.addresses import interfaces

    assert host_name("Example.LOCAL.:8080") == "example.local"
    assert host_name("[::1]:17615") == "::1" and host_name("10.0.0.2") == "10.0.0.2"
    node = SimpleNamespace(ctx=SimpleNamespace(card=SimpleNamespace(rpc="tcp://0.0.0.0:1")),
                           config=SimpleNamespace(http=SimpleNamespace(allowed_hosts=["X.lan"])))
    hosts = own_hosts(node)  # type: ignore[arg-type]
    assert {a for a, _ in interfaces().values()} <= hosts and "x.lan" in hosts
    assert "0.0.0.0" not in hosts
