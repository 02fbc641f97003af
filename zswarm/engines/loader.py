"""Building an engine from config: picks the backend and resolves the model file."""

from __future__ import annotations

from zswarm.config import ModelConfig
from zswarm.engines.base import Engine
from zswarm.engines.models import resolve_model


def load_engine(cfg: ModelConfig, *, threads: int) -> Engine:
    """Load the configured model; raises ModelNotFound or InferenceError with the file named."""
    if cfg.backend == "scripted":
        from pathlib import Path

        from zswarm.testing.scripted import ScriptedEngine

        return ScriptedEngine(Path(cfg.path).expanduser())
    model = resolve_model(cfg.path)
    if cfg.backend == "ctransformers":
        from zswarm.engines.ctransformers import CTransformersEngine

        return CTransformersEngine(model, model_type=cfg.model_type, n_ctx=cfg.n_ctx)
    from zswarm.engines.llamacpp import LlamaCppEngine

    return LlamaCppEngine(
        model, n_ctx=cfg.n_ctx, threads=threads, max_batch_candidates=cfg.max_batch_candidates
    )
