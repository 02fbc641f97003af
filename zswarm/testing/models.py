"""More real models without a model hub: the default GGUF requantized by llama.cpp itself.

``requantized("Q8_0")`` writes the default model (SmolLM2-135M-Instruct Q4_1) again in
another quantization with llama.cpp's own quantize API (``llama_model_quantize``,
``allow_requantize``: about 4 s here; Q8_0 is 136 MiB) and keeps it in a cache dir
(``ZSWARM_TEST_MODELS``, else ~/.cache/zswarm/test-models), written atomically so that
two test processes never read half a file. A second model with its own id, for tests and
benches of a swarm that serves more than one model; never committed, never fetched.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from zswarm.engines.models import resolve_model
from zswarm.errors import InferenceError


def cache_dir() -> Path:
    return Path(os.environ.get("ZSWARM_TEST_MODELS",
                               Path.home() / ".cache" / "zswarm" / "test-models"))


def requantized(kind: str = "Q8_0", directory: Path | None = None) -> Path:
    """The default model in quantization ``kind`` (a llama.cpp ftype: Q8_0, Q3_K_S, ...)."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind}", None)
    if ftype is None:
        raise ValueError(f"llama.cpp has no quantization {kind!r}")
    src = resolve_model("default").path
    out = (directory or cache_dir()) / f"{src.name.split('.')[0]}.{kind}.gguf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f"{out.name}.{os.getpid()}.part")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(part).encode(),
                                        ctypes.byref(params))
    if rc != 0:
        part.unlink(missing_ok=True)
        raise InferenceError(f"llama.cpp could not requantize {src} to {kind} (code {rc})")
    os.replace(part, out)
    return out
