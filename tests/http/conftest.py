"""Nodes as `zswarm node` processes on loopback, reached over real HTTP."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from zswarm.testing.cluster import NodeProcess, node_config


class HttpNode:
    def __init__(self, proc: NodeProcess) -> None:
        self.proc = proc
        info = proc.info
        self.root = f"http://127.0.0.1:{info.http_port}"
        self.base = f"{self.root}/v1"
        self.rpc = str(info.rpc_endpoint)


@contextmanager
def start_node(directory: Path, name: str = "h", **kw: Any) -> Iterator[HttpNode]:
    kw.setdefault("swarm", "http-" + secrets.token_hex(6))
    proc = NodeProcess(node_config(directory, name, **kw))
    try:
        proc.wait_ready(60)
        yield HttpNode(proc)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def real_node(tmp_path_factory) -> Iterator[HttpNode]:
    """The default model, one worker: the node every OpenAI-client test talks to."""
    with start_node(tmp_path_factory.mktemp("real")) as node:
        yield node
