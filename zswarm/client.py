"""A blocking client for a node's RPC endpoint (used by the CLI; no trio needed).

With the swarm's key (``key=``, from ``[security] swarm_key_file``) the connection
is CURVE-encrypted; a node with a key refuses clients without it (the request
then times out: ZeroMQ does not tell a refused client why).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import TypeVar

import zmq

from zswarm.config import Config
from zswarm.core import codec
from zswarm.core.ids import new_request_id
from zswarm.core.messages import (
    ClientReply,
    ClientRequest,
    Error,
    GenerateRequest,
    Message,
    PeersReply,
    PeersRequest,
    Status,
    StatusRequest,
)
from zswarm.errors import PeerUnavailable, RemoteProtocolError, error_from_kind
from zswarm.net.security import SwarmKey
from zswarm.net.zmq_trio import open_socket


class NodeClient:
    """One DEALER connection to a node's RPC endpoint, reused across calls (blocking).

    >>> with NodeClient("tcp://127.0.0.1:17617") as node:
    ...     reply = node.ask(request, strategy="majority", deadline_ms=60_000)
    """

    def __init__(self, endpoint: str, *, key: SwarmKey | None = None) -> None:
        self.endpoint = endpoint
        self.key = key
        self.sock = open_socket(zmq.DEALER, role="client", key=key)
        try:
            self.sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.sock.close(linger=0)
            raise PeerUnavailable(f"cannot connect to {endpoint!r}: {exc}") from exc

    def exchange(self, msg: Message, request_id: str, timeout_s: float) -> Message:
        """Send and wait for the reply to ``request_id`` (late replies to others are skipped)."""
        self.sock.send(codec.encode(msg))
        deadline = time.monotonic() + timeout_s
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not self.sock.poll(left_ms):
                raise PeerUnavailable(
                    f"no answer from the node at {self.endpoint} within {timeout_s:.1f} s")
            reply = codec.decode(self.sock.recv())
            if getattr(reply, "request_id", request_id) in (request_id, None):
                break
        if isinstance(reply, Error):
            raise error_from_kind(reply.kind, reply.message)
        return reply

    def status(self, *, timeout_s: float = 2.0) -> Status:
        rid = new_request_id()
        return _expect(self.exchange(StatusRequest(request_id=rid), rid, timeout_s), Status)

    def reach(self, *, timeout_s: float = 3.0,
              key_hint: str = "[security] swarm_key_file in --config") -> Status:
        """The node's status within ``timeout_s``, or PeerUnavailable saying the likely cause.

        A client that asks a node it cannot reach would otherwise wait out the whole
        deadline: zmq connects in the background and a keyed node drops a handshake
        without its key silently. So: one status exchange first (on this client's
        connection, which the ask then uses), and when it fails, one plain TCP connection
        to tell "nothing listens there" from "something listens and does not answer"
        (another program, or a node of a keyed swarm: ``key_hint`` says where the caller
        takes a key from).
        """
        try:
            return self.status(timeout_s=timeout_s)
        except PeerUnavailable as exc:
            raise PeerUnavailable(
                f"no zswarm node answers at {self.endpoint} within {timeout_s:.0f} s: "
                f"{_why_silent(self.endpoint, self.key, key_hint)}") from exc

    def peers(self, *, timeout_s: float = 2.0) -> PeersReply:
        rid = new_request_id()
        return _expect(self.exchange(PeersRequest(request_id=rid), rid, timeout_s), PeersReply)

    def ask(self, request: GenerateRequest, *, strategy: str | None,
            deadline_ms: int, adaptive: bool = False) -> ClientReply:
        """``adaptive``: ``request.n`` is a budget (core/stopping.py)."""
        rid = new_request_id()
        msg = ClientRequest(request_id=rid, request=request, strategy=strategy,
                            deadline_ms=deadline_ms, adaptive=adaptive)
        return _expect(self.exchange(msg, rid, deadline_ms / 1000 + 5.0), ClientReply)

    def close(self) -> None:
        self.sock.close(linger=0)

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


T = TypeVar("T")


def _expect(reply: Message, kind: type[T]) -> T:
    if not isinstance(reply, kind):
        raise RemoteProtocolError(f"expected {kind.__name__}, got {type(reply).__name__}")
    return reply


def status(endpoint: str, *, timeout_s: float = 2.0, key: SwarmKey | None = None) -> Status:
    with NodeClient(endpoint, key=key) as node:
        return node.status(timeout_s=timeout_s)


def peers(endpoint: str, *, timeout_s: float = 2.0, key: SwarmKey | None = None) -> PeersReply:
    with NodeClient(endpoint, key=key) as node:
        return node.peers(timeout_s=timeout_s)


def ask(endpoint: str, request: GenerateRequest, *, strategy: str | None,
        deadline_ms: int, key: SwarmKey | None = None, adaptive: bool = False) -> ClientReply:
    with NodeClient(endpoint, key=key) as node:
        return node.ask(request, strategy=strategy, deadline_ms=deadline_ms,
                        adaptive=adaptive)


def node_json(config: Config) -> tuple[int, str] | None:
    """(pid, RPC endpoint) from the node.json a node started with this config wrote."""
    path: Path = config.state_path / "node.json"
    try:
        info = json.loads(path.read_text())
        return int(info["pid"]), str(info["rpc_endpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def reach(endpoint: str, *, key: SwarmKey | None = None, timeout_s: float = 3.0,
          key_hint: str = "[security] swarm_key_file in --config") -> Status:
    """``NodeClient.reach`` on a connection of its own."""
    with NodeClient(endpoint, key=key) as node:
        return node.reach(timeout_s=timeout_s, key_hint=key_hint)


def _why_silent(endpoint: str, key: SwarmKey | None, key_hint: str) -> str:
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
            pass
    except (OSError, ValueError):
        return ("nothing listens there (is the node running? zswarm node --config FILE; "
                "is the port right?)")
    if key is None:
        return ("something listens there but does not answer: a node of a keyed swarm "
                f"answers only holders of its key ({key_hint})")
    return ("something listens there but does not answer: it may use another swarm key, "
            "or none, or not be a zswarm node")


def running_node_endpoint(config: Config, *, key: SwarmKey | None = None) -> str | None:
    """The RPC endpoint of a node started with this config, if one answers right now."""
    written = node_json(config)
    if written is None:
        return None
    endpoint = written[1]
    try:
        status(endpoint, timeout_s=0.5, key=key)
    except (PeerUnavailable, RemoteProtocolError):
        return None
    return endpoint
