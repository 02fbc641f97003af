"""A blocking client for a node's RPC endpoint (used by the CLI; no trio needed)."""

from __future__ import annotations

import json
from pathlib import Path

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
from zswarm.net.zmq_trio import open_socket


def _exchange(endpoint: str, msg: Message, timeout_s: float) -> Message:
    sock = open_socket(zmq.DEALER)
    try:
        sock.connect(endpoint)
        sock.send(codec.encode(msg))
        if not sock.poll(int(timeout_s * 1000)):
            raise PeerUnavailable(f"no answer from the node at {endpoint} within {timeout_s:.1f} s")
        reply = codec.decode(sock.recv())
    finally:
        sock.close(linger=0)
    if isinstance(reply, Error):
        raise error_from_kind(reply.kind, reply.message)
    return reply


def status(endpoint: str, *, timeout_s: float = 2.0) -> Status:
    reply = _exchange(endpoint, StatusRequest(request_id=new_request_id()), timeout_s)
    if not isinstance(reply, Status):
        raise RemoteProtocolError(f"expected Status, got {type(reply).__name__}")
    return reply


def peers(endpoint: str, *, timeout_s: float = 2.0) -> PeersReply:
    reply = _exchange(endpoint, PeersRequest(request_id=new_request_id()), timeout_s)
    if not isinstance(reply, PeersReply):
        raise RemoteProtocolError(f"expected PeersReply, got {type(reply).__name__}")
    return reply


def ask(endpoint: str, request: GenerateRequest, *, strategy: str | None,
        deadline_ms: int) -> ClientReply:
    msg = ClientRequest(request_id=new_request_id(), request=request, strategy=strategy,
                        deadline_ms=deadline_ms)
    reply = _exchange(endpoint, msg, deadline_ms / 1000 + 5.0)
    if not isinstance(reply, ClientReply):
        raise RemoteProtocolError(f"expected ClientReply, got {type(reply).__name__}")
    return reply


def running_node_endpoint(config: Config) -> str | None:
    """The RPC endpoint of a node started with this config, if one answers right now."""
    path: Path = config.state_path / "node.json"
    try:
        info = json.loads(path.read_text())
        endpoint = str(info["rpc_endpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        status(endpoint, timeout_s=0.5)
    except (PeerUnavailable, RemoteProtocolError):
        return None
    return endpoint
