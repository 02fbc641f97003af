"""runtime/sharing.py on its own: what is served, and pacing while the workers generate."""

from __future__ import annotations

import hashlib

import pytest
import trio

from zswarm.core.messages import ChunkRequest, ModelRequest
from zswarm.engines.models import ModelFile
from zswarm.errors import ModelNotFound
from zswarm.runtime import sharing


def shelf_of(tmp_path, busy):
    data = bytes(range(256)) * (3 * sharing.CHUNK_BYTES // 256 + 7)
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    model = ModelFile(path=path, model_id=f"m.gguf@{digest[:16]}", format="gguf",
                      size_bytes=len(data))
    return sharing.ModelShelf.of(model, busy=busy), model, data


async def test_pieces_are_paced_only_while_the_workers_generate(tmp_path, autojump_clock):
    generating = [True]
    shelf, model, data = shelf_of(tmp_path, lambda: generating[0])
    offer = await shelf.offer(ModelRequest(request_id="r", model_id=model.model_id, chunks=True))
    assert len(offer.chunk_sha256) == 4 and offer.sha256 == hashlib.sha256(data).hexdigest()
    t0 = trio.current_time()
    pieces = [await shelf.chunk(ChunkRequest(request_id="r", model_id=model.model_id, index=i))
              for i in range(4)]
    spacing = sharing.CHUNK_BYTES / sharing.BUSY_BYTES_PER_S
    assert trio.current_time() - t0 >= 3 * spacing * 0.99  # paced while busy
    assert b"".join(p.data for p in pieces) == data
    generating[0] = False
    t1 = trio.current_time()
    for i in range(4):
        await shelf.chunk(ChunkRequest(request_id="r", model_id=model.model_id, index=i))
    assert trio.current_time() - t1 < spacing  # idle: as fast as asked


async def test_only_the_served_model_and_its_pieces(tmp_path):
    shelf, model, _ = shelf_of(tmp_path, None)
    for bad in ("other@0123456789abcdef", "../m.gguf", str(model.path)):
        with pytest.raises(ModelNotFound):
            await shelf.offer(ModelRequest(request_id="r", model_id=bad))
    with pytest.raises(ModelNotFound, match="no piece 4"):
        await shelf.chunk(ChunkRequest(request_id="r", model_id=model.model_id, index=4))
    with pytest.raises(ModelNotFound):
        await sharing.ModelShelf.of(None).offer(ModelRequest(request_id="r", model_id="x"))


async def test_a_file_replaced_since_the_last_offer_is_hashed_again(tmp_path):
    shelf, model, data = shelf_of(tmp_path, None)
    first = await shelf.offer(ModelRequest(request_id="r", model_id=model.model_id, chunks=True))
    assert first.sha256 == hashlib.sha256(data).hexdigest()
    changed = b"x" + data[1:]  # a damaged copy (then restored below): same size
    model.path.write_bytes(changed)
    second = await shelf.offer(ModelRequest(request_id="r", model_id=model.model_id,
                                            chunks=True))
    assert second.sha256 == hashlib.sha256(changed).hexdigest()  # not the stale hash
    assert second.chunk_sha256[0] != first.chunk_sha256[0]
    model.path.write_bytes(data)  # restored
    third = await shelf.offer(ModelRequest(request_id="r", model_id=model.model_id))
    assert third.sha256 == first.sha256
    model.path.unlink()
    with pytest.raises(ModelNotFound, match="is gone"):
        await shelf.offer(ModelRequest(request_id="r", model_id=model.model_id))


async def test_every_model_file_here_is_served_and_only_while_it_is_here(tmp_path):
    files = {}
    for name, size in (("a", 2), ("b", 3)):
        data = name.encode() * (size * sharing.CHUNK_BYTES)
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(data)
        model_id = f"{name}.gguf@{hashlib.sha256(data).hexdigest()[:16]}"
        files[model_id] = ModelFile(path=path, model_id=model_id, format="gguf",
                                    size_bytes=len(data))
    here = dict(files)
    shelf = sharing.ModelShelf(lambda: here)
    for model_id, size in zip(files, (2, 3), strict=True):
        offer = await shelf.offer(ModelRequest(request_id="r", model_id=model_id, chunks=True))
        assert len(offer.chunk_sha256) == size and offer.model_id == model_id
    gone = next(iter(files))
    del here[gone]  # e.g. a model not pulled yet, or removed from the config
    with pytest.raises(ModelNotFound, match="it serves b.gguf@"):
        await shelf.offer(ModelRequest(request_id="r", model_id=gone))
