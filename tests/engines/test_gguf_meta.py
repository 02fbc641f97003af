"""What a loaded model costs, read from its GGUF header: the real shape of the default
model, and any bytes at all without an exception (a cautious guess instead)."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from zswarm.engines.models import (
    GGUF_MAGIC,
    WORKER_OVERHEAD_MIB,
    ModelFile,
    estimate_mib,
    kv_bytes_per_token,
    resolve_model,
)


def test_the_default_models_kv_cache_per_token_comes_from_its_shape():
    # SmolLM2-135M: 30 layers, 576 wide, 9 heads of which 3 for K and V: f16 K and V
    assert kv_bytes_per_token(resolve_model("default").path) == 2 * 2 * 30 * (576 * 3 // 9)


def test_the_estimate_counts_the_file_once_and_each_worker_apart():
    file = resolve_model("default")
    one, two = (estimate_mib(file, n_ctx=1024, workers=w) for w in (1, 2))
    assert abs(two - one - (23040 * 1024 / 2**20 + WORKER_OVERHEAD_MIB)) <= 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_any_header_is_read_or_guessed_never_an_exception(tmp_path_factory, tail):
    path = tmp_path_factory.mktemp("gguf") / "x.gguf"
    path.write_bytes(GGUF_MAGIC + struct.pack("<IQQ", 3, 0, 2**63) + tail)
    assert kv_bytes_per_token(path) >= 4096
    assert estimate_mib(ModelFile(path, "x@1", "gguf", path.stat().st_size), n_ctx=64,
                        workers=1) >= 0
