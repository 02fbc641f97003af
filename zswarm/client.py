"""A blocking client for a node's RPC endpoint (used by the CLI; no trio needed).

With the swarm's key (``key=``, from ``[security] swarm_key_file``) the connection
is CURVE-encrypted; a node with a key refuses clients without it (the request
then times out: ZeroMQ does not tell a refused client why).

A node that dies while it answers must not leave the caller waiting out the deadline
(an ask's can be minutes): the client watches its connection (a ZeroMQ socket
monitor: the node's end closed, as when its process is killed) and, on a long
exchange, pings the node's status every PING_EVERY_S; either failing ends the wait
with NodeGone, which says what happened and what to do.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import TypeVar

import zmq
from zmq.utils.monitor import recv_monitor_message

from zswarm import statedir
from zswarm.config import Config
from zswarm.core import codec
from zswarm.core.ids import is_public, new_request_id, unpinned
from zswarm.core.messages import (
    Cancel,
    ClientProgress,
    ClientReply,
    ClientRequest,
    ClientToken,
    Error,
    GenerateRequest,
    Message,
    PeersReply,
    PeersRequest,
    Status,
    StatusRequest,
)
from zswarm.errors import PeerUnavailable, RemoteProtocolError, error_from_kind
from zswarm.net.security import SwarmKey, one_off, pin
from zswarm.net.zmq_trio import open_socket

#: a long exchange asks the node's status this often ...
PING_EVERY_S = 2.0
#: ... and gives up when nothing at all has come back for this long (a machine that
#: vanished without closing its connections: powered off, unplugged)
SILENT_FOR_S = 15.0
#: after Ctrl-C, how long the client waits for its Cancel to leave before it exits
CANCEL_LINGER_MS = 1000


class NodeGone(PeerUnavailable):
    """The node's connection closed, or it stopped answering, while a request was out."""


class NodeClient:
    """One DEALER connection to a node's RPC endpoint, reused across calls (blocking).

    >>> with NodeClient("tcp://127.0.0.1:17617?key=3f9a...") as node:
    ...     reply = node.ask(request, strategy="majority", deadline_ms=60_000)
    """

    def __init__(self, address: str, *, key: SwarmKey | None = None) -> None:
        self.endpoint, self.public = unpinned(address)
        self.key = key
        if not is_public(self.public):
            raise PeerUnavailable(
                f"{address[:200]}: no node key to reach it with: give its address, "
                "tcp://HOST:PORT?key=KEY (the node's start-up line, its node.json and "
                "zswarm peers show it), so nobody else can answer in its name")
        # a key of its own (one-off) and, in a keyed swarm, the ticket the key file makes
        self.sock = open_socket(zmq.DEALER, role="client", creds=one_off(key))
        self.monitor: zmq.Socket[bytes] | None = None
        #: how long close() lets unsent messages go out (a Cancel after Ctrl-C)
        self._linger_ms = 0
        try:
            pin(self.sock, self.public)
            self.sock.connect(self.endpoint)
            self.monitor = self.sock.get_monitor_socket(
                zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        except zmq.ZMQError as exc:
            self.close()
            raise PeerUnavailable(f"cannot connect to {self.endpoint!r}: {exc}") from exc
        #: the node's end of the connection was up (a handshake succeeded) and then closed
        self._lost = False
        self._up = False

    def _watch(self) -> None:
        """Read the monitor's events: a connection that was up and closed is lost."""
        assert self.monitor is not None
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._up = True
            elif event == zmq.EVENT_DISCONNECTED and self._up:
                self._lost, self._up = True, False

    def exchange(self, msg: Message, request_id: str, timeout_s: float, *,
                 watch: bool = False, on_token: Callable[[str], None] | None = None,
                 on_progress: Callable[[ClientProgress], None] | None = None) -> Message:
        """Send and wait for the reply to ``request_id`` (late replies to others are skipped).

        ``watch`` (a long exchange, an ask): NodeGone as soon as the connection closes, or
        when the node has not answered a status ping for SILENT_FOR_S. ``on_token``: the
        answer's pieces (ClientToken) as they come; ``on_progress``: each candidate's
        arrival (ClientProgress)."""
        self._watch()
        self._lost = False  # a connection lost before this request was sent is not its loss
        self.sock.send(codec.encode(msg))
        start = last_heard = time.monotonic()
        deadline = start + timeout_s
        pinged = start
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        assert self.monitor is not None
        poller.register(self.monitor, zmq.POLLIN)
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise PeerUnavailable(
                    f"no answer from the node at {self.endpoint} within {timeout_s:.1f} s")
            if watch and now - last_heard >= SILENT_FOR_S:
                raise NodeGone(f"the node at {self.endpoint} stopped answering: nothing for "
                               f"{SILENT_FOR_S:.0f} s, not even its status")
            if watch and now - pinged >= PING_EVERY_S:
                self.sock.send(codec.encode(StatusRequest(request_id=new_request_id())))
                pinged = now
            wait_s = min(deadline, pinged + PING_EVERY_S if watch else deadline) - now
            ready = dict(poller.poll(max(1, int(wait_s * 1000))))
            if self.monitor in ready:
                self._watch()
            if self.sock not in ready and not self.sock.poll(0):
                # nothing to read (a draining node's last answer is read before its close)
                if watch and self._lost:
                    raise NodeGone(f"the node at {self.endpoint} closed the connection while "
                                   "answering: it stopped or crashed")
                continue
            reply = codec.decode(self.sock.recv())
            last_heard = time.monotonic()
            if isinstance(reply, ClientToken):
                if reply.request_id == request_id and on_token is not None:
                    on_token(reply.text)
                continue
            if isinstance(reply, ClientProgress):
                if reply.request_id == request_id and on_progress is not None:
                    on_progress(reply)
                continue
            if getattr(reply, "request_id", request_id) in (request_id, None):
                break  # else a status ping's answer (or a late reply): the node lives
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
            deadline_ms: int, adaptive: bool = False,
            on_token: Callable[[str], None] | None = None,
            on_progress: Callable[[ClientProgress], None] | None = None) -> ClientReply:
        """``adaptive``: ``request.n`` is a budget (core/stopping.py); ``on_token``: the
        answer's text as it is generated (one candidate only); ``on_progress``: each
        candidate's arrival (several candidates only). Interrupted (Ctrl-C), it
        cancels the ask on the node - and so on every peer it reached - before it raises."""
        rid = new_request_id()
        msg = ClientRequest(request_id=rid, request=request, strategy=strategy,
                            deadline_ms=deadline_ms, adaptive=adaptive,
                            stream=on_token is not None or on_progress is not None)
        try:
            reply = self.exchange(msg, rid, deadline_ms / 1000 + 5.0, watch=True,
                                  on_token=on_token, on_progress=on_progress)
        except KeyboardInterrupt:
            self.sock.send(codec.encode(Cancel(request_id=rid)), zmq.NOBLOCK)
            self._linger_ms = CANCEL_LINGER_MS  # the Cancel leaves before the socket closes
            raise
        return _expect(reply, ClientReply)

    def close(self) -> None:
        if self.monitor is not None:
            self.sock.disable_monitor()
            self.monitor.close(linger=0)
        self.sock.close(linger=self._linger_ms)

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
    info = statedir.read(config)
    return (info.pid, info.rpc_endpoint) if info is not None else None


def key_mismatch(config: Config, key: SwarmKey | None) -> str:
    """Why the node started with this config's state dir would not answer this client:
    its swarm key (from its node.json) is not this config's; "" when they agree or when
    it cannot be told."""
    info = statedir.read(config)
    if info is None:
        return ""
    theirs = info.swarm_key
    mine = key.fingerprint if key is not None else ""
    if theirs == mine:
        return ""
    said = f"key {theirs}" if theirs else "no key"
    return (f"the node runs with {said}, this config with "
            f"{'key ' + mine if mine else 'no key'} ([security] swarm_key_file): use the "
            "config the node was started with")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


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
