"""Wire message types: frozen, tagged, versioned msgspec Structs, and PROTOCOL_VERSION.

Limits on sizes and ranges live here as constraints, so decoding (core/codec.py)
validates everything before anything acts on it. Messages prefixed ``Work`` are
internal to one machine (node <-> its worker processes over ipc://); the rest may
cross the network.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

PROTOCOL_VERSION = 2  # 2: ids are keys (NodeCard.public), every link CURVE

MAX_PROMPT_CHARS = 256_000
MAX_MESSAGES = 256
MAX_N = 32
MAX_TOKENS_LIMIT = 32_768
MAX_STOP_STRINGS = 8
MAX_FRAME_BYTES = 8 * 1024 * 1024
#: model files pulled over the swarm (zswarm pull): at most 1 TiB, in pieces of these sizes
MAX_MODEL_BYTES = 1 << 40
MIN_CHUNK_BYTES = 64 * 1024
MAX_CHUNK_BYTES = 4 * 1024 * 1024
#: what a node's RPC socket accepts: a request's prompt is at most MAX_PROMPT_CHARS
#: characters of up to 4 bytes (replies, up to MAX_FRAME_BYTES, only go the other way)
MAX_REQUEST_BYTES = 2 * 1024 * 1024
#: what a heartbeat subscriber accepts (a heartbeat is well under 2 KiB)
MAX_HEARTBEAT_BYTES = 64 * 1024
#: the longest candidate text a peer may send (a 4096-token answer is ~20,000 characters)
MAX_CANDIDATE_CHARS = 200_000
#: a peer's candidate may hold at most this many characters per token asked for
MAX_CHARS_PER_TOKEN = 64
#: what a node accepts on a vote link: a vote (n candidates, each bounded by max_tokens)
MAX_VOTE_BYTES = 2 * 1024 * 1024
#: the longest deadline anyone may ask for (one hour), in ms
MAX_DEADLINE_MS = 3_600_000
#: heartbeats may claim an interval up to this (config's own limit)
MAX_HEARTBEAT_INTERVAL_MS = 60_000
#: Load figures above these are not believed
MAX_WORKERS = 1024
MAX_QUEUE = 1_000_000
MAX_TOKENS_PER_S = 1_000_000.0

Text = Annotated[str, Meta(max_length=MAX_PROMPT_CHARS)]
ShortText = Annotated[str, Meta(max_length=256)]
#: a node id: 1 to 64 letters, digits, '-' or '_' (ours are 16 hex digits)
NodeIdText = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
#: a log-probability: finite (NaN fails every range check) and at most 0
LogProb = Annotated[float, Meta(ge=-1e9, le=0.0)]
#: milliseconds as a finite, non-negative float
Millis = Annotated[float, Meta(ge=0.0, le=1e9)]
Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "cancelled", "error"]
#: the peer table's states (core/peers.PeerState has one member for each)
TableState = Literal["alive", "suspect", "discovered", "dead", "left", "incompatible"]
#: a member's state as counted and shown, in that order: the table's, and "unreachable"
#: (a static peer not heard from yet: an endpoint, not yet in the table)
MemberState = Literal[TableState, "unreachable"]
#: ...and "advertised": a node `zswarm peers --browse` saw on mDNS (not a member)
ShownState = Literal[MemberState, "advertised"]
#: how a member is reached: over links this node opens to it ("direct"), only over the
#: link it opened to this node ("its link": it accepts no inbound connections), or it
#: reaches this node only over a link this node opened ("our link": this node accepts
#: none from it)
Reach = Literal["direct", "its link", "our link"]


#: a JSON schema (JSON text) in a structured request: at most this many characters
MAX_SCHEMA_CHARS = 32_000
#: tools one request may define
MAX_TOOLS = 64
#: the most top log-probabilities a token may carry (OpenAI's range of top_logprobs)
MAX_TOP_LOGPROBS = 20
#: tokens one request may bias (OpenAI's logit_bias)
MAX_LOGIT_BIAS = 1024
SchemaText = Annotated[str, Meta(max_length=MAX_SCHEMA_CHARS)]
#: a function's name, as OpenAI allows it
ToolName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class ToolCall(Struct, frozen=True, kw_only=True):
    """A call of a tool an assistant made (in a conversation's history)."""

    id: ShortText = ""
    name: ToolName
    #: the arguments as JSON text
    arguments: SchemaText = "{}"


class ChatMessage(Struct, frozen=True, kw_only=True):
    role: Role
    content: Text
    #: an assistant's calls of tools (its content may then be empty)
    tool_calls: Annotated[tuple[ToolCall, ...], Meta(max_length=MAX_TOOLS)] = ()
    #: a tool's result: the id of the call it answers
    tool_call_id: ShortText = ""


class ToolSpec(Struct, frozen=True, kw_only=True):
    """A function the model may call: its name, what it does, and its parameters' schema."""

    name: ToolName
    description: Annotated[str, Meta(max_length=4096)] = ""
    #: the JSON schema of the arguments object (JSON text)
    parameters: SchemaText = "{}"


class Structure(Struct, frozen=True, kw_only=True):
    """What shape an answer must have (core/structured.py reads it; engines constrain
    their decoding to it). ``format``: free text, any JSON object, or JSON valid under
    ``schema``; ``tools``: functions the answer may call, as ``tool_choice`` says ("auto":
    text or calls, "required": calls, "none": text only, or a tool's name: a call of it)."""

    format: Literal["text", "json", "schema"] = "text"
    schema: SchemaText = ""
    tools: Annotated[tuple[ToolSpec, ...], Meta(max_length=MAX_TOOLS)] = ()
    tool_choice: ShortText = "auto"
    #: may an answer make several calls (else one)
    parallel_tool_calls: bool = False


class SamplingParams(Struct, frozen=True, kw_only=True):
    max_tokens: Annotated[int, Meta(ge=1, le=MAX_TOKENS_LIMIT)] = 256
    temperature: Annotated[float, Meta(ge=0.0, le=5.0)] = 0.7
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.95
    top_k: Annotated[int, Meta(ge=0, le=100_000)] = 40
    stop: Annotated[tuple[ShortText, ...], Meta(max_length=MAX_STOP_STRINGS)] = ()
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    #: generate exactly max_tokens (benchmarks); end-of-generation tokens are skipped
    ignore_eos: bool = False
    #: report every generated token with its log-probability
    logprobs: bool = False
    #: ... and this many of the most likely tokens at its place (with logprobs)
    top_logprobs: Annotated[int, Meta(ge=0, le=MAX_TOP_LOGPROBS)] = 0
    #: OpenAI's penalties: a token's logit less ``presence_penalty`` once it appeared in
    #: the answer, and ``frequency_penalty`` times the times it appeared
    presence_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] = 0.0
    #: token id -> a bias added to its logit (-100 bans it, 100 all but forces it)
    logit_bias: Annotated[dict[Annotated[int, Meta(ge=0, le=10_000_000)],
                               Annotated[float, Meta(ge=-100.0, le=100.0)]],
                          Meta(max_length=MAX_LOGIT_BIAS)] = {}


class TokenLogprob(Struct, frozen=True, array_like=True):
    """One generated token (its text) and its log-probability under the model."""

    token: Annotated[str, Meta(max_length=1024)]
    logprob: LogProb
    #: the most likely tokens at this place and their log-probabilities (top_logprobs)
    top: Annotated[tuple[tuple[Annotated[str, Meta(max_length=1024)], LogProb], ...],
                   Meta(max_length=MAX_TOP_LOGPROBS)] = ()


class GenerateRequest(Struct, frozen=True, kw_only=True):
    """What to generate: chat ``messages`` (templated by the engine) or a raw ``prompt``."""

    messages: Annotated[tuple[ChatMessage, ...], Meta(max_length=MAX_MESSAGES)] = ()
    prompt: Text | None = None
    params: SamplingParams = SamplingParams()
    n: Annotated[int, Meta(ge=1, le=MAX_N)] = 1
    #: index of this request's first candidate within a larger request (seeding)
    first_index: Annotated[int, Meta(ge=0, le=4 * MAX_N)] = 0
    #: the answer's required shape (JSON, a schema, tool calls); None: free text
    structure: Structure | None = None


class Candidate(Struct, frozen=True, kw_only=True):
    """One generated answer and where it came from."""

    text: Annotated[str, Meta(max_length=MAX_CANDIDATE_CHARS)]
    finish_reason: FinishReason
    tokens: Annotated[int, Meta(ge=0, le=MAX_TOKENS_LIMIT)] = 0
    prompt_tokens: Annotated[int, Meta(ge=0, le=10 * MAX_PROMPT_CHARS)] = 0
    #: of those, how many the worker's prompt cache held already (not decoded again)
    cached_tokens: Annotated[int, Meta(ge=0, le=10 * MAX_PROMPT_CHARS)] = 0
    #: mean log-probability of the generated tokens, when the engine reports it
    mean_logprob: LogProb | None = None
    latency_ms: Millis = 0.0
    #: display name of the node that made it (the asker sets it from the link)
    node: ShortText = ""
    #: id of the node that made it (the asker sets it from the link): weights are by id
    node_id: ShortText = ""
    worker: ShortText = ""
    #: per token, when the request asked for logprobs
    token_logprobs: Annotated[list[TokenLogprob], Meta(max_length=MAX_TOKENS_LIMIT)] | None = None
    #: the model that made it (set by the asker from the node's card, never taken from a
    #: peer's word): log-probabilities are only compared within one model
    model_id: ShortText = ""


class ReportCandidate(Struct, frozen=True, kw_only=True):
    node: str
    worker: str
    node_id: str = ""
    text: str
    score: float | None
    finish_reason: FinishReason
    latency_ms: float
    tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    answer_key: str | None = None
    token_logprobs: list[TokenLogprob] | None = None
    mean_logprob: float | None = None
    model_id: str = ""


Outcome = Literal["answered", "partial", "timeout", "failed", "cancelled"]


class Participant(Struct, frozen=True, kw_only=True):
    """What one node (this one or a peer) was asked for and what came of it."""

    node: str
    requested: int
    received: int
    outcome: Outcome
    #: its node id (two nodes may share a name: ``node`` then shows the start of this)
    node_id: str = ""
    detail: str = ""
    latency_ms: float = 0.0


class Report(Struct, frozen=True, kw_only=True):
    """Who said what, and how the strategy chose: returned with every answer."""

    strategy: str
    winner: int
    agreement: float
    candidates: list[ReportCandidate]
    timings: dict[str, float] = {}
    expected: int = 0
    note: str = ""
    participants: list[Participant] = []
    #: an adaptive ask: the most candidates it could use (0: a fixed n), the waves it ran
    #: and why it stopped (core/stopping.py's StopReason)
    budget: int = 0
    waves: int = 1
    stop: str = ""


NodeState = Literal["loading", "ready", "draining", "leaving"]
#: a model's life on its node (runtime/models.py)
ModelState = Literal["unloaded", "loading", "loaded", "unloading", "failed"]
#: models one node may serve and its card list (config.py holds a node to it)
MAX_MODELS = 16


class HeldModel(Struct, frozen=True, kw_only=True):
    """A model a node serves: its id and the name its config gives it (a claim)."""

    model_id: ShortText
    name: Annotated[str, Meta(max_length=64)] = ""


class NodeCard(Struct, frozen=True, kw_only=True):
    """Who a node is and where to reach it (advertised over mDNS, heartbeats and Status)."""

    node_id: NodeIdText
    name: ShortText
    model_id: ShortText
    workers: Annotated[int, Meta(ge=0, le=MAX_WORKERS)]
    rpc: ShortText
    pub: ShortText
    #: HTTP port of the node's shim; 0 = none
    http: Annotated[int, Meta(ge=0, le=65535)] = 0
    swarm: ShortText = "default"
    hardware: ShortText = ""
    #: fingerprint of the swarm key this node uses ("" = none: an open swarm); public
    key: ShortText = ""
    #: every model it serves, loaded or not ([] from a node of one model: ``model_id``);
    #: their states come with each heartbeat (``Load.models``)
    models: Annotated[list[HeldModel], Meta(max_length=MAX_MODELS)] = []
    #: its public key (hex): ``node_id`` derives from it (core/ids.py), and every link
    #: to the node is pinned to it; "" in no card a node accepts (core/claims.py)
    public: Annotated[str, Meta(max_length=64)] = ""


class Load(Struct, frozen=True, kw_only=True):
    """How busy a node is right now."""

    state: NodeState = "ready"
    workers_ready: Annotated[int, Meta(ge=0, le=MAX_WORKERS)] = 0
    idle_workers: Annotated[int, Meta(ge=0, le=MAX_WORKERS)] = 0
    queue_depth: Annotated[int, Meta(ge=0, le=MAX_QUEUE)] = 0
    max_queue: Annotated[int, Meta(ge=0, le=MAX_QUEUE)] = 0
    #: tokens generated per second over the last few seconds
    tokens_per_s: Annotated[float, Meta(ge=0.0, le=MAX_TOKENS_PER_S)] = 0.0
    #: the state of each model of the card's ``models``, in its order
    models: Annotated[list[ModelState], Meta(max_length=MAX_MODELS)] = []


class _Msg(Struct, frozen=True, kw_only=True, tag_field="type"):
    v: int = PROTOCOL_VERSION


# --- client <-> node (zswarm ask, zswarm peers) ---------------------------------


class ClientRequest(_Msg, frozen=True, tag="client_request"):
    request_id: ShortText
    request: GenerateRequest
    strategy: ShortText | None = None
    deadline_ms: Annotated[int, Meta(ge=1, le=MAX_DEADLINE_MS)] | None = None
    #: ``request.n`` is a budget: at most that many candidates, in waves (core/stopping.py)
    adaptive: bool = False
    #: send the answer's text as it is generated (ClientToken), where there is one
    #: candidate (with several, the text is known only once decided: each candidate's
    #: arrival is sent instead, ClientProgress)
    stream: bool = False


class ClientToken(_Msg, frozen=True, tag="client_token"):
    """A piece of the answer of a streamed ClientRequest, as it is generated."""

    request_id: ShortText
    text: Annotated[str, Meta(max_length=MAX_CANDIDATE_CHARS)]


class ClientProgress(_Msg, frozen=True, tag="client_progress"):
    """A candidate of a streamed ClientRequest of several arrived (the node that made it),
    for a client that shows the ask's progress."""

    request_id: ShortText
    node: ShortText


class ClientReply(_Msg, frozen=True, tag="client_reply"):
    request_id: ShortText
    answer: str
    report: Report


class StatusRequest(_Msg, frozen=True, tag="status_request"):
    request_id: ShortText
    #: the asking node's id, when a node asks: a node that thinks it dead probes it back
    #: (at the endpoints it knows, never at any the request names)
    sender: NodeIdText | None = None
    #: the asking node's card ("know me"): a member that does not know it probes it back
    #: at these endpoints, never believing them before the node answers there
    card: NodeCard | None = None
    #: sent over a standing link the receiver may use back (ROUTER -> this DEALER) when
    #: it cannot connect to the sender: the sender accepts requests on it
    standing: bool = False


class Status(_Msg, frozen=True, tag="status"):
    request_id: ShortText
    card: NodeCard
    load: Load
    #: the node's heartbeat interval: an answer counts as hearing from it, like a
    #: heartbeat, so the asker knows when its silence means it is gone
    interval_ms: Annotated[int, Meta(ge=1, le=MAX_HEARTBEAT_INTERVAL_MS)] | None = None


class PeersRequest(_Msg, frozen=True, tag="peers_request"):
    request_id: ShortText


class PeerInfo(Struct, frozen=True, kw_only=True):
    node_id: str
    name: str
    address: str
    state: ShownState
    model_id: str
    load: Load
    last_seen_s: float | None
    rtt_ms: float | None
    source: str
    rpc: str = ""
    detail: str = ""
    reach: Reach = "direct"
    #: the models its card lists (their states: ``load.models``)
    models: Annotated[list[HeldModel], Meta(max_length=MAX_MODELS)] = []
    #: its key (hex; its id derives from it): what a link to it is pinned to
    public: str = ""


class PeersReply(_Msg, frozen=True, tag="peers_reply"):
    request_id: ShortText
    node: NodeCard
    peers: list[PeerInfo]
    #: the answering node's own load (its models' states)
    load: Load = Load()


# --- node <-> node (federation) -------------------------------------------------


class Heartbeat(_Msg, frozen=True, tag="heartbeat"):
    card: NodeCard
    seq: Annotated[int, Meta(ge=0)]
    load: Load
    interval_ms: Annotated[int, Meta(ge=1, le=MAX_HEARTBEAT_INTERVAL_MS)] = 1000


class VoteRequest(_Msg, frozen=True, tag="vote_request"):
    """Generate candidates locally (never fanned out again) and answer with a Vote."""

    request_id: ShortText
    request: GenerateRequest
    #: time left for this vote when it was sent; past it the vote is not started
    deadline_ms: Annotated[int, Meta(ge=1, le=MAX_DEADLINE_MS)]
    origin: ShortText = ""
    #: the model the asker expects this node to answer with ("": the one it serves); a
    #: node that does not serve it refuses, so candidates are never labelled with a
    #: model that did not make them
    model_id: ShortText = ""


class Vote(_Msg, frozen=True, tag="vote"):
    request_id: ShortText
    node_id: NodeIdText
    name: ShortText
    candidates: Annotated[list[Candidate], Meta(max_length=MAX_N)]
    elapsed_ms: Millis = 0.0


class Cancel(_Msg, frozen=True, tag="cancel"):
    request_id: ShortText


MAX_ERROR_CHARS = 4000


class Error(_Msg, frozen=True, tag="error"):
    request_id: ShortText | None
    kind: ShortText
    message: Annotated[str, Meta(max_length=4096)]


def error(request_id: str | None, kind: str, message: str) -> Error:
    """An Error whose message fits the wire (long ones are cut)."""
    return Error(request_id=request_id, kind=kind[:256], message=message[:MAX_ERROR_CHARS])


# --- node <-> local worker processes (ipc://) ----------------------------------


class WorkGenerate(_Msg, frozen=True, tag="work_generate"):
    request_id: ShortText
    request: GenerateRequest
    stream: bool = False
    #: score these texts as answers instead of generating: one WorkCandidate each (index:
    #: its position), carrying its mean log-probability (None if the engine cannot score)
    score: Annotated[tuple[Annotated[str, Meta(max_length=MAX_CANDIDATE_CHARS)], ...],
                     Meta(max_length=MAX_N)] | None = None


class WorkCancel(_Msg, frozen=True, tag="work_cancel"):
    request_id: ShortText


class WorkReady(_Msg, frozen=True, tag="work_ready"):
    worker: ShortText
    model_id: ShortText
    pid: int
    #: requests the worker runs at once (continuous batching; 1 = one at a time)
    slots: Annotated[int, Meta(ge=1, le=64)] = 1


class WorkToken(_Msg, frozen=True, tag="work_token"):
    request_id: ShortText
    index: int
    text: str


class WorkCandidate(_Msg, frozen=True, tag="work_candidate"):
    request_id: ShortText
    index: int
    candidate: Candidate


class WorkDone(_Msg, frozen=True, tag="work_done"):
    request_id: ShortText
    #: prompts the worker's cache dropped (whole or in part) since its last WorkDone
    cache_evictions: Annotated[int, Meta(ge=0, le=1_000_000)] = 0


# --- pulling a model from a member (zswarm pull; runtime/sharing.py serves) -----------


class ModelRequest(_Msg, frozen=True, tag="model_request"):
    """What a node serves as ``model_id``: its size and hashes (ModelOffer)."""

    request_id: ShortText
    model_id: ShortText
    #: also the sha256 of every piece (costs the server one read of the file, once)
    chunks: bool = False


class ModelOffer(_Msg, frozen=True, tag="model_offer"):
    request_id: ShortText
    model_id: ShortText
    #: the file's name (a plain name: the puller checks it before using it)
    name: ShortText
    size: Annotated[int, Meta(ge=0, le=MAX_MODEL_BYTES)]
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
    chunk_bytes: Annotated[int, Meta(ge=MIN_CHUNK_BYTES, le=MAX_CHUNK_BYTES)]
    #: sha256 of each chunk_bytes piece, in order (empty unless asked for)
    chunk_sha256: list[Annotated[bytes, Meta(min_length=32, max_length=32)]] = []


class ChunkRequest(_Msg, frozen=True, tag="chunk_request"):
    request_id: ShortText
    model_id: ShortText
    index: Annotated[int, Meta(ge=0, le=MAX_MODEL_BYTES // MIN_CHUNK_BYTES)]


class Chunk(_Msg, frozen=True, tag="chunk"):
    request_id: ShortText
    index: Annotated[int, Meta(ge=0, le=MAX_MODEL_BYTES // MIN_CHUNK_BYTES)]
    data: Annotated[bytes, Meta(max_length=MAX_CHUNK_BYTES)]


Message = (
    ClientRequest | ClientToken | ClientProgress | ClientReply | StatusRequest | Status
    | Error | PeersRequest
    | PeersReply | Heartbeat | VoteRequest | Vote | Cancel | ModelRequest | ModelOffer
    | ChunkRequest | Chunk
    | WorkGenerate | WorkCancel | WorkReady | WorkToken | WorkCandidate | WorkDone
)

