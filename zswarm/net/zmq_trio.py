"""pyzmq sockets usable from trio, and the one place every zmq socket is opened.

ZMQ_FD is edge-triggered: it signals that ZMQ_EVENTS may have changed, and any
operation on the socket (including another task's send) can consume that signal.
So this adapter (a) tries the operation without blocking first, (b) re-reads
ZMQ_EVENTS after every send and wakes the reader if input is now pending, and
(c) lets exactly one task (the reader) wait on the fd. Sends never wait: a full
send queue raises PeerUnavailable (backpressure is the caller's decision).
"""

from __future__ import annotations

import logging
import select
from collections.abc import Iterable
from typing import Any

import trio
import zmq

from zswarm.core.messages import MAX_FRAME_BYTES
from zswarm.errors import LocalProtocolError, PeerUnavailable
from zswarm.net.security import TICKET_PROPERTY, Credentials, connect_as, pin, serve_as

log = logging.getLogger(__name__)

_context: zmq.Context[zmq.Socket[bytes]] | None = None


#: sockets one process may hold (libzmq's default, 1,023, was passed by an mDNS flood once;
#: what the network can make a node open is bounded by the peer table and the probe limiter)
MAX_SOCKETS = 8192
#: a connection that has not finished its ZMTP (and CURVE) handshake within this is closed:
#: idle TCP connections to our ports cannot hold file descriptors for long
HANDSHAKE_MS = 2000


def context() -> zmq.Context[zmq.Socket[bytes]]:
    """The process-wide zmq context (created on first use)."""
    global _context
    if _context is None or _context.closed:
        _context = zmq.Context()
        _context.set(zmq.MAX_SOCKETS, MAX_SOCKETS)
    return _context


def open_socket(kind: int, *, max_msg_bytes: int = MAX_FRAME_BYTES,
                role: str = "", creds: Credentials | None = None,
                reconnect: bool = True) -> zmq.Socket[bytes]:
    """Open a blocking zmq socket with the project's options.

    With ``creds``, ``role`` "server" (will bind) or "client" (will connect, each
    connect pinned to the key the other end must answer with) makes it a CURVE socket
    (net/security.py); no credentials = plain (the node's own ipc:// workers only).
    ``reconnect=False``: one connection attempt (one-shot probes of unknown endpoints).
    """
    try:  # out of sockets or file descriptors: this peer or probe fails, not the node
        sock = context().socket(kind)
    except zmq.ZMQError as exc:
        raise PeerUnavailable(f"cannot open a socket: {exc}") from exc
    try:
        _configure(sock, kind, max_msg_bytes=max_msg_bytes, role=role, creds=creds,
                   reconnect=reconnect)
    except BaseException:
        sock.close()
        raise
    return sock


def _configure(sock: zmq.Socket[bytes], kind: int, *, max_msg_bytes: int, role: str,
               creds: Credentials | None, reconnect: bool) -> None:
    if creds is not None:
        if role == "server":
            serve_as(sock, creds, kind)
        elif role == "client":
            connect_as(sock, creds, kind)
        else:
            raise LocalProtocolError("a CURVE socket must be a server or a client")
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_msg_bytes)
    sock.setsockopt(zmq.SNDHWM, 10_000)
    # per connection: a sender that outruns the node waits in its own queue (or drops,
    # for PUB), so a flood costs at most RCVHWM x max_msg_bytes of this node's memory
    sock.setsockopt(zmq.RCVHWM, 1_000)
    # No ZMTP heartbeats (HEARTBEAT_IVL): with them, libzmq 4.3.5 aborts the whole process
    # ("Assertion failed: _input_stopped", libzmq issues #3937, #4767) when a receive queue
    # is full, i.e. whenever a peer floods us (found by bench/fuzz_node.py; reproduced
    # with a plain PUB/SUB pair). Dead connections are found by TCP keepalive instead,
    # and the federation closes the sockets of a peer whose heartbeats stop and
    # reconnects afresh when a probe hears it again.
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 2)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)
    sock.setsockopt(zmq.CONNECT_TIMEOUT, 500)
    sock.setsockopt(zmq.RECONNECT_IVL, 100 if reconnect else -1)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
    sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)


class TrioSocket:
    """A zmq socket driven from trio: any task may send, one task receives."""

    @property
    def fd(self) -> int:
        """ZMQ_FD: readable when ZMQ_EVENTS should be read again (see the module's notes)."""
        return self._fd

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.sock = sock
        self._fd: int = sock.getsockopt(zmq.FD)
        self._wake: trio.CancelScope | None = None
        self._receiving = False
        self.closed = False

    @classmethod
    def open(cls, kind: int, *, max_msg_bytes: int = MAX_FRAME_BYTES, role: str = "",
             creds: Credentials | None = None, reconnect: bool = True) -> TrioSocket:
        return cls(open_socket(kind, max_msg_bytes=max_msg_bytes, role=role, creds=creds,
                               reconnect=reconnect))

    @classmethod
    def bound(cls, kind: int, endpoint: str, *, max_msg_bytes: int = MAX_FRAME_BYTES,
              role: str = "server", creds: Credentials | None = None
              ) -> tuple[TrioSocket, str]:
        """A socket bound to ``endpoint`` and the endpoint it got; closed if binding fails."""
        sock = cls.open(kind, max_msg_bytes=max_msg_bytes, role=role, creds=creds)
        try:
            return sock, sock.bind(endpoint)
        except BaseException:
            sock.close()
            raise

    def bind(self, endpoint: str) -> str:
        """Bind and return the resolved endpoint (with the real port for tcp://host:0).

        A failure (port in use, address not local) is an OSError, as for any socket.
        """
        try:
            if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
                port = self.sock.bind_to_random_port(endpoint[: endpoint.rindex(":")])
                return f"{endpoint[: endpoint.rindex(':')]}:{port}"
            self.sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise OSError(exc.errno, exc.strerror) from exc
        return str(self.sock.getsockopt_string(zmq.LAST_ENDPOINT))

    def connect(self, endpoint: str, public: str | None = None) -> None:
        """Connect (zmq connects in the background), pinned to the node key ``public``
        (hex) the other end must answer with (a CURVE socket); PeerUnavailable if zmq
        refuses the endpoint or there is no key to pin."""
        if public is not None:
            pin(self.sock, public)
        try:
            self.sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise PeerUnavailable(f"cannot connect to {endpoint!r}: {exc}") from exc

    def setsockopt(self, option: int, value: int | bytes) -> None:
        """Set a zmq socket option (SUBSCRIBE, ROUTER_MANDATORY, ...)."""
        self.sock.setsockopt(option, value)

    def _kick(self) -> None:
        """After any socket operation: wake the reader if input became pending."""
        if self._wake is not None and self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._wake.cancel()

    def send_multipart(self, frames: Iterable[bytes]) -> None:
        """Queue a message without blocking; PeerUnavailable if the queue is full."""
        if self.closed:
            raise trio.ClosedResourceError("socket is closed")
        try:
            self.sock.send_multipart(list(frames), flags=zmq.NOBLOCK)
        except zmq.Again as exc:
            raise PeerUnavailable("send queue full (peer gone or too slow)") from exc
        except zmq.ZMQError as exc:
            raise PeerUnavailable(f"send failed: {exc}") from exc
        finally:
            if not self.closed:
                self._kick()

    async def send(self, frames: Iterable[bytes]) -> None:
        """send_multipart plus a checkpoint, for use in loops."""
        self.send_multipart(frames)
        await trio.lowlevel.checkpoint()

    def recv_nowait(self) -> list[bytes] | None:
        """A message waiting on the socket, or None (never waits)."""
        if self.closed:
            raise trio.ClosedResourceError("socket is closed")
        if not self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            return None  # cheaper than a receive that raises zmq.Again (most calls)
        try:
            return self.sock.recv_multipart(flags=zmq.NOBLOCK)
        except zmq.Again:
            return None

    async def recv_from(self, *, ticket: bool = False) -> tuple[list[bytes], str, str]:
        """A message and who sent it, as the CURVE handshake proved it (a server socket):
        (frames, the sender's key in hex ("" without CURVE), with ``ticket`` the
        membership ticket it showed ("" none, or not asked for))."""
        frames = await self.recv_multipart(copy=False)
        return [f.bytes for f in frames], _property(frames[-1], "User-Id"), \
            _property(frames[-1], TICKET_PROPERTY) if ticket else ""

    async def recv_multipart(self, *, copy: bool = True) -> list[Any]:
        if self._receiving:
            raise LocalProtocolError("two tasks are receiving on one zmq socket")
        self._receiving = True
        try:
            while True:
                if self.closed:
                    raise trio.ClosedResourceError("socket is closed")
                try:
                    frames = self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=copy)
                except zmq.Again:
                    pass
                else:
                    await trio.lowlevel.checkpoint()
                    return frames
                if self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    continue
                with trio.CancelScope() as scope:
                    self._wake = scope
                    try:
                        await trio.lowlevel.wait_readable(self._fd)
                    finally:
                        self._wake = None
        finally:
            self._receiving = False

    def close(self, linger_ms: int = 0) -> None:
        """Close now; with ``linger_ms`` queued messages still go out in the background."""
        if self.closed:
            return
        self.closed = True
        try:
            trio.lowlevel.notify_closing(self._fd)
        except RuntimeError:
            pass  # not inside trio (closing at interpreter shutdown)
        self.sock.close(linger=linger_ms)

    def __enter__(self) -> TrioSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _property(frame: zmq.Frame, name: str) -> str:
    """A received message's connection property ("" when it has none)."""
    try:
        return str(frame.get(name))
    except zmq.ZMQError:
        return ""


class Pollset:
    """Sockets read in passes and never waited on: which may have input, in one system call.

    A socket's ZMQ_FD is readable once new input arrived after a read found none; input
    left behind by a pass that stopped early (a reader's limit) signals nothing, so the
    reader says so with ``again``. Each socket is keyed (a peer's id, say); ``remove``
    it before closing it (its fd number may be reused).
    """

    def __init__(self) -> None:
        self._poll = select.poll()
        self._keys: dict[int, str] = {}
        self._again: set[str] = set()

    def add(self, key: str, sock: TrioSocket) -> None:
        self._poll.register(sock.fd, select.POLLIN)
        self._keys[sock.fd] = key
        self._again.add(key)  # whatever arrived before it was added

    def remove(self, sock: TrioSocket) -> None:
        if self._keys.pop(sock.fd, None) is not None:
            self._poll.unregister(sock.fd)

    def again(self, key: str) -> None:
        """Read ``key`` at the next pass whatever its fd says (input was left behind)."""
        self._again.add(key)

    def ready(self) -> set[str]:
        """The keys whose sockets may have input now (without waiting)."""
        keys, self._again = self._again, set()
        keys.update(self._keys[fd] for fd, _ in self._poll.poll(0) if fd in self._keys)
        return keys
