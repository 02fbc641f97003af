"""The zswarm error tree: every failure a user or peer can see has a type here.

    ZswarmError                  kind "error"
    +-- ConfigError              "config": a bad file or key; the message names it
    +-- LocalProtocolError       "local_protocol": a bug on our side of a protocol
    +-- RemoteProtocolError      "protocol": bytes we cannot accept (``reason`` counted)
    |   +-- RequestRefused       (same kind): over this node's limits; ``field`` names why
    |   +-- DuplicateRequest     "duplicate_request": a request id still in flight
    +-- InternalError            "internal": a bug that costs one request
    +-- PeerUnavailable          "unavailable": unreachable, or gone mid-request
    +-- NoQuorum                 "no_quorum": no usable candidate arrived
    +-- Overloaded               "overloaded": backpressure; ``retry_after_s``
    |   +-- Loading              "loading": the model is not loaded yet
    |   +-- Draining             "draining": the node is shutting down
    +-- DeadlineExceeded         "deadline"
    +-- InferenceError           "inference": the engine or its worker failed
    |   +-- WorkerCrashed        "worker_crashed"
    +-- ModelNotFound            "model_not_found"

``kind`` travels on the wire and in HTTP error bodies; ``ERROR_KINDS`` (derived from
the classes below) turns it back into a type. Adapters translate library errors into
these (``raise X(...) from exc``); nothing outside this module invents new top-level
exceptions.
"""

from __future__ import annotations


class ZswarmError(Exception):
    """Root of every error zswarm raises on purpose."""

    #: short machine-readable kind, used on the wire and in HTTP error bodies
    kind = "error"


class ConfigError(ZswarmError):
    """The configuration is invalid; the message names the file and the key."""

    kind = "config"


class LocalProtocolError(ZswarmError):
    """We misused a protocol or state machine (a bug on our side)."""

    kind = "local_protocol"


class RemoteProtocolError(ZswarmError):
    """A peer or client sent bytes we cannot accept (malformed, wrong version, too big).

    ``reason`` is the short label the frame is counted under in
    ``zswarm_frames_dropped_total{socket, reason}``.
    """

    kind = "protocol"

    def __init__(self, message: str, *, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class RequestRefused(RemoteProtocolError):
    """A well-formed request over this node's limits (core/limits.py); ``field`` names why."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message, reason="refused")
        self.field = field


class DuplicateRequest(RemoteProtocolError):
    """A sender reused a request id that is still in flight from the same sender."""

    kind = "duplicate_request"

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message, reason="duplicate")
        self.request_id = request_id


class InternalError(ZswarmError):
    """A bug on this node; it costs the one request that met it, never the node."""

    kind = "internal"


class PeerUnavailable(ZswarmError):
    """A peer or node could not be reached, or it went away mid-request."""

    kind = "unavailable"


class NoQuorum(ZswarmError):
    """No usable candidate arrived, so no decision could be made."""

    kind = "no_quorum"


class Overloaded(ZswarmError):
    """Backpressure: the admission queue is full. Retry after ``retry_after_s``."""

    kind = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Loading(Overloaded):
    """The node is still loading its model: ask another node, or again in a moment."""

    kind = "loading"

    def __init__(self, message: str = "the node is loading its model", *,
                 retry_after_s: float = 2.0) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


class Draining(Overloaded):
    """The node is shutting down: it finishes what it has and takes nothing new."""

    kind = "draining"

    def __init__(self, message: str = "the node is draining (shutting down)", *,
                 retry_after_s: float = 5.0) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


class DeadlineExceeded(ZswarmError):
    """The request's deadline passed before it could be answered."""

    kind = "deadline"


class InferenceError(ZswarmError):
    """The engine or its worker process failed while generating."""

    kind = "inference"


class WorkerCrashed(InferenceError):
    """The worker process died while it held the request (retried once if nothing was sent)."""

    kind = "worker_crashed"


class ModelNotFound(ZswarmError):
    """The model file does not exist, is unreadable or is not a model we can load."""

    kind = "model_not_found"


def _kinds(root: type[ZswarmError]) -> dict[str, type[ZswarmError]]:
    """Every class of the tree by its kind; a subclass that keeps its parent's kind
    (RequestRefused) does not replace the parent."""
    kinds = {root.kind: root}
    for sub in root.__subclasses__():
        kinds = {**_kinds(sub), **kinds}
    return kinds


ERROR_KINDS: dict[str, type[ZswarmError]] = _kinds(ZswarmError)


def error_from_kind(kind: str, message: str) -> ZswarmError:
    """Rebuild an error received over the wire; unknown kinds become ZswarmError."""
    return ERROR_KINDS.get(kind, ZswarmError)(message)
