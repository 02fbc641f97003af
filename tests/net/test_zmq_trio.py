"""The trio adapter for pyzmq under load: nothing stalls, every reply matches."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing
import zmq

from zswarm.errors import LocalProtocolError
from zswarm.net.zmq_trio import TrioSocket, context, open_socket


def _echo_server(endpoint: str, stop: threading.Event) -> None:
    sock = context().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    try:
        while not stop.is_set():
            if sock.poll(50):
                frames = sock.recv_multipart()
                sock.send_multipart(frames)
    finally:
        sock.close()


async def _run_stress(endpoint: str, total: int, in_flight: int) -> int:
    sock = TrioSocket.open(zmq.DEALER)
    sock.connect(endpoint)
    waiting: dict[bytes, trio.Event] = {}
    done = 0

    async def reader():
        while True:
            frames = await sock.recv_multipart()
            waiting.pop(frames[0]).set()

    async def client(k: int):
        nonlocal done
        for i in range(k, total, in_flight):
            key = str(i).encode()
            ev = trio.Event()
            waiting[key] = ev
            await sock.send([key, b"payload"])
            await ev.wait()
            done += 1

    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            with trio.fail_after(120):
                async with trio.open_nursery() as clients:
                    for k in range(in_flight):
                        clients.start_soon(client, k)
            nursery.cancel_scope.cancel()
    return done


@pytest.mark.slow
async def test_50k_round_trips_16_in_flight(tmp_path):
    endpoint = f"ipc://{tmp_path}/echo.sock"
    stop = threading.Event()
    server = threading.Thread(target=_echo_server, args=(endpoint, stop))
    server.start()
    try:
        assert await _run_stress(endpoint, 50_000, 16) == 50_000
    finally:
        stop.set()
        server.join()


async def test_router_dealer_in_one_trio_run():
    with TrioSocket.open(zmq.ROUTER) as router, TrioSocket.open(zmq.DEALER) as dealer:
        endpoint = router.bind("tcp://127.0.0.1:0")
        dealer.connect(endpoint)
        await dealer.send([b"hello"])
        ident, body = await router.recv_multipart()
        await router.send([ident, body + b" back"])
        assert await dealer.recv_multipart() == [b"hello back"]


async def test_two_receivers_is_a_local_error():
    with TrioSocket.open(zmq.DEALER) as sock:
        sock.connect("tcp://127.0.0.1:9")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sock.recv_multipart)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(LocalProtocolError):
                await sock.recv_multipart()
            nursery.cancel_scope.cancel()


async def test_close_wakes_the_reader():
    sock = TrioSocket.open(zmq.DEALER)
    sock.connect("tcp://127.0.0.1:9")
    errors: list[BaseException] = []

    async def reader():
        try:
            await sock.recv_multipart()
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            sock.close()
    assert len(errors) == 1


def test_sockets_use_tcp_keepalive_not_zmtp_heartbeats():
    # libzmq 4.3.5 aborts the process when a receive queue is full while ZMTP heartbeats
    # are on (libzmq #3937, #4767; reproduced here with a flooding PUB and a slow SUB):
    # a flooding peer must not be able to kill a node that way
    for kind in (zmq.ROUTER, zmq.DEALER, zmq.SUB, zmq.PUB):
        sock = open_socket(kind)
        try:
            assert sock.getsockopt(zmq.HEARTBEAT_IVL) == 0
            assert sock.getsockopt(zmq.TCP_KEEPALIVE) == 1
        finally:
            sock.close()
