"""Serving the HTTP shim: the bound listener, at most ``[http] max_connections`` at once.

Owns: binding the HTTP socket (so its port is known before serving), and the accept
loop that hands each connection to hypercorn's trio connection handler. It is ours,
not ``hypercorn.trio.serve``, for one reason: a bound on connections. Every open
connection holds a file descriptor until its request headers arrive (or
``header_timeout_ms``), so a LAN host opening idle connections could otherwise take
every descriptor the node has; past the cap new connections wait in the kernel's
backlog. Running out of descriptors anyway (EMFILE) pauses accepting for a moment
and is logged at most once every ten seconds (trio's own loop logs every 0.1 s).
What a request means is http/app.py's.
"""

from __future__ import annotations

import errno
import logging
import socket

import hypercorn.config
import trio
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from zswarm.http.app import build_app
from zswarm.http.base import HttpNode
from zswarm.net.guard import QuietLog

log = logging.getLogger(__name__)
_quiet = QuietLog(log)

#: accept errors that mean "out of descriptors or memory for now": wait, then go on
_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_CAPACITY_PAUSE_S = 0.1


def open_listener(host: str, port: int) -> socket.socket:
    """The HTTP socket, bound (so its port can be advertised before the server starts)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _hypercorn_config(node: HttpNode) -> hypercorn.config.Config:
    config = hypercorn.config.Config()
    config.accesslog = None
    config.errorlog = logging.getLogger("zswarm.http.server")
    # No read timeout: hypercorn applies it to every read, including while a client
    # quietly waits for a long generation. Headers get header_timeout_ms instead
    # (hypercorn's keep-alive timer runs until a request's headers are complete),
    # bodies body_timeout_ms (http/base.py read_body); the answer has the request's deadline.
    config.read_timeout = None
    config.keep_alive_timeout = node.config.http.header_timeout_s
    config.include_server_header = False
    return config


async def serve_http(node: HttpNode, listener: socket.socket, *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve on a bound ``listener`` (``open_listener``; taken over) until cancelled."""
    config = _hypercorn_config(node)
    # Starlette is an ASGI app; hypercorn's own type for one is narrower than Starlette's
    app = wrap_app(build_app(node), config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    context = WorkerContext(None)
    connections = trio.Semaphore(node.config.http.max_connections)
    listener.listen(config.backlog)
    sock = trio.SocketListener(trio.socket.from_stdlib_socket(listener))

    async def serve_one(stream: trio.SocketStream) -> None:
        try:
            # typed for TLS streams; plain ones are what hypercorn.trio.serve passes too
            await TCPServer(app, config, context, ConnectionState({}),
                            stream)  # type: ignore[arg-type]
        finally:
            # hypercorn closes the stream itself, but a cancellation (the node stopping)
            # can cut that short after send_eof: close the socket here, always
            stream.socket.close()
            connections.release()

    async with trio.open_nursery() as nursery:
        task_status.started()
        try:
            while True:
                await connections.acquire()  # at the cap: wait here, not in accept()
                try:
                    stream = await sock.accept()
                except OSError as exc:
                    connections.release()
                    if exc.errno not in _CAPACITY_ERRNOS:
                        raise
                    _quiet.log(logging.WARNING, "accept", "http: cannot accept a connection "
                               "(%s); retrying", errno.errorcode.get(exc.errno or 0, exc))
                    await trio.sleep(_CAPACITY_PAUSE_S)
                    continue
                nursery.start_soon(serve_one, stream)
        finally:
            await context.terminated.set()
            await sock.aclose()
