"""Models shared by the swarm (runtime/sharing.py serves, zswarm/pull.py fetches): real
nodes on loopback serving the default model file, real ZeroMQ, every byte checked."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys

import pytest
import trio
import zmq

from zswarm import pull as pull_module
from zswarm.core import codec
from zswarm.core.ids import pinned
from zswarm.core.messages import (
    Chunk,
    ChunkRequest,
    Error,
    ModelOffer,
    ModelRequest,
)
from zswarm.engines.models import resolve_model
from zswarm.errors import ModelNotFound, PeerUnavailable, ZswarmError
from zswarm.net.security import one_off, write_key_file
from zswarm.net.zmq_trio import TrioSocket
from zswarm.pull import Holder, Pull, pull
from zswarm.runtime.sharing import CHUNK_BYTES, MAX_WAITING, chunk_hashes, read_piece
from zswarm.testing.cluster import NodeProcess, dealer, free_port, node_config, wait_until

from .conftest import alive, ask, wait_peers

pytestmark = [pytest.mark.timeout(180), pytest.mark.model]

MODEL = resolve_model("default")


async def start_model_node(cluster, name: str, **kw):
    return await cluster.start(name, model={"path": "default", "n_ctx": 512},
                               scheduler={"worker_start_timeout_ms": 60_000}, **kw)


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_pull_from_two_members_checks_every_piece_and_the_whole_file(cluster, tmp_path):
    b = await start_model_node(cluster, "b")
    await start_model_node(cluster, "c")
    await wait_peers(b, alive("c"), 20)
    result = await trio.to_thread.run_sync(
        lambda: pull(b.rpc_endpoint, MODEL.path.name, tmp_path / "models"))
    assert result.model_id == MODEL.model_id and result.path.name == MODEL.path.name
    assert sha256_of(result.path) == sha256_of(MODEL.path)
    assert sorted(result.holders) == ["b", "c"]  # both served pieces
    assert not list((tmp_path / "models").glob("*.part"))
    again = await trio.to_thread.run_sync(
        lambda: pull(b.rpc_endpoint, MODEL.model_id, tmp_path / "models"))
    assert again.holders == [] and again.path == result.path  # there already: nothing sent


async def test_a_killed_pull_resumes_from_the_good_pieces(cluster, tmp_path):
    b = await start_model_node(cluster, "b")
    directory = tmp_path / "models"
    directory.mkdir()
    good = MODEL.path.read_bytes()[:5 * CHUNK_BYTES + 1000]
    (directory / (MODEL.path.name + ".part")).write_bytes(good + b"garbage" * 1000)
    result = await trio.to_thread.run_sync(
        lambda: pull(b.rpc_endpoint, MODEL.model_id, directory))
    assert result.resumed_bytes == 5 * CHUNK_BYTES  # the partial piece and garbage cut off
    assert sha256_of(result.path) == sha256_of(MODEL.path)


class LyingHolder:
    """Offers the real model honestly, then sends wrong bytes for every piece (or, with
    ``silent_after``, right ones until then and nothing after: a holder that dies)."""

    def __init__(self, silent_after: int | None = None) -> None:
        self.silent_after = silent_after
        creds = one_off()
        self.sock = TrioSocket.open(zmq.ROUTER, role="server", creds=creds)
        self.endpoint = pinned(self.sock.bind("tcp://127.0.0.1:0"), creds.node.public)
        self.hashes = chunk_hashes(MODEL.path, CHUNK_BYTES)
        self.sha = hashlib.sha256(MODEL.path.read_bytes()).hexdigest()
        self.pieces_sent = 0

    async def serve(self) -> None:
        try:
            while True:
                ident, raw = await self.sock.recv_multipart()
                msg = codec.decode(raw)
                if isinstance(msg, ModelRequest):
                    reply = ModelOffer(request_id=msg.request_id, model_id=MODEL.model_id,
                                       name=MODEL.path.name, size=MODEL.size_bytes,
                                       sha256=self.sha, chunk_bytes=CHUNK_BYTES,
                                       chunk_sha256=self.hashes)
                elif isinstance(msg, ChunkRequest):
                    if self.silent_after is not None and self.pieces_sent >= self.silent_after:
                        continue
                    self.pieces_sent += 1
                    data = bytearray(read_piece(MODEL.path, msg.index, CHUNK_BYTES))
                    if self.silent_after is None:
                        data[len(data) // 2] ^= 0xFF
                    reply = Chunk(request_id=msg.request_id, index=msg.index, data=bytes(data))
                else:
                    continue
                await self.sock.send([ident, codec.encode(reply)])
        finally:
            self.sock.close()


async def test_a_holder_that_sends_wrong_bytes_is_dropped_and_another_used(cluster, nursery,
                                                                           tmp_path):
    liar = LyingHolder()
    nursery.start_soon(liar.serve)
    b = await start_model_node(cluster, "b")
    transfer = Pull(MODEL.model_id, [Holder("liar", liar.endpoint), Holder("b", b.rpc_endpoint)],
                    tmp_path / "models")
    result = await trio.to_thread.run_sync(transfer.run)
    assert result.holders == ["b"] and result.bad_pieces >= 2
    assert sha256_of(result.path) == sha256_of(MODEL.path)
    # the liar alone: the pull fails, naming why, and leaves no file to load
    alone = Pull(MODEL.model_id, [Holder("liar", liar.endpoint)], tmp_path / "other")
    with pytest.raises(Exception, match="does not match its hash"):
        await trio.to_thread.run_sync(alone.run)
    assert not (tmp_path / "other" / MODEL.path.name).exists()


async def test_a_holder_that_dies_mid_transfer_loses_its_pieces_to_the_others(
        cluster, nursery, tmp_path, monkeypatch):
    monkeypatch.setattr(pull_module, "PIECE_TIMEOUT_S", 1.0)
    dying = LyingHolder(silent_after=10)
    nursery.start_soon(dying.serve)
    b = await start_model_node(cluster, "b")
    transfer = Pull(MODEL.model_id, [Holder("dying", dying.endpoint),
                                     Holder("b", b.rpc_endpoint)], tmp_path / "models")
    result = await trio.to_thread.run_sync(transfer.run)
    assert result.holders == ["b", "dying"] and dying.pieces_sent == 10
    assert sha256_of(result.path) == sha256_of(MODEL.path)


async def test_a_keyed_swarm_serves_its_model_to_key_holders_only(cluster, tmp_path):
    key_file = tmp_path / "swarm.key"
    key = write_key_file(key_file)
    b = await start_model_node(cluster, "b", security={"swarm_key_file": str(key_file)})
    result = await trio.to_thread.run_sync(
        lambda: pull(b.rpc_endpoint, MODEL.model_id, tmp_path / "keyed", key=key))
    assert sha256_of(result.path) == sha256_of(MODEL.path)
    with pytest.raises(PeerUnavailable):  # no key: no answer at all
        await trio.to_thread.run_sync(
            lambda: pull(b.rpc_endpoint, MODEL.model_id, tmp_path / "open"))


async def test_a_full_disk_is_refused_before_anything_is_written(cluster, tmp_path,
                                                                monkeypatch):
    b = await start_model_node(cluster, "b")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(pull_module.shutil, "disk_usage",
                        lambda path: usage._replace(free=MODEL.size_bytes // 2))
    with pytest.raises(ZswarmError, match="not enough disk space"):
        await trio.to_thread.run_sync(
            lambda: pull(b.rpc_endpoint, MODEL.model_id, tmp_path / "full"))
    assert not list((tmp_path / "full").glob("*"))


async def test_a_node_serves_only_its_model_by_id_and_bounds_piece_requests(cluster, nursery):
    b = await start_model_node(cluster, "b")
    with dealer(b.rpc_endpoint) as sock:
        for model_id in ("../../etc/passwd", "/etc/passwd", "other.gguf@0123456789abcdef"):
            await sock.send([codec.encode(ModelRequest(request_id="r", model_id=model_id))])
            (raw,) = await sock.recv_multipart()
            reply = codec.decode(raw)
            assert isinstance(reply, Error) and reply.kind == "model_not_found", reply
        # a flood of piece requests: some are refused as overloaded, none is lost silently
        count = MAX_WAITING * 3
        for i in range(count):
            await sock.send([codec.encode(ChunkRequest(request_id=f"c{i}",
                                                       model_id=MODEL.model_id, index=i % 90))])
        kinds: dict[str, int] = {}
        with trio.fail_after(60):
            for _ in range(count):
                (raw,) = await sock.recv_multipart()
                reply = codec.decode(raw)
                kind = reply.kind if isinstance(reply, Error) else "chunk"
                kinds[kind] = kinds.get(kind, 0) + 1
        assert kinds.get("chunk", 0) > 0 and set(kinds) <= {"chunk", "overloaded"}, kinds
    answer, _ = await ask(b, 1, "first_valid")  # and it still answers
    assert answer


async def test_a_model_nobody_holds_is_a_clear_error(cluster, tmp_path):
    b = await start_model_node(cluster, "b")
    with pytest.raises(ModelNotFound, match="the swarm has: SmolLM2"):
        await trio.to_thread.run_sync(lambda: pull(b.rpc_endpoint, "llama-70b.gguf", tmp_path))


def test_join_from_an_empty_machine_pulls_the_model_and_answers(tmp_path):
    member_cfg = node_config(tmp_path, "member", swarm="join-test",
                             model={"path": "default", "n_ctx": 512})
    with NodeProcess(member_cfg) as member:
        member.wait_ready(120)
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        join = [sys.executable, "-m", "zswarm", "join", member.rpc, "--no-start", "--name",
                "fresh", "--state-dir", str(fresh / "state"), "--config",
                str(fresh / "swarm.toml"), "--bind", "127.0.0.1", "--pub-port", "0",
                "--http-port", "0", "--threads", "1"]
        # a port another process holds is found before anything is written or pulled
        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            held.listen()
            busy = held.getsockname()[1]
            taken = subprocess.run([*join, "--rpc-port", str(busy)],
                                   capture_output=True, text=True, timeout=60, cwd=fresh)
        assert taken.returncode == 2, taken.stderr
        assert f"ports.rpc {busy} on 127.0.0.1" in taken.stderr
        assert "--rpc-port N" in taken.stderr and "nothing was written or pulled" in taken.stderr
        assert not (fresh / "swarm.toml").exists() and not (fresh / "state" / "models").exists()
        port = free_port()  # this test's ports, not the defaults another node may hold
        # join as a user runs it: it writes the config, then starts the node (which pulls)
        args = [a for a in join[4:] if a != "--no-start"]
        at = args.index("--config")
        with NodeProcess(fresh / "swarm.toml", command="join",
                         args=(*args[:at], *args[at + 2:], "--rpc-port", str(port))) as node:
            info = node.wait_ready(120)
            assert info.model_id == MODEL.model_id
            toml = (fresh / "swarm.toml").read_text()
            assert f'path = "swarm:{MODEL.model_id}"' in toml and member.rpc in toml
            assert f"rpc = {port}" in toml and "threads = 1" in toml
            assert 'bind = "127.0.0.1"' in toml
            pulled = fresh / "state" / "models" / MODEL.path.name
            assert pulled.exists() and sha256_of(pulled) == sha256_of(MODEL.path)
            log = node.log()
            assert "INFO zswarm.node: pulling the model: " in log  # progress, not a warning
            assert "(pulled; its sha256 matches the model's id)" in log, log
            ask_run = subprocess.run(
                [sys.executable, "-m", "zswarm", "ask", "--node", node.rpc, "--json",
                 "--max-tokens", "8", "What is 2 + 2?"],
                capture_output=True, text=True, timeout=120)
            assert ask_run.returncode == 0, ask_run.stderr
            assert json.loads(ask_run.stdout)["answer"]
        # pulling again is a no-op: the file is there
        wait_until(lambda: not list((fresh / "state" / "models").glob("*.part")), 5)
    shutil.rmtree(fresh)


def test_an_offer_of_another_file_says_which_hash_differs():
    from zswarm.core.messages import ModelOffer
    from zswarm.errors import RemoteProtocolError

    model_id = "copy.gguf@b179c9523d0e6a0f"
    stale = ModelOffer(request_id="r", model_id=model_id, name="copy.gguf", size=1,
                       sha256="739f" + "0" * 60, chunk_bytes=2**20, chunk_sha256=[b"\0" * 32])
    with pytest.raises(RemoteProtocolError) as caught:
        pull_module.check_offer(stale, model_id)
    said = str(caught.value)
    assert said.count(model_id) == 1  # the id once, not twice as if two ids differed
    assert "sha256 is 739f000000000000, not the b179c9523d0e6a0f of its id" in said
