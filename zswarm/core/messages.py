"""Wire message types: frozen, tagged, versioned msgspec Structs, and PROTOCOL_VERSION.

Limits on sizes and ranges live here as constraints, so decoding (core/codec.py)
validates everything before anything acts on it. Messages prefixed ``Work`` are
internal to one machine (node <-> its worker processes over ipc://); the rest may
cross the network.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

PROTOCOL_VERSION = 1

MAX_PROMPT_CHARS = 256_000
MAX_MESSAGES = 256
MAX_N = 32
MAX_TOKENS_LIMIT = 32_768
MAX_STOP_STRINGS = 8
MAX_FRAME_BYTES = 8 * 1024 * 1024

Text = Annotated[str, Meta(max_length=MAX_PROMPT_CHARS)]
ShortText = Annotated[str, Meta(max_length=256)]
Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled", "error"]


class ChatMessage(Struct, frozen=True):
    role: Role
    content: Text


class SamplingParams(Struct, frozen=True, kw_only=True):
    max_tokens: Annotated[int, Meta(ge=1, le=MAX_TOKENS_LIMIT)] = 256
    temperature: Annotated[float, Meta(ge=0.0, le=5.0)] = 0.7
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.95
    top_k: Annotated[int, Meta(ge=0, le=100_000)] = 40
    stop: Annotated[tuple[ShortText, ...], Meta(max_length=MAX_STOP_STRINGS)] = ()
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    #: generate exactly max_tokens (benchmarks); end-of-generation tokens are skipped
    ignore_eos: bool = False


class GenerateRequest(Struct, frozen=True, kw_only=True):
    """What to generate: chat ``messages`` (templated by the engine) or a raw ``prompt``."""

    messages: Annotated[tuple[ChatMessage, ...], Meta(max_length=MAX_MESSAGES)] = ()
    prompt: Text | None = None
    params: SamplingParams = SamplingParams()
    n: Annotated[int, Meta(ge=1, le=MAX_N)] = 1
    #: index of this request's first candidate within a larger request (seeding)
    first_index: Annotated[int, Meta(ge=0, le=4 * MAX_N)] = 0


class Candidate(Struct, frozen=True, kw_only=True):
    """One generated answer and where it came from."""

    text: str
    finish_reason: FinishReason
    tokens: int = 0
    #: mean log-probability of the generated tokens, when the engine reports it
    mean_logprob: float | None = None
    latency_ms: float = 0.0
    node: str = ""
    worker: str = ""


class ReportCandidate(Struct, frozen=True, kw_only=True):
    node: str
    worker: str
    text: str
    score: float | None
    finish_reason: FinishReason
    latency_ms: float
    tokens: int = 0
    answer_key: str | None = None


class Report(Struct, frozen=True, kw_only=True):
    """Who said what, and how the strategy chose: returned with every answer."""

    strategy: str
    winner: int
    agreement: float
    candidates: list[ReportCandidate]
    timings: dict[str, float] = {}
    expected: int = 0
    note: str = ""


class _Msg(Struct, frozen=True, kw_only=True, tag_field="type"):
    v: int = PROTOCOL_VERSION


# --- client <-> node (zswarm ask, zswarm peers) ---------------------------------


class ClientRequest(_Msg, frozen=True, tag="client_request"):
    request_id: ShortText
    request: GenerateRequest
    strategy: ShortText | None = None
    deadline_ms: Annotated[int, Meta(ge=1, le=3_600_000)] | None = None


class ClientReply(_Msg, frozen=True, tag="client_reply"):
    request_id: ShortText
    answer: str
    report: Report


class StatusRequest(_Msg, frozen=True, tag="status_request"):
    request_id: ShortText


class Status(_Msg, frozen=True, tag="status"):
    request_id: ShortText
    node_id: ShortText
    name: ShortText
    model_id: ShortText
    workers: int
    workers_ready: int
    queue_depth: int
    max_queue: int
    state: ShortText = "ready"


class Error(_Msg, frozen=True, tag="error"):
    request_id: ShortText | None
    kind: ShortText
    message: Annotated[str, Meta(max_length=4096)]


# --- node <-> local worker processes (ipc://) ----------------------------------


class WorkGenerate(_Msg, frozen=True, tag="work_generate"):
    request_id: ShortText
    request: GenerateRequest
    stream: bool = False


class WorkCancel(_Msg, frozen=True, tag="work_cancel"):
    request_id: ShortText


class WorkReady(_Msg, frozen=True, tag="work_ready"):
    worker: ShortText
    model_id: ShortText
    pid: int


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


Message = (
    ClientRequest | ClientReply | StatusRequest | Status | Error
    | WorkGenerate | WorkCancel | WorkReady | WorkToken | WorkCandidate | WorkDone
)

