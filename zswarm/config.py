"""swarm.toml -> a frozen, validated Config. Every time and port lives here, units in names.

Unknown keys and wrong types are ConfigErrors that name the file, the key and the
expected type. Defaults make an empty file (or no file) a working local node.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from zswarm.core.limits import Limits
from zswarm.core.messages import MAX_DEADLINE_MS, MAX_N, MAX_PROMPT_CHARS, MAX_TOKENS_LIMIT
from zswarm.core.plan import ASK_STRATEGIES
from zswarm.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class NodeConfig:
    name: str = field(default_factory=lambda: socket.gethostname() or "zswarm")
    #: "auto" = private LAN address else 127.0.0.1; or an explicit address
    bind: str = "auto"
    state_dir: str = "~/.local/state/zswarm"
    #: local inference worker processes
    workers: int = 1
    #: on SIGTERM / Ctrl-C, requests in flight get this long to finish (a second signal stops now)
    drain_timeout_ms: int = 30_000


@dataclass(frozen=True)
class ModelConfig:
    #: "default" = the packaged SmolLM2-135M-Instruct Q4_1, or a path to a model file
    path: str = "default"
    #: "scripted" = zswarm.testing's engine with known answers (tests, benches)
    backend: Literal["llamacpp", "ctransformers", "scripted"] = "llamacpp"
    #: context size in tokens, shared by the parallel candidates of one request
    n_ctx: int = 4096
    #: CPU threads per worker; 0 = cores / workers
    threads: int = 0
    #: parallel sequences one worker decodes in one batch
    max_batch_candidates: int = 8
    #: ctransformers only: model type (gpt2, llama, ...)
    model_type: str = "gpt2"
    #: worker memory limit (RLIMIT_AS) in MiB; 0 = none
    memory_limit_mib: int = 0


@dataclass(frozen=True)
class GenerationConfig:
    max_tokens: int = 256
    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int = 40
    #: system prompt used when a request brings none ("" = none)
    system_prompt: str = "You are a helpful AI assistant. Answer concisely."
    #: limits enforced on requests
    max_tokens_limit: int = 4096
    max_n: int = 16
    max_prompt_chars: int = 64_000


@dataclass(frozen=True)
class SchedulerConfig:
    #: requests waiting for a worker beyond this are refused with Overloaded
    max_queue: int = 64
    default_deadline_ms: int = 300_000
    restart_backoff_initial_ms: int = 200
    restart_backoff_max_ms: int = 10_000
    worker_start_timeout_ms: int = 60_000


@dataclass(frozen=True)
class ConsensusConfig:
    strategy: str = "first_valid"
    n: int = 1
    allow_truncated: bool = True
    #: per-node weights for weighted_vote and majority (node name -> weight)
    weights: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FederationConfig:
    #: join the swarm: advertise, discover, heartbeat, send and serve votes
    enabled: bool = True
    #: "mdns", "static" (only the peers below) or "both"
    discovery: Literal["mdns", "static", "both"] = "both"
    #: RPC endpoints of peers to use without mDNS, e.g. ["tcp://192.168.1.20:17617"]
    peers: list[str] = field(default_factory=list)
    #: nodes only federate with nodes of the same swarm name (several swarms on one LAN)
    swarm: str = "default"
    #: time a peer gets to answer a vote (capped by the request's own deadline)
    deadline_ms: int = 30_000
    heartbeat_interval_ms: int = 1000
    #: a peer silent for heartbeat_interval_ms x liveness is DEAD
    liveness: int = 3
    #: ask only peers that serve the same model (same file hash)
    same_model_only: bool = True
    #: a DEAD or LEFT peer is forgotten after this long (it is found again when it returns)
    forget_after_ms: int = 300_000


@dataclass(frozen=True)
class HttpConfig:
    #: serve the OpenAI-compatible API and the federation routes on ports.http
    enabled: bool = True
    #: accepted "Authorization: Bearer <key>" values; empty (and no key file) = no auth
    api_keys: list[str] = field(default_factory=list)
    #: a file with one API key per line (added to api_keys)
    api_key_file: str = ""
    #: origins allowed by CORS, e.g. ["http://localhost:3000"]; empty = CORS off
    cors_origins: list[str] = field(default_factory=list)
    #: request bodies larger than this are refused with 413
    max_body_bytes: int = 1_048_576
    #: a client gets this long to send its request headers (a new or idle connection)
    header_timeout_ms: int = 10_000
    #: ...and this long to send its body (408 after); waiting for the answer has no limit
    #: but the request's own deadline
    body_timeout_ms: int = 30_000


@dataclass(frozen=True)
class SecurityConfig:
    #: the swarm key (``zswarm keygen --out FILE``): with it every TCP socket between
    #: nodes and clients is CURVE-encrypted and only holders of the key get in;
    #: "" = an open swarm (anyone on the LAN can join, vote and ask)
    swarm_key_file: str = ""


@dataclass(frozen=True)
class PortsConfig:
    http: int = 17615
    pub: int = 17616
    rpc: int = 17617


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    ports: PortsConfig = field(default_factory=PortsConfig)
    #: where the config came from (for error messages); not a TOML key
    source: str = field(default="<defaults>", compare=False)

    @property
    def limits(self) -> Limits:
        """What a request may ask of this node (core/limits.py judges requests by it)."""
        gen = self.generation
        return Limits(max_n=gen.max_n, max_tokens_limit=gen.max_tokens_limit,
                      max_prompt_chars=gen.max_prompt_chars,
                      default_deadline_ms=self.scheduler.default_deadline_ms)

    @property
    def state_path(self) -> Path:
        return Path(os.path.expanduser(self.node.state_dir))

    def api_keys(self) -> frozenset[str]:
        """The HTTP API keys from config and the key file (ConfigError if it is unreadable)."""
        keys = set(self.http.api_keys)
        if self.http.api_key_file:
            path = Path(os.path.expanduser(self.http.api_key_file))
            try:
                keys |= {line.strip() for line in path.read_text().splitlines()
                         if line.strip() and not line.startswith("#")}
            except OSError as exc:
                raise ConfigError(f"{self.source}: http.api_key_file: cannot read {path}: "
                                  f"{exc.strerror or exc}") from exc
        return frozenset(keys)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        _, vt = typing.get_args(tp)
        return {str(k): _check_value(v, vt, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected an array, got {type(value).__name__}")
        (et, *_) = typing.get_args(tp)
        return origin(_check_value(v, et, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check_value(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {tp}, got {value!r}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is type(None) and value is None:
        return None
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(
            f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


def _build(cls: Any, data: Any, source: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'}: expected a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' (known here: {', '.join(sorted(names))})"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, source, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_value(value, tp, f"{source}: {prefix}{name}")
    return cls(**kwargs)


def _validate(cfg: Config) -> None:
    src = cfg.source

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{src}: {key}: {why}")

    if cfg.node.workers < 1 or cfg.node.workers > 64:
        raise bad("node.workers", "expected an integer from 1 to 64")
    for key in ("http", "pub", "rpc"):
        port = getattr(cfg.ports, key)
        if not 0 <= port <= 65535:
            raise bad(f"ports.{key}", "expected a port from 0 to 65535 (0 = ephemeral)")
    if cfg.consensus.strategy not in ASK_STRATEGIES:
        raise bad("consensus.strategy", f"expected one of {', '.join(ASK_STRATEGIES)}")
    fed = cfg.federation
    if not 50 <= fed.heartbeat_interval_ms <= 60_000:
        raise bad("federation.heartbeat_interval_ms", "expected 50 to 60000")
    if not 2 <= fed.liveness <= 100:
        raise bad("federation.liveness", "expected 2 to 100")
    if not 1 <= fed.deadline_ms <= MAX_DEADLINE_MS:
        raise bad("federation.deadline_ms", f"expected 1 to {MAX_DEADLINE_MS}")
    if not 1 <= cfg.scheduler.default_deadline_ms <= MAX_DEADLINE_MS:
        raise bad("scheduler.default_deadline_ms", f"expected 1 to {MAX_DEADLINE_MS}")
    for i, peer in enumerate(fed.peers):
        if not peer.startswith("tcp://") or ":" not in peer[6:]:
            raise bad(f"federation.peers[{i}]", f"expected tcp://host:port, got {peer!r}")
    if not 1000 <= fed.forget_after_ms <= 86_400_000:
        raise bad("federation.forget_after_ms", "expected 1000 to 86400000")
    for key in ("header_timeout_ms", "body_timeout_ms"):
        if not 100 <= getattr(cfg.http, key) <= MAX_DEADLINE_MS:
            raise bad(f"http.{key}", f"expected 100 to {MAX_DEADLINE_MS}")
    if not 1024 <= cfg.http.max_body_bytes <= 64 * 1024 * 1024:
        raise bad("http.max_body_bytes", "expected 1024 to 67108864")
    if not fed.swarm or len(fed.swarm) > 64:
        raise bad("federation.swarm", "expected a name of 1 to 64 characters")
    if not 1 <= cfg.consensus.n <= cfg.generation.max_n:
        raise bad("consensus.n", f"expected 1 to generation.max_n ({cfg.generation.max_n})")
    if cfg.model.n_ctx < 64:
        raise bad("model.n_ctx", "expected at least 64 tokens")
    if not 1 <= cfg.model.max_batch_candidates <= 64:
        raise bad("model.max_batch_candidates", "expected 1 to 64")
    if cfg.scheduler.max_queue < 0:
        raise bad("scheduler.max_queue", "expected 0 or more")
    if not 0.0 <= cfg.generation.temperature <= 5.0:
        raise bad("generation.temperature", "expected 0.0 to 5.0")
    if not 0.0 < cfg.generation.top_p <= 1.0:
        raise bad("generation.top_p", "expected more than 0.0, at most 1.0")
    if not 1 <= cfg.generation.max_tokens <= cfg.generation.max_tokens_limit:
        raise bad("generation.max_tokens", "expected 1 to generation.max_tokens_limit")
    # a node's limits may be tighter than the wire's, never looser: a request the node
    # accepted must also be one its workers and peers can decode
    for key, wire in (("max_n", MAX_N), ("max_tokens_limit", MAX_TOKENS_LIMIT),
                      ("max_prompt_chars", MAX_PROMPT_CHARS)):
        if not 1 <= getattr(cfg.generation, key) <= wire:
            raise bad(f"generation.{key}", f"expected 1 to {wire} (the protocol's limit)")


def parse_config(data: dict[str, Any], *, source: str = "<string>") -> Config:
    cfg = _build(Config, data, source, "")
    cfg = dataclasses.replace(cfg, source=source)
    _validate(cfg)
    return cfg


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Load and validate a swarm.toml; ``None`` gives the defaults."""
    if path is None:
        return parse_config({}, source="<defaults>")
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return parse_config(data, source=str(p))
