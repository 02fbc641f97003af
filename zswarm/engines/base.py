"""The Engine protocol every inference backend implements, and helpers they share.

Engines are synchronous and run inside a worker process (runtime/workers.py).
``generate`` decodes ``request.n`` candidates (in one batch where the backend can),
calls ``on_token(index, text)`` as text is produced, and checks ``should_stop()``
between tokens so cancellation really stops the work. Optional, looked up by the
worker: ``warm(system)`` (run once before the worker says it is ready; ``system``: the
node's default system prompt), ``batcher`` and
``submit`` (continuous batching), ``clear_cache()``.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Protocol

from zswarm.config import ModelConfig
from zswarm.core.messages import Candidate, GenerateRequest

TokenCallback = Callable[[int, str], None]
CandidateCallback = Callable[[int, Candidate], None]
StopCheck = Callable[[], bool]


class Engine(Protocol):
    """A loaded model that can generate candidates."""

    @property
    def model_id(self) -> str:
        """File name + sha256 prefix of the loaded model."""
        ...

    def generate(
        self,
        request: GenerateRequest,
        *,
        on_token: TokenCallback | None = None,
        on_candidate: CandidateCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[Candidate]:
        """Generate ``request.n`` candidates; cancelled ones end with finish_reason "cancelled"."""
        ...

    def score(self, request: GenerateRequest, text: str) -> float | None:
        """The mean log-probability (temperature 1) of ``text`` as this model's answer to
        ``request``, teacher-forced; None if this engine cannot score. The node uses it to
        check a peer's claimed score before it decides anything (runtime/coordinator.py)."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    """A plugin engine backend (entry point group ``zswarm.engines``; engines/loader.py)."""

    def model_id(self, cfg: ModelConfig) -> str:
        """The id of the model ``cfg`` names, without loading it (cheap)."""
        ...

    def load(self, cfg: ModelConfig, threads: int) -> Engine:
        """Load the model (in a worker process)."""
        ...


class TextStream:
    """Incremental bytes -> text with stop strings, for one candidate.

    Holds back text that might be the start of a stop string, so a stop string
    is never streamed and never appears in the final text.
    """

    def __init__(self, stop: tuple[str, ...]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self._stop), default=0)
        self.text = ""
        self._emitted = 0
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """Add bytes; return the newly safe-to-show text (may be empty)."""
        self.text += self._decoder.decode(piece)
        for s in self._stop:
            pos = self.text.find(s)
            if pos != -1:
                self.text = self.text[:pos]
                self.stopped = True
        if self.stopped:
            return self._flush_all()
        safe = len(self.text) - max(0, self._hold - 1)
        if safe <= self._emitted:
            return ""
        out = self.text[self._emitted : safe]
        self._emitted = safe
        return out

    def cut(self, at: int) -> None:
        """End the text at ``at`` and stop (what was shown past it stays shown: for
        answers that are not streamed as they come, such as tool calls)."""
        self.text = self.text[:at]
        self._emitted = min(self._emitted, at)
        self.stopped = True

    def finish(self) -> str:
        """End of generation: return whatever is still held back."""
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)
        return self._flush_all()

    def _flush_all(self) -> str:
        out = self.text[self._emitted :]
        self._emitted = len(self.text)
        return out


def context_message(tokens: int, n_ctx: int) -> str:
    """A prompt over the model's context: a limit (RequestRefused, field "prompt"), said the
    same by every engine, with what to change."""
    return (f"prompt of {tokens} tokens does not fit the model's context of {n_ctx} tokens: "
            "shorten it, or raise [model] n_ctx")
