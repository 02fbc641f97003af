"""swarm.toml -> a frozen, validated Config. Every time and port lives here, units in names.

The sections are msgspec Structs: ``msgspec.convert`` checks types and the ranges
written next to each key (``Meta``) in one pass, and ``_explain`` turns its
message into one that names the file, the key and what was expected. The few
rules that relate two keys are in ``_validate``. Defaults make an empty file (or
no file) a working local node. Durations are written in ms (as in the file) and
read in seconds through each section's ``*_s`` properties: the one place they are
converted (the code works in trio's seconds).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, field
from msgspec import inspect as mi

from zswarm.core.consensus import DEFAULT_TAU, MIN_ID_PREFIX
from zswarm.core.limits import Limits, check_one_count, check_strategy
from zswarm.core.messages import MAX_DEADLINE_MS, MAX_MODELS, MAX_N, MAX_PROMPT_CHARS, MAX_TOKENS_LIMIT
from zswarm.core.plan import AskStrategy
from zswarm.core.stopping import ADAPTIVE_STRATEGIES
from zswarm.errors import ConfigError, RequestRefused

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _range(lo: float, hi: float, why: str = "") -> Meta:
    return Meta(ge=lo, le=hi, description=why) if why else Meta(ge=lo, le=hi)


Port = Annotated[int, _range(0, 65535, "0 = ephemeral")]
DeadlineMs = Annotated[int, _range(1, MAX_DEADLINE_MS)]
ClientTimeoutMs = Annotated[int, _range(100, MAX_DEADLINE_MS)]
#: a node's address as a user writes it (config, --peer, --node): its RPC endpoint and
#: the node key it must answer with (core/ids.py: nobody else can answer for it)
ENDPOINT = r"tcp://[^:/?]+:[0-9]+\?key=[0-9a-fA-F]{64}"
PeerEndpoint = Annotated[str, Meta(pattern=f"^{ENDPOINT}$",
                                   description="tcp://host:port?key=KEY (the node's address "
                                   "as it prints it at start)")]


class Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A table of swarm.toml: unknown keys are errors."""


class NodeConfig(Section, frozen=True):
    name: str = field(default_factory=lambda: socket.gethostname() or "zswarm")
    #: "auto" = private LAN address else 127.0.0.1; or an explicit address
    bind: str = "auto"
    state_dir: str = "~/.local/state/zswarm"
    #: local inference worker processes
    workers: Annotated[int, _range(1, 64)] = 1
    #: on SIGTERM / Ctrl-C, requests in flight get this long to finish (a second signal stops now)
    drain_timeout_ms: int = 30_000
    #: a directory whose GGUF files are served too, loaded on demand (each named by its
    #: file name without .gguf; [model]'s settings; "" = none)
    models_dir: str = ""
    #: memory the loaded models may take, estimated from each file, n_ctx and workers
    #: (runtime/models.py); 0 = three quarters of the memory available at start
    memory_budget_mib: Annotated[int, Meta(ge=0)] = 0
    #: a loaded model stays at least this long before it may be unloaded for another
    #: (a flood of requests for many models cannot make the node reload them in turn)
    min_resident_s: Annotated[int, _range(0, 3600)] = 10

    @property
    def drain_timeout_s(self) -> float:
        return self.drain_timeout_ms / 1000


class ModelConfig(Section, frozen=True):
    #: "default" = the packaged SmolLM2-135M-Instruct Q4_1, or a path to a model file
    path: str = "default"
    #: "llamacpp", "ctransformers", or the name of an installed engine plugin (entry
    #: point group "zswarm.engines"; "scripted" is zswarm.testing's engine with known
    #: answers, for tests and benches). A name nobody installed fails when the node
    #: starts, naming model.backend (engines/loader.py)
    backend: str = "llamacpp"
    #: context size in tokens (KV cells), shared by the prompt cache's slots and the
    #: parallel candidates of one request: it bounds the cache's memory
    n_ctx: Annotated[int, Meta(ge=64)] = 4096
    #: CPU threads per worker; 0 = cores / workers
    threads: int = 0
    #: parallel sequences one worker decodes in one batch
    max_batch_candidates: Annotated[int, _range(1, 64)] = 8
    #: llama.cpp: prompts (conversations) each worker keeps in its KV cache, so the next
    #: turn decodes only what is new (least recently used go first when n_ctx runs short),
    #: and requests each worker decodes at once (continuous batching; docs/prompt-cache.md)
    cache_slots: Annotated[int, _range(1, 64)] = 4
    #: llama.cpp flash attention: "auto" (on where the CPU build has it), "on", "off".
    #: Measured on the default model, 2 cores: on generates ~11% more tokens/s; off reads a
    #: chat's new message ~8% sooner (llama-cpp-python's Llama defaults to off)
    flash_attn: Literal["auto", "on", "off"] = "auto"
    #: ctransformers only: model type (gpt2, llama, ...)
    model_type: str = "gpt2"
    #: worker memory limit (RLIMIT_AS) in MiB; 0 = none
    memory_limit_mib: int = 0


class ModelEntry(ModelConfig, frozen=True):
    """One of several models (``[[models]]``): a model's settings, its name and its life."""

    #: how requests name it (unique on this node; "" = its file name without .gguf)
    name: Annotated[str, Meta(max_length=64)] = ""
    #: worker processes while it is loaded; 0 = node.workers
    workers: Annotated[int, _range(0, 64)] = 0
    #: unloaded after this long without a request; 0 = never
    keep_alive_s: Annotated[int, _range(0, 86_400 * 365)] = 300
    #: never unloaded (neither when idle nor to make room for another model)
    pinned: bool = False
    #: loaded when the node starts (else at its first request)
    preload: bool = False

    def settings(self) -> ModelConfig:
        """The engine's part of the entry (what a worker process is given)."""
        return ModelConfig(**{f: getattr(self, f) for f in ModelConfig.__struct_fields__})


class GenerationConfig(Section, frozen=True):
    max_tokens: Annotated[int, Meta(ge=1)] = 256
    temperature: Annotated[float, _range(0.0, 5.0)] = 0.2
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.95
    top_k: int = 40
    #: system prompt used when a request brings none ("" = none)
    system_prompt: str = "You are a helpful AI assistant. Answer concisely."
    #: limits enforced on requests: tighter than the protocol's, never looser (a request
    #: the node accepted must also be one its workers and peers can decode)
    max_tokens_limit: Annotated[int, _range(1, MAX_TOKENS_LIMIT, "the protocol's limit")] = 4096
    max_n: Annotated[int, _range(1, MAX_N, "the protocol's limit")] = 16
    max_prompt_chars: Annotated[int, _range(1, MAX_PROMPT_CHARS, "the protocol's limit")] = 64_000


class SchedulerConfig(Section, frozen=True):
    #: requests waiting for a worker beyond this are refused with Overloaded
    max_queue: Annotated[int, Meta(ge=0)] = 64
    default_deadline_ms: DeadlineMs = 300_000
    restart_backoff_initial_ms: int = 200
    restart_backoff_max_ms: int = 10_000
    worker_start_timeout_ms: int = 60_000

    @property
    def restart_backoff_s(self) -> tuple[float, float]:
        """The first and the longest wait before a crashed worker is started again."""
        return self.restart_backoff_initial_ms / 1000, self.restart_backoff_max_ms / 1000

    @property
    def worker_start_timeout_s(self) -> float:
        return self.worker_start_timeout_ms / 1000


class ConsensusConfig(Section, frozen=True):
    #: one of core/plan.py's ASK_STRATEGIES
    strategy: AskStrategy = "confidence"
    #: candidates per ask: exactly ``n``, or up to ``budget`` (adaptive: spent in waves
    #: until the winner is settled, core/stopping.py; confidence, majority, best_of_n).
    #: Give one of them; with neither, n = 1 (the default, by measurement: README, "A
    #: budget instead of a count")
    n: int | None = None
    budget: int | None = None
    allow_truncated: bool = True
    #: per-node weights for weighted_vote, majority and confidence (node id, or its first 8
    #: or more characters as `zswarm peers` shows them -> weight; never a name, which a
    #: peer may choose)
    weights: dict[str, Annotated[float, Meta(gt=0.0, le=1000.0)]] = field(default_factory=dict)
    #: temperature of ``confidence``: lower trusts log-probabilities more, higher counts more
    confidence_tau: Annotated[float, Meta(gt=0.0, le=10.0)] = DEFAULT_TAU
    #: ``confidence`` divides out the model's lean on lettered questions ("(a) ... (b)
    #: ..."), learned from this node's own candidates (core/calibration.py)
    calibrate: bool = True

    def count_for(self, strategy: str) -> tuple[int, bool]:
        """(candidates, whether they are a budget) for an ask that gives neither: this
        table's n or budget (under a strategy that can spend one), else one."""
        if self.budget is not None and strategy in ADAPTIVE_STRATEGIES:
            return self.budget, True
        return self.n or 1, False


class FederationConfig(Section, frozen=True):
    #: join the swarm: advertise, discover, heartbeat, send and serve votes
    enabled: bool = True
    #: "mdns", "static" (only the peers below) or "both"
    discovery: Literal["mdns", "static", "both"] = "both"
    #: members this node verified are remembered (state_dir/members.json) and probed
    #: after a restart; one not seen for this many days is forgotten
    remember_days: Annotated[int, _range(1, 3650)] = 30
    #: addresses of peers to use without mDNS, each its RPC endpoint and key, e.g.
    #: ["tcp://192.168.1.20:17617?key=3f9a..."] (what the node prints at start)
    peers: list[PeerEndpoint] = field(default_factory=list)
    #: nodes only federate with nodes of the same swarm name (several swarms on one LAN)
    swarm: Annotated[str, Meta(min_length=1, max_length=64, description="a name")] = "default"
    #: time a peer gets to answer a vote (capped by the request's own deadline)
    deadline_ms: DeadlineMs = 30_000
    heartbeat_interval_ms: Annotated[int, _range(50, 60_000)] = 1000
    #: a peer silent for heartbeat_interval_ms x liveness is DEAD
    liveness: Annotated[int, _range(2, 100)] = 3
    #: ask only peers that serve the same model (same file hash)
    same_model_only: bool = True
    #: a DEAD or LEFT peer is forgotten after this long (it is found again when it returns)
    forget_after_ms: Annotated[int, _range(1000, 86_400_000)] = 300_000

    @property
    def deadline_s(self) -> float:
        return self.deadline_ms / 1000

    @property
    def heartbeat_interval_s(self) -> float:
        return self.heartbeat_interval_ms / 1000

    @property
    def forget_after_s(self) -> float:
        return self.forget_after_ms / 1000


class HttpConfig(Section, frozen=True):
    #: serve the OpenAI-compatible API and the federation routes on ports.http
    enabled: bool = True
    #: accepted "Authorization: Bearer <key>" values; empty (and no key file) = no auth
    api_keys: list[str] = field(default_factory=list)
    #: a file with one API key per line (added to api_keys)
    api_key_file: str = ""
    #: origins allowed by CORS, e.g. ["http://localhost:3000"]; empty = CORS off
    cors_origins: list[str] = field(default_factory=list)
    #: Host header values accepted besides this node's own (its address, localhost,
    #: 127.0.0.1, the machine's name and name.local), e.g. ["llm.home.arpa"]; a request
    #: naming another host is refused (DNS rebinding); ["*"] accepts any
    allowed_hosts: list[Annotated[str, Meta(max_length=253)]] = field(default_factory=list)
    #: connections served at once; more wait in the kernel's backlog (an idle connection
    #: holds a file descriptor until header_timeout_ms)
    max_connections: Annotated[int, _range(1, 65_536)] = 256
    #: request bodies larger than this are refused with 413
    max_body_bytes: Annotated[int, _range(1024, 64 * 1024 * 1024)] = 1_048_576
    #: a client gets this long to send its request headers (a new or idle connection)
    header_timeout_ms: ClientTimeoutMs = 10_000
    #: ...and this long to send its body (408 after); waiting for the answer has no limit
    #: but the request's own deadline
    body_timeout_ms: ClientTimeoutMs = 30_000
    #: the status page at / (this node, its peers, the last requests with their
    #: questions and answers; behind the API key when one is set); false = off
    status_page: bool = True

    @property
    def header_timeout_s(self) -> float:
        return self.header_timeout_ms / 1000

    @property
    def body_timeout_s(self) -> float:
        return self.body_timeout_ms / 1000


class SecurityConfig(Section, frozen=True):
    #: the swarm key (``zswarm keygen --out FILE``): with it every TCP socket between
    #: nodes and clients is CURVE-encrypted and only holders of the key get in;
    #: "" = an open swarm (anyone on the LAN can join, vote and ask)
    swarm_key_file: str = ""


class PortsConfig(Section, frozen=True):
    http: Port = 17615
    pub: Port = 17616
    rpc: Port = 17617


class Config(Section, frozen=True):
    node: NodeConfig = field(default_factory=NodeConfig)
    #: the one-model shorthand (``[model]``); with ``[[models]]`` it is the first of them
    model: ModelConfig = field(default_factory=ModelConfig)
    #: several models (``[[models]]``); the first is the node's default
    models: list[ModelEntry] = field(default_factory=list)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    ports: PortsConfig = field(default_factory=PortsConfig)
    #: where the config came from (for error messages); not a TOML key
    source: str = "<defaults>"

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

    def entries(self) -> list[ModelEntry]:
        """The configured models, the default first: ``[[models]]``, or ``[model]`` as one
        entry that is loaded at start and never unloaded (a one-model node as ever)."""
        if self.models:
            return list(self.models)
        return [ModelEntry(**msgspec.structs.asdict(self.model), pinned=True, preload=True,
                           keep_alive_s=0)]

    def for_model(self, entry: ModelEntry) -> Config:
        """This config as one model's workers see it: its settings as ``model``, its
        worker count as ``node.workers``."""
        node = msgspec.structs.replace(self.node, workers=entry.workers or self.node.workers)
        return msgspec.structs.replace(self, model=entry.settings(), node=node)

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



# --- errors that name the file, the key and what was expected ------------------------------

_AT = re.compile(r"(?s)(.*?) - at `\$(.*)`")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
#: a step into a table's values (msgspec does not say which key)
_ANY_KEY = -1
_MISSING = object()


def _steps(path: str) -> list[str | int]:
    return [name or (_ANY_KEY if index == "..." else int(index))
            for name, index in _STEP.findall(path)]


def _info_at(path: list[str | int]) -> Any:
    """The msgspec type info of the key at ``path`` (None where the schema has no such key)."""
    info: Any = mi.type_info(Config)
    for step in path:
        info = getattr(info, "type", info) if isinstance(info, mi.Metadata) else info
        if isinstance(info, mi.StructType) and isinstance(step, str):
            info = next((f.type for f in info.fields if f.name == step), None)
        elif isinstance(info, mi.ListType):
            info = info.item_type
        elif isinstance(info, mi.DictType):
            info = info.value_type
        else:
            return None
    return info


def _value_at(data: Any, path: list[str | int]) -> Any:
    for step in path:
        try:
            data = data[step] if step != _ANY_KEY else _MISSING
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return data


def _kind(info: Any) -> str:
    """What a key holds, in the words of a TOML file."""
    if isinstance(info, (mi.StructType, mi.DictType)):
        return "a table"
    if isinstance(info, mi.ListType):
        return "an array"
    if isinstance(info, mi.LiteralType):
        return " or ".join(repr(v) for v in info.values)  # in the order they are written
    names: dict[type, str] = {mi.IntType: "int", mi.FloatType: "float", mi.StrType: "str",
                              mi.BoolType: "bool"}
    return names.get(type(info), "a value")


def _bounds(info: Any) -> str:
    """A range or a pattern, as a sentence ("2 to 100", "at least 64", "tcp://host:port")."""
    if isinstance(info, mi.StrType) and info.pattern is None:
        return f"{info.min_length or 0} to {info.max_length} characters"
    if isinstance(info, (mi.IntType, mi.FloatType)):
        if info.ge is not None and info.le is not None:
            return f"{info.ge} to {info.le}"
        parts = [f"{word} {bound}" for word, bound in (
            ("at least", info.ge), ("more than", info.gt), ("at most", info.le),
            ("less than", info.lt)) if bound is not None]
        return ", ".join(parts)
    return _kind(info)


def _explain(exc: msgspec.ValidationError, data: Any, source: str) -> ConfigError:
    match = _AT.fullmatch(str(exc))
    what, where = (match[1], match[2]) if match else (str(exc), "")
    path = _steps(where)
    key = where.lstrip(".").replace("[...]", " values") or "top level"
    unknown = re.fullmatch(r"Object contains unknown field `(.*)`", what)
    info = _info_at(path)
    if isinstance(info, mi.LiteralType):  # msgspec sorts the choices; keep the written order
        parent = _info_at(path[:-1])
        info = mi.LiteralType(typing.get_args(typing.get_type_hints(parent.cls)[str(path[-1])]))
    if unknown:
        known = ", ".join(sorted(f.name for f in info.fields if f.name != "source"))
        name = f"{key}.{unknown[1]}" if path else unknown[1]
        return ConfigError(f"{source}: unknown key '{name}' (known here: {known})")
    value = _value_at(data, path)
    why = ""
    if isinstance(info, mi.Metadata):
        why = (info.extra_json_schema or {}).get("description", "")
        info = info.type
    if ", got `" in what:  # the wrong type
        expected, got = _kind(info), f"{type(value).__name__} {value!r}"
    elif isinstance(info, mi.StrType) and info.pattern and why:  # the pattern has a name
        expected, got, why = why, repr(value), ""
    else:  # the right type, out of range
        expected, got = _bounds(info), repr(value)
    if why:
        expected += f" ({why})"
    got = f", got {got}" if value is not _MISSING else ""
    return ConfigError(f"{source}: {key}: expected {expected}{got}")


def _validate(cfg: Config) -> None:
    """The rules that relate two keys or need a parser (each key's own range is written
    next to it)."""

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{cfg.source}: {key}: {why}")

    if cfg.node.bind != "auto":  # IPv4 only: mDNS and the advertised endpoints are IPv4
        try:
            ipaddress.IPv4Address(cfg.node.bind)
        except ValueError:
            raise bad("node.bind", 'expected "auto" or an IPv4 address such as 192.168.1.10, '
                      f"got {cfg.node.bind!r}") from None
    consensus, top = cfg.consensus, cfg.generation.max_n
    for key, count in (("n", consensus.n), ("budget", consensus.budget)):
        if count is not None and not 1 <= count <= top:
            raise bad(f"consensus.{key}", f"expected 1 to generation.max_n ({top}), got {count}")
    for node in consensus.weights:
        if not re.fullmatch(rf"[0-9a-f]{{{MIN_ID_PREFIX},16}}", node):
            raise bad("consensus.weights", f"{node!r} is not a node id: weights are by node "
                      f"id, its 16 hex characters or the first {MIN_ID_PREFIX} or more (the "
                      "12 `zswarm peers` shows), never by name (a peer chooses its name)")
    try:  # the rules a request's n and budget are held to, in the same words
        check_one_count(consensus.n, consensus.budget)
        check_strategy(consensus.strategy, adaptive=consensus.budget is not None)
    except RequestRefused as exc:
        raise bad(f"consensus.{exc.field}", str(exc)) from None
    names = [m.name for m in cfg.models if m.name]
    if len(cfg.models) > MAX_MODELS:
        raise bad("models", f"at most {MAX_MODELS} models per node, got {len(cfg.models)}")
    for name in names:
        if names.count(name) > 1:
            raise bad("models", f"two models are named {name!r}: a name says which one a "
                      "request wants, so each must be unique")
    if cfg.generation.max_tokens > cfg.generation.max_tokens_limit:
        raise bad("generation.max_tokens", "expected 1 to generation.max_tokens_limit "
                  f"({cfg.generation.max_tokens_limit})")


def parse_config(data: dict[str, Any], *, source: str = "<string>") -> Config:
    if isinstance(data, dict) and "source" in data:
        raise ConfigError(f"{source}: unknown key 'source'")
    if isinstance(data, dict) and "model" in data and data.get("models"):
        raise ConfigError(f"{source}: [model] and [[models]]: give one model as [model] or "
                          "several as [[models]], not both")
    try:
        cfg = msgspec.convert({**data, "source": source} if isinstance(data, dict) else data,
                              Config)
    except msgspec.ValidationError as exc:
        raise _explain(exc, data, source) from None
    _validate(cfg)
    if cfg.models:  # what reads one model (pull, doctor, cores) reads the default one
        cfg = msgspec.structs.replace(cfg, model=cfg.models[0].settings())
    return cfg


def override(cfg: Config, changes: dict[str, dict[str, Any]]) -> Config:
    """``cfg`` with some keys replaced (command-line flags), checked like the file's keys.

    Nothing to replace: ``cfg`` itself (its errors keep naming only the file).
    """
    if not any(changes.values()):
        return cfg
    data = msgspec.to_builtins(cfg)
    data.pop("source")
    if data["models"]:
        data.pop("model")  # the first of them
    for section, values in changes.items():
        data[section] = {**data[section], **values}
    return parse_config(data, source=f"{cfg.source} + command line")


#: the keys that name files: a relative one is relative to the config file (as a user
#: reads it), not to the shell's directory; "default" and "swarm:<id>" are not paths
PATH_KEYS = (("node", "state_dir"), ("node", "models_dir"), ("model", "path"),
             ("models", "path"), ("security", "swarm_key_file"), ("http", "api_key_file"))


def _anchor(values: dict[str, Any], key: str, base: Path) -> dict[str, Any]:
    value = values.get(key)
    if not isinstance(value, str) or not value or value.startswith(("/", "~")) \
            or (key == "path" and (value == "default" or value.startswith("swarm:"))):
        return values
    return {**values, key: str(base / value)}


def _anchored(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """``data`` with the relative paths of PATH_KEYS made absolute against ``base``."""
    for section, key in PATH_KEYS:
        values = data.get(section)
        if isinstance(values, dict):
            data[section] = _anchor(values, key, base)
        elif isinstance(values, list):  # [[models]]
            data[section] = [_anchor(v, key, base) if isinstance(v, dict) else v
                             for v in values]
    return data


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Load and validate a swarm.toml; ``None`` gives the defaults. A relative path in it
    (PATH_KEYS) is relative to the file's own directory."""
    if path is None:
        return parse_config({}, source="<defaults>")
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: no such config file (leave out --config for the built-in "
                          "defaults; the repository's swarm.toml documents every key)") from exc
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return parse_config(_anchored(data, p.resolve().parent), source=str(p))
