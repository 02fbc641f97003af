"""The trio adapter for pyzmq under load: nothing stalls, every reply matches."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing
import zmq

from zswarm.errors import LocalProtocolError
from zswarm.net.zmq_trio import Pollset, TrioSocket, context, open_socket
from zswarm.testing.cluster import wait_until


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


def test_a_pollset_finds_every_message_with_one_poll_per_pass():
    """Sockets read in passes with a per-pass limit: what a pass leaves behind is read at a
    later pass (``again``), new input on a drained socket shows in ``ready``, and a
    socket that got nothing is not read at all."""
    pub, endpoint = TrioSocket.bound(zmq.PUB, "tcp://127.0.0.1:0")
    quiet_pub, quiet_endpoint = TrioSocket.bound(zmq.PUB, "tcp://127.0.0.1:0")
    subs: dict[str, TrioSocket] = {}
    news = Pollset()
    try:
        for key, where in (("a", endpoint), ("b", endpoint), ("quiet", quiet_endpoint)):
            subs[key] = TrioSocket.open(zmq.SUB)
            subs[key].setsockopt(zmq.SUBSCRIBE, b"")
            subs[key].connect(where)
            news.add(key, subs[key])
        got: dict[str, int] = {"a": 0, "b": 0, "quiet": 0}
        read_from: set[str] = set()

        def one_pass(limit: int) -> None:
            for key in news.ready():
                read_from.add(key)
                count = 0
                while count < limit and (frames := subs[key].recv_nowait()) is not None:
                    count += 1
                    got[key] += frames != [b"hello"]
                if count == limit:
                    news.again(key)

        one_pass(3)  # the first pass reads every socket once (added: may have input)
        read_from.clear()
        wait_until(lambda: (pub.send_multipart([b"hello"]), one_pass(3),
                            {"a", "b"} <= read_from)[-1], 10, what="subscribed")
        read_from.clear()
        for _ in range(10):
            pub.send_multipart([b"x"])
        wait_until(lambda: (one_pass(3), got["a"] == got["b"] == 10)[-1], 10,
                   what="all 10 read, 3 per pass")
        assert got["quiet"] == 0 and "quiet" not in read_from
        news.remove(subs["b"])
        pub.send_multipart([b"y"])
        wait_until(lambda: (one_pass(3), got["a"] == 11)[-1], 10, what="a reads on")
        assert got["b"] == 10  # removed: no longer read
    finally:
        for sock in (pub, quiet_pub, *subs.values()):
            sock.close()
