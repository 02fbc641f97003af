"""Building an engine from config: picks the backend and resolves the model file.

The two inference backends are built in. Other backends are plugins: an entry point
in the group ``zswarm.engines`` names a function ``(ModelConfig, threads) -> Engine``.
zswarm's own package registers ``scripted`` that way (``zswarm.testing.scripted``,
the engine with known answers used by tests and benches), so production code never
imports test support.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from zswarm.config import ModelConfig
from zswarm.engines.base import Engine
from zswarm.engines.models import resolve_model
from zswarm.errors import ConfigError

PLUGIN_GROUP = "zswarm.engines"


def load_engine(cfg: ModelConfig, *, threads: int) -> Engine:
    """Load the configured model; raises ModelNotFound or InferenceError with the file named."""
    if cfg.backend == "ctransformers":
        from zswarm.engines.ctransformers import CTransformersEngine

        return CTransformersEngine(resolve_model(cfg.path), model_type=cfg.model_type,
                                   n_ctx=cfg.n_ctx)
    if cfg.backend == "llamacpp":
        from zswarm.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(resolve_model(cfg.path), n_ctx=cfg.n_ctx, threads=threads,
                              max_batch_candidates=cfg.max_batch_candidates)
    return _plugin(cfg.backend)(cfg, threads)


def _plugin(name: str) -> Callable[[ModelConfig, int], Engine]:
    found = [ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name == name]
    if not found:
        raise ConfigError(f"model.backend: no engine backend {name!r} is installed "
                          f"(entry point group {PLUGIN_GROUP!r})")
    factory: Callable[[ModelConfig, int], Engine] = found[0].load()
    return factory
