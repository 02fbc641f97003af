"""Pulling a model file from the members that hold it (``zswarm pull``, ``zswarm join``).

Owns: finding the holders (a member's PeersReply: the member and its ALIVE peers that
serve the model, asked by name or id), the transfer (pieces over each holder's RPC
socket, CURVE when keyed, at most WINDOW requests in flight per holder: credit-based
flow control, so a slow holder gets less and a fast one more), checking every piece
against its sha256 before it is written (a holder that sends wrong bytes loses the
piece and, after BAD_PIECES, its place; another holder is asked), writing in order to
NAME.part (so a killed pull resumes from what is there, checked again), and the end:
the whole file's sha256 must be the offered one and match the model id, then the
file is renamed into place. Free disk space is checked first. Blocking (pyzmq), for
the CLI.
It must not: trust a holder's name for the file (a plain name is required) or load
anything before the whole file is checked.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import msgspec
import zmq

from zswarm import client
from zswarm.config import Config
from zswarm.core import codec
from zswarm.core.catalog import held_by
from zswarm.core.ids import new_request_id, pinned, unpinned
from zswarm.core.messages import (
    Chunk,
    ChunkRequest,
    Error,
    ModelOffer,
    ModelRequest,
    PeersReply,
)
from zswarm.engines.models import file_sha256, remember_sha256, resolve_model
from zswarm.errors import ConfigError, ModelNotFound, PeerUnavailable, RemoteProtocolError, ZswarmError
from zswarm.net.security import SwarmKey, one_off, pin
from zswarm.net.zmq_trio import open_socket

#: piece requests in flight per holder
WINDOW = 8
#: a holder that sends this many pieces with the wrong hash is not asked again
BAD_PIECES = 2
#: a holder silent this long loses its pieces to the others
PIECE_TIMEOUT_S = 10.0
#: pieces asked at most this far past the first one not yet written (what arrives out of
#: order waits in memory: a slow holder of the next piece bounds it, not the file)
MAX_AHEAD = 64
#: disk space kept free beyond the file
SPARE_BYTES = 64 * 1024 * 1024

Progress = Callable[[int, int, float], None]  # (bytes written, total, bytes/s)


@dataclass(frozen=True)
class Holder:
    name: str
    rpc: str


def holders(reply: PeersReply, model: str) -> tuple[str, list[Holder]]:
    """The model id ``model`` (an id, a file name, or the start of one) names among the
    models the member and its ALIVE peers serve (every model their cards list), and who
    serves it. ModelNotFound lists what the swarm has."""
    cards = [(reply.node.name, held.model_id, pinned(reply.node.rpc, reply.node.public))
             for held, _ in held_by(reply.node, reply.load)]
    cards += [(p.name, held.model_id, pinned(p.rpc, p.public)) for p in reply.peers
              if p.state == "alive" and p.rpc and p.model_id for held, _ in held_by(p, p.load)]
    ids = sorted({m for _, m, _ in cards if m})
    exact = [m for m in ids if model in (m, m.split("@")[0])]
    matches = exact or [m for m in ids if len(model) >= 3 and m.lower().startswith(model.lower())]
    if not matches:
        have = ", ".join(ids) or "none"
        raise ModelNotFound(f"no member of the swarm serves {model!r}; the swarm has: {have}")
    if len(matches) > 1:
        raise ModelNotFound(f"{model!r} names several models ({', '.join(matches)}); "
                            "give the whole id")
    found = matches[0]
    return found, [Holder(name, rpc) for name, m, rpc in cards if m == found]


def plain_name(name: str) -> str:
    """A holder's file name, if it is a plain one (no directories, nothing hidden)."""
    if not name or name != Path(name).name or name.startswith(".") or "\x00" in name:
        raise RemoteProtocolError(f"the offered file name {name[:80]!r} is not a plain name",
                                  reason="bad-name")
    return name


@dataclass
class _Source:
    holder: Holder
    sock: zmq.Socket[bytes]
    asked: dict[str, tuple[int, float]] = field(default_factory=dict)  # rid -> (piece, when)
    bad: int = 0
    failed: str = ""


@dataclass
class PullResult:
    path: Path
    model_id: str
    size: int
    seconds: float
    resumed_bytes: int
    holders: list[str]
    bad_pieces: int


class Pull:
    """One model's transfer to ``directory``; ``run()`` does it (blocking)."""

    def __init__(self, model_id: str, sources: list[Holder], directory: Path, *,
                 key: SwarmKey | None = None, progress: Progress | None = None) -> None:
        self.model_id = model_id
        self.sources = sources
        self.directory = directory
        self.key = key
        self.progress = progress
        self.bad_pieces = 0

    def offer(self) -> tuple[ModelOffer, Holder]:
        errors = []
        for holder in self.sources:
            try:
                with client.NodeClient(holder.rpc, key=self.key) as node:
                    rid = new_request_id()
                    reply = node.exchange(ModelRequest(request_id=rid, model_id=self.model_id,
                                                       chunks=True), rid, 60.0)
                if not isinstance(reply, ModelOffer):
                    raise RemoteProtocolError(f"answered {type(reply).__name__}")
                check_offer(reply, self.model_id)
                return reply, holder
            except ZswarmError as exc:
                errors.append(f"{holder.name}: {exc}")
        raise PeerUnavailable("no holder offered the model: " + "; ".join(errors))

    def run(self) -> PullResult:
        t0 = time.monotonic()
        offer, _ = self.offer()
        name = plain_name(offer.name)
        target = self.directory / name
        if target.exists():
            if file_sha256(target) == offer.sha256:
                return PullResult(target, self.model_id, offer.size, 0.0, offer.size, [], 0)
            raise ZswarmError(f"{target} exists and is not {self.model_id}: move it away first")
        self.directory.mkdir(parents=True, exist_ok=True)
        part = self.directory / (name + ".part")
        whole = hashlib.sha256()  # of the file, as it is written (no second read)
        have = resume_point(part, offer, whole)
        need = offer.size - have + SPARE_BYTES
        free = shutil.disk_usage(self.directory).free
        if free < need:
            raise ZswarmError(f"not enough disk space in {self.directory}: the model needs "
                              f"{need / 2**20:.0f} MiB more, {free / 2**20:.0f} MiB are free")
        used = self._transfer(offer, part, have, t0, whole)
        digest = whole.hexdigest()
        if digest != offer.sha256 or not self.model_id.endswith("@" + digest[:16]):
            part.unlink(missing_ok=True)  # a consistent liar: start again from nothing
            raise RemoteProtocolError(f"the pulled file's sha256 {digest[:16]} is not "
                                      f"{self.model_id}'s: discarded", reason="bad-hash")
        os.replace(part, target)
        remember_sha256(target, digest)  # checked as it was written: not read again
        return PullResult(target, self.model_id, offer.size, time.monotonic() - t0, have,
                          used, self.bad_pieces)

    def _transfer(self, offer: ModelOffer, part: Path, have: int, t0: float,
                  whole: hashlib._Hash) -> list[str]:
        pieces = math.ceil(offer.size / offer.chunk_bytes)
        todo: deque[int] = deque(range(have // offer.chunk_bytes, pieces))
        waiting: dict[int, bytes] = {}
        written = have
        next_piece = have // offer.chunk_bytes
        sources: list[_Source] = []
        poller = zmq.Poller()
        used: set[str] = set()
        try:
            for holder in self.sources:
                sock = open_socket(zmq.DEALER, role="client", creds=one_off(self.key),
                                   max_msg_bytes=offer.chunk_bytes + 64 * 1024)
                sources.append(_Source(holder, sock))
                endpoint, public = unpinned(holder.rpc)
                pin(sock, public)  # only the holder itself answers there
                sock.connect(endpoint)
                poller.register(sock, zmq.POLLIN)
            with part.open("r+b" if part.exists() else "wb") as out:
                out.seek(written)
                while next_piece < pieces:
                    live = [s for s in sources if not s.failed]
                    if not live:
                        raise PeerUnavailable("every holder failed: " + "; ".join(
                            f"{s.holder.name}: {s.failed}" for s in sources))
                    for src in live:  # credit: at most WINDOW pieces asked of each
                        while todo and len(src.asked) < WINDOW \
                                and todo[0] < next_piece + MAX_AHEAD:
                            index = todo.popleft()
                            rid = new_request_id()
                            src.sock.send(codec.encode(ChunkRequest(
                                request_id=rid, model_id=self.model_id, index=index)))
                            src.asked[rid] = (index, time.monotonic())
                    for sock, _ in poller.poll(200):
                        src = next(s for s in sources if s.sock is sock)
                        self._receive(src, offer, todo, waiting, used)
                    now = time.monotonic()
                    for src in live:
                        if any(now - at > PIECE_TIMEOUT_S for _, at in src.asked.values()):
                            self._fail(src, f"no piece within {PIECE_TIMEOUT_S:.0f} s", todo)
                    while next_piece in waiting:  # in order: NAME.part is always a prefix
                        data = waiting.pop(next_piece)
                        out.write(data)
                        whole.update(data)
                        written += len(data)
                        next_piece += 1
                    if self.progress is not None:
                        out.flush()
                        rate = (written - have) / max(1e-6, time.monotonic() - t0)
                        self.progress(written, offer.size, rate)
                out.flush()
                os.fsync(out.fileno())
        finally:
            for src in sources:
                src.sock.close(linger=0)
        return sorted(used)

    def _receive(self, src: _Source, offer: ModelOffer, todo: deque[int],
                 waiting: dict[int, bytes], used: set[str]) -> None:
        try:
            msg = codec.decode(src.sock.recv(), max_bytes=offer.chunk_bytes + 64 * 1024)
        except (RemoteProtocolError, zmq.ZMQError) as exc:
            self._bad(src, f"an undecodable reply ({exc})", todo)
            return
        rid = getattr(msg, "request_id", None)
        if rid not in src.asked:
            return  # late or unasked: ignored
        index, _ = src.asked.pop(rid)
        if isinstance(msg, Error):
            todo.appendleft(index)
            if msg.kind != "overloaded":
                self._fail(src, f"{msg.kind}: {msg.message[:200]}", todo)
            return
        if (not isinstance(msg, Chunk) or msg.index != index
                or hashlib.sha256(msg.data).digest() != offer.chunk_sha256[index]):
            todo.appendleft(index)
            self._bad(src, f"piece {index} does not match its hash", todo)
            return
        waiting[index] = msg.data
        used.add(src.holder.name)

    def _bad(self, src: _Source, why: str, todo: deque[int]) -> None:
        self.bad_pieces += 1
        src.bad += 1
        if src.bad >= BAD_PIECES:
            self._fail(src, why, todo)

    def _fail(self, src: _Source, why: str, todo: deque[int]) -> None:
        src.failed = why
        for index, _ in src.asked.values():
            todo.appendleft(index)
        src.asked.clear()


def check_offer(offer: ModelOffer, model_id: str) -> None:
    """An offer must be of the model asked, with one hash per piece."""
    if offer.model_id != model_id:
        raise RemoteProtocolError(f"offered {offer.model_id[:80]}, not {model_id}",
                                  reason="bad-offer")
    if not model_id.endswith("@" + offer.sha256[:16]):
        raise RemoteProtocolError(f"offered {model_id} with a file whose sha256 is "
                                  f"{offer.sha256[:16]}, not the {model_id.rpartition('@')[2]} "
                                  "of its id (the holder's file changed since it started?)",
                                  reason="bad-offer")
    if len(offer.chunk_sha256) != math.ceil(offer.size / offer.chunk_bytes):
        raise RemoteProtocolError(f"{len(offer.chunk_sha256)} piece hashes for "
                                  f"{offer.size} bytes", reason="bad-offer")


def resume_point(part: Path, offer: ModelOffer, whole: hashlib._Hash) -> int:
    """How much of NAME.part is good: whole pieces whose hash matches, from the start
    (the rest is cut off); ``whole`` is fed what is kept."""
    if not part.exists():
        return 0
    good = 0
    with part.open("r+b") as f:
        for expected in offer.chunk_sha256:
            data = f.read(offer.chunk_bytes)
            if len(data) < offer.chunk_bytes and good + len(data) < offer.size:
                break  # a piece cut short (the last one is short by nature)
            if not data or hashlib.sha256(data).digest() != expected:
                break
            whole.update(data)
            good += len(data)
        f.truncate(good)
    return good


def pull(member: str, model: str, directory: Path, *, key: SwarmKey | None = None,
         progress: Progress | None = None) -> PullResult:
    """Pull ``model`` (name or id) from the members holding it, found through the node at
    ``member`` (an RPC endpoint)."""
    reply = client.peers(member, key=key, timeout_s=5.0)
    model_id, found = holders(reply, model)
    return Pull(model_id, found, directory, key=key, progress=progress).run()


def models_dir(config: Config) -> Path:
    """Where pulled models are kept: STATE_DIR/models."""
    return Path(config.node.state_dir).expanduser() / "models"


SWARM_PREFIX = "swarm:"


def wanted(config: Config) -> str | None:
    """What ``[model] path = "swarm:NAME-or-ID"`` names (None for a local path)."""
    setting = config.model.path
    return setting[len(SWARM_PREFIX):] if setting.startswith(SWARM_PREFIX) else None


def is_named(want: str, model_id: str, filename: str = "") -> bool:
    """Does ``swarm:WANT`` name this model: its id, its file's name, or (8 characters or
    more) the start of its id."""
    return bool(want) and (want in (model_id, filename)
                           or (len(want) >= 8 and model_id.startswith(want)))


def use_path(config: Config, path: Path) -> Config:
    """The config with [model] path set to a file."""
    return msgspec.structs.replace(config, model=msgspec.structs.replace(config.model,
                                                                         path=str(path)))


def pulled(config: Config) -> Path | None:
    """The file in models_dir that ``swarm:...`` names, if it was pulled (no network)."""
    want = wanted(config)
    directory = models_dir(config)
    if want is None or not directory.is_dir():
        return None
    for path in sorted(directory.glob("*")):
        if path.suffix == ".part" or not path.is_file():
            continue
        try:
            found = resolve_model(str(path)).model_id
        except ModelNotFound:
            continue
        if is_named(want, found, path.name):
            return path
    return None


def local_model(config: Config, key: SwarmKey | None, *,
                progress: Progress | None = None,
                members: Sequence[str] | None = None) -> Config:
    """``[model] path = "swarm:NAME-or-ID"``: the config with the path of that model in
    models_dir, pulled first (from ``members``, RPC endpoints: by default the
    [federation] peers) when it is not there."""
    want = wanted(config)
    if want is None:
        return config
    setting = config.model.path
    directory = models_dir(config)
    use = partial(use_path, config)
    found = pulled(config)
    if found is not None:
        return use(found)
    errors = []
    for member in _members(config, members):
        try:
            return use(pull(member, want, directory, key=key, progress=progress).path)
        except ZswarmError as exc:
            errors.append(f"{member}: {exc}")
    raise ModelNotFound(f"model.path = {setting!r}: could not pull it: " + "; ".join(errors))


def remote_id(config: Config, key: SwarmKey | None) -> str:
    """The id of the model ``[model] path = "swarm:NAME-or-ID"`` names, asked of the
    [federation] peers (nothing is downloaded: a model loaded on demand is pulled by its
    first load)."""
    want = wanted(config)
    assert want is not None
    errors = []
    for member in _members(config, None):
        try:
            return holders(client.peers(member, key=key, timeout_s=5.0), want)[0]
        except ZswarmError as exc:
            errors.append(f"{member}: {exc}")
    raise ModelNotFound(f"model.path = {config.model.path!r}: no member told its id: "
                        + "; ".join(errors))


def _members(config: Config, members: Sequence[str] | None) -> Sequence[str]:
    members = config.federation.peers if members is None else members
    if not members:
        raise ConfigError(f"model.path = {config.model.path!r}: it is not in "
                          f"{models_dir(config)}, and there are no [federation] peers to "
                          "pull it from (zswarm join writes one)")
    return members
