"""The llama.cpp engine (default), on llama-cpp-python's low-level API.

Owns: loading a GGUF, rendering its chat template, and decoding n candidates in
one batch: the prompt is decoded once into sequence 0 and shared with sequences
1..n-1 through the unified KV cache, then every step decodes one token of every
live sequence in a single llama_decode call. Sampling is engines/sampling.py.
It must not: know about processes, sockets or trio (runtime/workers.py does).
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from typing import Any

import numpy as np

from zswarm.core.messages import Candidate, ChatMessage, GenerateRequest, TokenLogprob
from zswarm.engines.base import CandidateCallback, StopCheck, TextStream, TokenCallback
from zswarm.engines.models import ModelFile
from zswarm.engines.sampling import make_rng, sample
from zswarm.errors import InferenceError, ModelNotFound

log = logging.getLogger(__name__)

_FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _silence_llama_logs() -> None:
    import llama_cpp

    @llama_cpp.llama_log_callback  # type: ignore[misc]
    def _quiet(level: int, text: bytes, user_data: Any) -> None:
        return None

    llama_cpp.llama_log_set(_quiet, ctypes.c_void_p(0))
    _silence_llama_logs.keep = _quiet  # type: ignore[attr-defined]


class LlamaCppEngine:
    """A GGUF model loaded with llama.cpp, generating batched candidates."""

    def __init__(
        self,
        model: ModelFile,
        *,
        n_ctx: int = 4096,
        threads: int = 0,
        max_batch_candidates: int = 8,
    ) -> None:
        import llama_cpp
        from llama_cpp import _internals as internals

        if model.format != "gguf":
            raise ModelNotFound(f"model file {model.path}: llama.cpp needs GGUF, not {model.format}")
        _silence_llama_logs()
        self._ll = llama_cpp
        self.model_id = model.model_id
        self.path = model.path
        mparams = llama_cpp.llama_model_default_params()
        try:
            self._model = internals.LlamaModel(
                path_model=str(model.path), params=mparams, verbose=False
            )
        except ValueError as exc:
            raise ModelNotFound(f"model file {model.path}: llama.cpp cannot load it ({exc})") from exc
        self.n_seq_max = max(1, max_batch_candidates)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = min(512, n_ctx)
        cparams.n_ubatch = min(512, n_ctx)
        cparams.n_seq_max = self.n_seq_max
        cparams.kv_unified = True
        n_threads = threads or max(1, (os.cpu_count() or 1))
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        try:
            self._ctx = internals.LlamaContext(model=self._model, params=cparams, verbose=False)
        except ValueError as exc:
            raise InferenceError(f"llama.cpp could not create a context: {exc}") from exc
        self.n_ctx = self._ctx.n_ctx()
        self.n_batch = int(cparams.n_batch)
        self._vocab = self._model.vocab
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._eog = np.array(
            [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)],
            dtype=np.int64,
        )
        self._eog_set = frozenset(int(t) for t in self._eog)
        self._batch = llama_cpp.llama_batch_init(max(self.n_batch, self.n_seq_max), 0, 1)
        meta = self._model.metadata()
        self._template_src = meta.get("tokenizer.chat_template") or _FALLBACK_TEMPLATE
        self._template: Any = None
        self._pieces: dict[int, bytes] = {}
        self._pieces_special: dict[int, bytes] = {}
        self._bos = self._piece(self._model.token_bos())
        self._eos = self._piece(self._model.token_eos())
        self._add_bos = bool(self._model.add_bos_token())

    # --- text <-> tokens --------------------------------------------------------

    def _token_bytes(self, token: int, *, special: bool = False) -> bytes:
        cache = self._pieces_special if special else self._pieces
        piece = cache.get(token)
        if piece is None:
            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                n = self._ll.llama_token_to_piece(self._vocab, token, buf, size, 0, special)
                if n >= 0:
                    piece = buf.raw[:n]
                    break
                size = -n
            cache[token] = piece
        return piece

    def _piece(self, token: int) -> str:
        if token < 0:
            return ""
        return self._token_bytes(token, special=True).decode("utf-8", "replace")

    def render_chat(self, messages: tuple[ChatMessage, ...]) -> str:
        if self._template is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message: str) -> None:
                raise InferenceError(f"chat template: {message}")

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = raise_exception
            self._template = env.from_string(self._template_src)
        return str(
            self._template.render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=True,
                bos_token=self._bos,
                eos_token=self._eos,
            )
        )

    def prompt_tokens(self, request: GenerateRequest) -> list[int]:
        text = request.prompt if request.prompt is not None else self.render_chat(request.messages)
        add_bos = self._add_bos and not (self._bos and text.startswith(self._bos))
        return list(self._model.tokenize(text.encode("utf-8"), add_bos, True))

    # --- decoding ---------------------------------------------------------------

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """Decode (token, pos, seq, want_logits) entries as one batch."""
        b = self._batch
        for i, (tok, pos, seq, want) in enumerate(entries):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = 1 if want else 0
        b.n_tokens = len(entries)
        rc = self._ll.llama_decode(self._ctx.ctx, b)
        if rc != 0:
            raise InferenceError(f"llama_decode failed (code {rc}): context full or bad batch")

    def _logits(self, i: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        ptr = self._ll.llama_get_logits_ith(self._ctx.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def generate(
        self,
        request: GenerateRequest,
        *,
        on_token: TokenCallback | None = None,
        on_candidate: CandidateCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[Candidate]:
        prompt = self.prompt_tokens(request)
        out: list[Candidate] = []
        for first in range(0, request.n, self.n_seq_max):
            count = min(self.n_seq_max, request.n - first)
            out.extend(
                self._generate_batch(
                    request, prompt, first, count, on_token, on_candidate, should_stop
                )
            )
        return out

    def _generate_batch(
        self,
        request: GenerateRequest,
        prompt: list[int],
        first: int,
        count: int,
        on_token: TokenCallback | None,
        on_candidate: CandidateCallback | None,
        should_stop: StopCheck | None,
    ) -> list[Candidate]:
        params = request.params
        t0 = time.perf_counter()
        if len(prompt) + count > self.n_ctx:
            raise InferenceError(
                f"prompt of {len(prompt)} tokens does not fit the context of {self.n_ctx} tokens"
            )
        budget = min(params.max_tokens, (self.n_ctx - len(prompt)) // count)
        mem = self._ctx.memory
        self._ll.llama_memory_clear(mem, True)
        for start in range(0, len(prompt), self.n_batch):
            chunk = prompt[start : start + self.n_batch]
            self._decode(
                [(t, start + k, 0, start + k == len(prompt) - 1) for k, t in enumerate(chunk)]
            )
            if should_stop is not None and should_stop():
                break
        for s in range(1, count):
            self._ll.llama_memory_seq_cp(mem, 0, s, -1, -1)
        first_logits = self._logits(-1).copy()
        banned = self._eog if params.ignore_eos else None
        rngs = [make_rng(params.seed, request.first_index + first + s) for s in range(count)]
        streams = [TextStream(params.stop) for _ in range(count)]
        logprob_sum = [0.0] * count
        n_tokens = [0] * count
        finish: list[str | None] = [None] * count
        results: list[Candidate | None] = [None] * count
        logits_for: dict[int, Any] = dict.fromkeys(range(count), first_logits)
        pos = len(prompt)
        per_token: list[list[TokenLogprob]] | None = (
            [[] for _ in range(count)] if params.logprobs else None)

        def close(s: int, reason: str) -> None:
            finish[s] = reason
            tail = streams[s].finish()
            if tail and on_token is not None:
                on_token(first + s, tail)
            mean = logprob_sum[s] / n_tokens[s] if n_tokens[s] else None
            cand = Candidate(
                text=streams[s].text,
                finish_reason=reason,  # type: ignore[arg-type]
                tokens=n_tokens[s],
                prompt_tokens=len(prompt),
                mean_logprob=mean,
                token_logprobs=None if per_token is None else per_token[s],
                latency_ms=(time.perf_counter() - t0) * 1000.0,
            )
            results[s] = cand
            if on_candidate is not None:
                on_candidate(first + s, cand)

        while True:
            if should_stop is not None and should_stop():
                for s in range(count):
                    if finish[s] is None:
                        close(s, "cancelled")
                break
            entries: list[tuple[int, int, int, bool]] = []
            for s in range(count):
                if finish[s] is not None:
                    continue
                token, logprob = sample(logits_for[s], params, rngs[s], banned=banned)
                if token in self._eog_set and not params.ignore_eos:
                    close(s, "stop")
                    continue
                n_tokens[s] += 1
                logprob_sum[s] += logprob
                piece = self._token_bytes(token)
                if per_token is not None:
                    per_token[s].append(TokenLogprob(piece.decode(errors="replace"), logprob))
                text = streams[s].feed(piece)
                if text and on_token is not None:
                    on_token(first + s, text)
                if streams[s].stopped:
                    close(s, "stop")
                elif n_tokens[s] >= budget:
                    close(s, "length")
                else:
                    entries.append((token, pos + n_tokens[s] - 1, s, True))
            if not entries:
                break
            self._decode(entries)
            logits_for = {seq: self._logits(i) for i, (_, _, seq, _) in enumerate(entries)}
        return [c for c in results if c is not None]

    def score(self, request: GenerateRequest, text: str) -> float | None:
        """Teacher-forced mean log-probability of ``text`` after the prompt (see Engine)."""
        prompt = self.prompt_tokens(request)
        answer = list(self._model.tokenize(text.encode("utf-8"), False, False))
        tokens = prompt + answer
        if not answer or len(tokens) > self.n_ctx:
            return None
        self._ll.llama_memory_clear(self._ctx.memory, True)
        total = 0.0
        first = len(prompt) - 1  # the logits at position p predict the token at p + 1
        for start in range(0, len(tokens) - 1, self.n_batch):
            chunk = tokens[start : min(start + self.n_batch, len(tokens) - 1)]
            self._decode([(t, start + k, 0, start + k >= first) for k, t in enumerate(chunk)])
            for k in range(len(chunk)):
                if start + k < first:
                    continue
                logits = self._logits(k).astype(np.float64)  # by index in the batch
                top = float(logits.max())
                logz = top + float(np.log(np.exp(logits - top).sum()))
                total += float(logits[tokens[start + k + 1]]) - logz
        return max(-1e9, min(0.0, total / len(answer)))

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            self._ll.llama_batch_free(self._batch)
            self._batch = None
        self._ctx.close()
        self._model.close()
