"""zswarm: join the small local LLMs on a LAN into one swarm. Public API only."""

from zswarm.config import Config, load_config
from zswarm.core.consensus import STRATEGIES, decide
from zswarm.core.messages import Candidate, ChatMessage, GenerateRequest, Report, SamplingParams
from zswarm.errors import (
    ConfigError,
    DeadlineExceeded,
    InferenceError,
    ModelNotFound,
    NoQuorum,
    Overloaded,
    ZswarmError,
)

__all__ = [
    "STRATEGIES",
    "Candidate",
    "ChatMessage",
    "Config",
    "ConfigError",
    "DeadlineExceeded",
    "GenerateRequest",
    "InferenceError",
    "ModelNotFound",
    "NoQuorum",
    "Overloaded",
    "Report",
    "SamplingParams",
    "ZswarmError",
    "decide",
    "load_config",
]
__version__ = "0.1.0"
