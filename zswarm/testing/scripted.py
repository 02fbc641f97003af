"""A scripted engine whose answers are known: for end-to-end consensus tests and benches.

The model file is a JSON script::

    {"answers": ["42", "41"], "delay_ms": 0, "model_id": "scripted", "mean_logprob": [-0.1]}

Candidate i of a request (counting from the request's ``first_index``) answers
``answers[i % len(answers)]`` after ``delay_ms`` (cancellable while it waits), with
``mean_logprob[i % len]`` as its score when given. ``"finish_reason"`` may force
"length" or "error"; ``"die_with": "SIGILL"`` makes the worker die by that signal on
its first generation (what a llama.cpp build for the wrong CPU does). Select it with
``[model] backend = "scripted"`` and ``path = "script.json"``; it runs in the normal
worker processes, so everything around the engine is the real node.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import msgspec

from zswarm.config import ModelConfig
from zswarm.core.messages import Candidate, FinishReason, GenerateRequest, TokenLogprob
from zswarm.engines.base import CandidateCallback, StopCheck, TokenCallback
from zswarm.errors import InferenceError


def write_script(path: Path, answers: list[str], *, delay_ms: float = 0.0,
                 model_id: str = "scripted", **extra: Any) -> Path:
    path.write_text(json.dumps({"answers": answers, "delay_ms": delay_ms,
                                "model_id": model_id, **extra}))
    return path


class ScriptedEngine:
    def __init__(self, path: Path) -> None:
        try:
            script = json.loads(Path(path).read_text())
            self.answers = [str(a) for a in script["answers"]]
            self.delay_s = float(script.get("delay_ms", 0)) / 1000
            self._model_id = str(script.get("model_id", "scripted"))
            self.logprobs = [float(x) for x in script.get("mean_logprob", [])]
            self.finish: FinishReason = msgspec.convert(script.get("finish_reason", "stop"),
                                                        FinishReason)
            load_delay_s = float(script.get("load_delay_ms", 0)) / 1000
            self.die_with = signal.Signals[script["die_with"]] if "die_with" in script else None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InferenceError(f"{path}: not a valid engine script: {exc}") from exc
        if not self.answers:
            raise InferenceError(f"{path}: the script has no answers")
        time.sleep(load_delay_s)  # a slow model load, for tests of the loading state

    @property
    def model_id(self) -> str:
        return self._model_id

    def generate(self, request: GenerateRequest, *, on_token: TokenCallback | None = None,
                 on_candidate: CandidateCallback | None = None,
                 should_stop: StopCheck | None = None) -> list[Candidate]:
        if self.die_with is not None:
            os.kill(os.getpid(), self.die_with)
        t0 = time.perf_counter()
        stopped = _wait(self.delay_s, should_stop)
        out: list[Candidate] = []
        for i in range(request.n):
            k = request.first_index + i
            text = "" if stopped else self.answers[k % len(self.answers)]
            if text and on_token is not None:
                on_token(i, text)
            score = self.logprobs[k % len(self.logprobs)] if self.logprobs else -0.5
            per_token = ([TokenLogprob(w, score) for w in text.split()]
                         if request.params.logprobs else None)
            cand = Candidate(
                text=text, finish_reason="cancelled" if stopped else self.finish,
                tokens=len(text.split()),
                prompt_tokens=sum(len(m.content.split()) for m in request.messages),
                mean_logprob=self.logprobs[k % len(self.logprobs)] if self.logprobs else None,
                latency_ms=(time.perf_counter() - t0) * 1000, token_logprobs=per_token)
            out.append(cand)
            if on_candidate is not None:
                on_candidate(i, cand)
        return out

    def score(self, request: GenerateRequest, text: str) -> float | None:
        """The script's score of the first candidate that answers ``text``; an answer the
        script never gives scores -5 (this model would not have said it)."""
        for k, answer in enumerate(self.answers):
            if answer == text:
                return self.logprobs[k % len(self.logprobs)] if self.logprobs else -0.5
        return -5.0

    def close(self) -> None:
        pass


def _wait(seconds: float, should_stop: StopCheck | None) -> bool:
    """Sleep up to ``seconds``; True if told to stop first."""
    end = time.monotonic() + seconds
    while True:
        if should_stop is not None and should_stop():
            return True
        left = end - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, 0.02))  # cancellation is checked every 20 ms


# --- the ``scripted`` backend (entry point ``zswarm.engines``: this module) ---------------


def model_id(cfg: ModelConfig) -> str:
    """The script's ``model_id`` (``model.path`` is the script)."""
    path = Path(cfg.path).expanduser()
    try:
        return str(json.loads(path.read_text()).get("model_id", "scripted"))
    except (OSError, ValueError, AttributeError) as exc:
        raise InferenceError(f"{path}: not a valid engine script: {exc}") from exc


def load(cfg: ModelConfig, threads: int) -> ScriptedEngine:
    return ScriptedEngine(Path(cfg.path).expanduser())
