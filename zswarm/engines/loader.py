"""Building an engine from config: picks the backend and resolves the model file.

The two inference backends are built in. Other backends are plugins: an entry point
in the group ``zswarm.engines`` names a module (or object) with the two functions of
``Backend`` (engines/base.py). zswarm's own package registers ``scripted`` that way
(``zswarm.testing.scripted``, the engine with known answers used by tests and
benches), so production code never imports test support.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import cast

from zswarm.config import ModelConfig
from zswarm.engines.base import Backend, Engine
from zswarm.engines.models import ModelFile, resolve_model
from zswarm.errors import ConfigError

PLUGIN_GROUP = "zswarm.engines"


def _llamacpp(file: ModelFile, cfg: ModelConfig, threads: int) -> Engine:
    from zswarm.engines.llamacpp import LlamaCppEngine

    return LlamaCppEngine(file, n_ctx=cfg.n_ctx, threads=threads,
                          max_batch_candidates=cfg.max_batch_candidates,
                          cache_slots=cfg.cache_slots, flash_attn=cfg.flash_attn)


def _ctransformers(file: ModelFile, cfg: ModelConfig, threads: int) -> Engine:
    from zswarm.engines.ctransformers import CTransformersEngine

    return CTransformersEngine(file, model_type=cfg.model_type, n_ctx=cfg.n_ctx)


#: the built-in backends, by [model] backend: each loads a model file ([model] path);
#: any other name is a plugin's (entry point group PLUGIN_GROUP)
FILE_BACKENDS: dict[str, Callable[[ModelFile, ModelConfig, int], Engine]] = {
    "llamacpp": _llamacpp, "ctransformers": _ctransformers}


def model_id(cfg: ModelConfig) -> str:
    """The id of the configured model without loading it (ModelNotFound names the file).

    The node advertises it before its workers have loaded the model; the workers
    report the id of what they loaded, and the pool checks that the two agree.
    """
    if cfg.backend in FILE_BACKENDS:
        return resolve_model(cfg.path).model_id
    return _plugin(cfg.backend).model_id(cfg)


def model_file(cfg: ModelConfig) -> ModelFile | None:
    """The configured model's file, for the backends that load one (it may be shared
    with members that pull it: runtime/sharing.py); None for a plugin backend."""
    if cfg.backend in FILE_BACKENDS:
        return resolve_model(cfg.path)
    return None


def load_engine(cfg: ModelConfig, *, threads: int) -> Engine:
    """Load the configured model; raises ModelNotFound or InferenceError with the file named
    (ConfigError naming model.backend when no backend of that name is installed)."""
    build = FILE_BACKENDS.get(cfg.backend)
    if build is not None:
        return build(resolve_model(cfg.path), cfg, threads)
    return _plugin(cfg.backend).load(cfg, threads)


def _plugin(name: str) -> Backend:
    found = [ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name == name]
    if not found:
        raise ConfigError(f"model.backend: no engine backend {name!r} is installed (built "
                          f"in: {', '.join(FILE_BACKENDS)}; a plugin registers one in the "
                          f"entry point group {PLUGIN_GROUP!r})")
    return cast(Backend, found[0].load())
