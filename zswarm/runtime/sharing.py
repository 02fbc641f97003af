"""Serving this node's model files to the members that pull them (``zswarm pull``, and
a ``swarm:`` model loaded on demand).

Owns: what may be served - only the files of the models this node serves (its config
named them; a lazily pulled one once it is here), each named by its id (a requester
never names a path); each file's sha256 and the sha256 of each CHUNK_BYTES piece
(computed once per file, in a thread, by the first request that wants them); and
reading pieces in threads, at most READERS at once and at most MAX_WAITING waiting
(beyond: Overloaded, the puller asks again or elsewhere), and paced to
BUSY_BYTES_PER_S while the node's workers generate, so its own answers stay fast
while it serves. In a keyed swarm only members can reach the RPC socket (CURVE); in
an open swarm anyone on the LAN can pull the models the node serves.
It must not: decide what a puller trusts (zswarm/pull.py checks every hash).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import trio

from zswarm.core.messages import Chunk, ChunkRequest, ModelOffer, ModelRequest
from zswarm.engines.models import ModelFile, file_sha256
from zswarm.errors import ModelNotFound, Overloaded

#: the pieces a model is sent in (a message each, hashed each)
CHUNK_BYTES = 1024 * 1024
#: pieces read at once, and waiting to be read, at most
READERS = 2
MAX_WAITING = 64
#: while the node's workers generate, pieces leave at this rate at most (its answers
#: first); when they are idle, as fast as the puller takes them
BUSY_BYTES_PER_S = 16 * 1024 * 1024


class ModelShelf:
    """The model files this node serves to pullers: ``files()`` says which are here now
    (model id -> file; none for a scripted or plugin engine without a file)."""

    def __init__(self, files: Callable[[], Mapping[str, ModelFile]], *,
                 busy: Callable[[], bool] | None = None) -> None:
        self.files = files
        self.busy = busy
        self._next = 0.0
        #: model id -> (the file's sha256 the piece hashes are of, the piece hashes): an
        #: offer is of the file as it is now; one entry per file this node serves
        self._chunks: dict[str, tuple[str, list[bytes]]] = {}
        self._readers = trio.CapacityLimiter(READERS)
        self._hashing = trio.Lock()
        self.chunks_served = 0

    @classmethod
    def of(cls, model: ModelFile | None, *, busy: Callable[[], bool] | None = None
           ) -> ModelShelf:
        """A shelf of one file (or none)."""
        files: dict[str, ModelFile] = {model.model_id: model} if model is not None else {}
        return cls(lambda: files, busy=busy)

    def _file(self, model_id: str) -> ModelFile:
        files = self.files()
        model = files.get(model_id)
        if model is None:
            held = ", ".join(files) or "no model file"
            raise ModelNotFound(f"this node does not serve {model_id[:80]!r} (it serves {held})")
        return model

    async def offer(self, req: ModelRequest) -> ModelOffer:
        model = self._file(req.model_id)
        async with self._hashing:
            try:  # file_sha256 hashes again only a file whose size or mtime changed
                sha256 = await trio.to_thread.run_sync(file_sha256, model.path)
            except OSError as exc:
                raise ModelNotFound(f"the model file {model.path} is gone: {exc}") from None
            chunks: list[bytes] = []
            if req.chunks:
                of, chunks = self._chunks.get(model.model_id, ("", []))
                if of != sha256:
                    chunks = await trio.to_thread.run_sync(chunk_hashes, model.path,
                                                           CHUNK_BYTES)
                    here = self.files()  # (the hashes of files no longer here go)
                    self._chunks = {m: c for m, c in self._chunks.items() if m in here}
                    self._chunks[model.model_id] = (sha256, chunks)
        return ModelOffer(request_id=req.request_id, model_id=model.model_id,
                          name=model.path.name, size=model.size_bytes, sha256=sha256,
                          chunk_bytes=CHUNK_BYTES, chunk_sha256=list(chunks))

    async def chunk(self, req: ChunkRequest) -> Chunk:
        model = self._file(req.model_id)
        if req.index >= math.ceil(model.size_bytes / CHUNK_BYTES):
            raise ModelNotFound(f"{model.model_id} has no piece {req.index}")
        if self._readers.statistics().tasks_waiting >= MAX_WAITING:
            raise Overloaded("too many pieces waiting to be read", retry_after_s=0.5)
        await self._pace()
        async with self._readers:
            data = await trio.to_thread.run_sync(read_piece, model.path, req.index, CHUNK_BYTES)
        self.chunks_served += 1
        return Chunk(request_id=req.request_id, index=req.index, data=data)

    async def _pace(self) -> None:
        """While the workers generate, space pieces BUSY_BYTES_PER_S apart."""
        if self.busy is None or not self.busy():
            return
        start = max(trio.current_time(), self._next)
        self._next = start + CHUNK_BYTES / BUSY_BYTES_PER_S
        await trio.sleep_until(start)


def read_piece(path: Path, index: int, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(index * size)
        return f.read(size)


def chunk_hashes(path: Path, size: int) -> list[bytes]:
    out = []
    with path.open("rb") as f:
        for block in iter(lambda: f.read(size), b""):
            out.append(hashlib.sha256(block).digest())
    return out
