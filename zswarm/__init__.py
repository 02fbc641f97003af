"""zswarm: join the small local LLMs on a LAN into one swarm. Public API only.

The package, lowest layer first (each imports only those before it; tests/test_layers.py):

    errors.py      the error tree
    core/          pure logic: wire messages, codec, consensus, plan, limits, peer table
    config.py      swarm.toml -> a checked Config
    asks.py        the ask as a value;  statedir.py  the state dir
    net/           sockets: zmq under trio, PUB/SUB and links, mDNS, the swarm key
    engines/       inference backends (llama.cpp, ctransformers, plugins)
    runtime/       one node under trio: context, coordinator, scheduler, workers, federation
    http/          the HTTP shim: OpenAI API, federation routes, metrics, status page
    client.py      the blocking RPC client;  pull.py  fetching a model from members
    node.py        the composition root;  doctor.py, views.py
    cli/           the command line
    testing/       fakes and fixtures (never imported by the code above)

docs/architecture.md is the map: each package's job, an ask's path, the node's life.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zswarm.config import Config, load_config
    from zswarm.core.consensus import STRATEGIES, decide
    from zswarm.core.messages import (
        Candidate,
        ChatMessage,
        GenerateRequest,
        Report,
        SamplingParams,
    )
    from zswarm.errors import (
        ConfigError,
        DeadlineExceeded,
        InferenceError,
        ModelNotFound,
        NoQuorum,
        Overloaded,
        ZswarmError,
    )

#: public name -> its module, imported when the name is first used (so that `zswarm ...`
#: starts with nothing loaded, and a Ctrl-C at any moment is the CLI's to handle)
_PUBLIC = {
    "Config": "zswarm.config", "load_config": "zswarm.config",
    "STRATEGIES": "zswarm.core.consensus", "decide": "zswarm.core.consensus",
    **dict.fromkeys(("Candidate", "ChatMessage", "GenerateRequest", "Report",
                     "SamplingParams"), "zswarm.core.messages"),
    **dict.fromkeys(("ConfigError", "DeadlineExceeded", "InferenceError", "ModelNotFound",
                     "NoQuorum", "Overloaded", "ZswarmError"), "zswarm.errors"),
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'zswarm' has no attribute {name!r}")


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
