"""What the tests share: requests, conversations, node cards, deadlines, HTTP errors, the CLI.

One place for each, so a change to a message type is made once. Tests that need
something unusual build it themselves.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from typing import Any

import httpx
import trio

from zswarm.core.ids import node_id_of
from zswarm.core.messages import ChatMessage, GenerateRequest, NodeCard, SamplingParams

ROLES = ("user", "assistant")


def question(text: str = "What is 6 * 7?", *, n: int = 1, **params: Any) -> GenerateRequest:
    """One user message; ``params`` are SamplingParams fields (max_tokens, seed, ...)."""
    return GenerateRequest(messages=(ChatMessage(role="user", content=text),), n=n,
                           params=SamplingParams(**params))


def conversation(*turns: str, n: int = 1, **params: Any) -> GenerateRequest:
    """Turns alternate user, assistant, user, ... (the last one is the question)."""
    messages = tuple(ChatMessage(role=ROLES[i % 2], content=t) for i, t in enumerate(turns))
    return GenerateRequest(messages=messages, n=n, params=SamplingParams(**params))


def key_of(name: str) -> str:
    """A node key for a test node called ``name`` (the same each time: 32 bytes, hex)."""
    return hashlib.sha256(b"test node " + name.encode()).hexdigest()


def id_of(name: str) -> str:
    """The id of the test node called ``name``: its key's (core/ids.py)."""
    return node_id_of(key_of(name))


def card(name: str, *, host: str = "10.0.0.2", **fields: Any) -> NodeCard:
    """The card of a test node called ``name``: its id and key ``id_of(name)`` and
    ``key_of(name)``, the ports 7001 (RPC) and 7002 (PUB)."""
    defaults: dict[str, Any] = {"name": name, "model_id": "m", "workers": 1,
                                "rpc": f"tcp://{host}:7001", "pub": f"tcp://{host}:7002",
                                "node_id": id_of(name), "public": key_of(name)}
    return NodeCard(**{**defaults, **fields})


def within(seconds: float) -> float:
    """An absolute deadline (trio time) ``seconds`` from now, as the coordinator takes."""
    return trio.current_time() + seconds


def error_of(r: httpx.Response) -> dict[str, Any]:
    """The OpenAI error object of a response; fails on any other shape or a traceback."""
    assert "Traceback" not in r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}
    return body["error"]


def zswarm(*args: str) -> subprocess.CompletedProcess[str]:
    """`zswarm ARGS` in a process of its own (stdin closed, 60 s at most)."""
    return subprocess.run([sys.executable, "-m", "zswarm", *args], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
