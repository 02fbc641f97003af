"""The zswarm error tree: every failure a user or peer can see has a type here.

Adapters translate library errors into these (``raise X(...) from exc``);
nothing outside this module invents new top-level exceptions.
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


ERROR_KINDS: dict[str, type[ZswarmError]] = {
    cls.kind: cls
    for cls in (
        ZswarmError,
        ConfigError,
        LocalProtocolError,
        RemoteProtocolError,
        DuplicateRequest,
        InternalError,
        PeerUnavailable,
        NoQuorum,
        Overloaded,
        Loading,
        Draining,
        DeadlineExceeded,
        InferenceError,
        WorkerCrashed,
        ModelNotFound,
    )
}


def error_from_kind(kind: str, message: str) -> ZswarmError:
    """Rebuild an error received over the wire; unknown kinds become ZswarmError."""
    return ERROR_KINDS.get(kind, ZswarmError)(message)
