"""The llama.cpp engine (default), on llama-cpp-python's low-level API.

Owns: loading a GGUF, rendering its chat template, the prompt cache and decoding n
candidates in one batch. Sequences 0..cache_slots-1 of the unified KV cache are
slots that keep recent prompts (engines/prefix_cache.py chooses): a prompt goes to
the slot holding its longest prefix and only the rest is decoded, as llama-server's
slots do with ``cache_prompt``. One candidate is generated in the slot itself (so a
conversation's next turn finds its answer cached too); n > 1 copy the prompt's cells
to sequences of their own, then every step decodes one token of every live sequence
in a single llama_decode call. Sampling is engines/sampling.py.
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
from zswarm.engines.prefix_cache import Choice, PrefixCache, Slot
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
        cache_slots: int = 4,
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
        self.cache_slots = max(1, cache_slots)
        self.n_seq_max = self.cache_slots + max(1, max_batch_candidates)
        self.max_batch_candidates = max(1, max_batch_candidates)
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
        #: the prompt cache: sequences 0..cache_slots-1 hold recent prompts (and answers)
        self.cache = PrefixCache(self.cache_slots, self.n_ctx)
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
        for first in range(0, request.n, self.max_batch_candidates):
            count = min(self.max_batch_candidates, request.n - first)
            out.extend(
                self._generate_batch(
                    request, prompt, first, count, on_token, on_candidate, should_stop
                )
            )
        return out

    def _prefill(self, prompt: list[int], extra: int,
                 should_stop: StopCheck | None) -> tuple[Slot, int, bool]:
        """Put ``prompt`` in the slot holding its longest prefix, decoding only the rest.

        Returns (slot, prompt tokens reused, complete): incomplete when told to stop.
        The slot's bookkeeping always says what its sequence holds. If the KV cache
        cannot take the prompt beside what it holds (cells fragmented), it is emptied
        and the prompt decoded once more from the start.
        """
        try:
            return self._prefill_once(prompt, extra, should_stop)
        except InferenceError:
            if not any(slot.tokens for slot in self.cache.slots):
                raise
            self.clear_cache()
            return self._prefill_once(prompt, extra, should_stop)

    def _place(self, tokens: list[int], extra: int, most: int | None = None
               ) -> tuple[Slot, int]:
        """The slot for ``tokens`` (engines/prefix_cache.py chooses), holding exactly the
        reused prefix (at most ``most`` tokens), and that prefix's length; the rest is
        the caller's to decode into it."""
        choice = self.cache.choose(tokens, extra)
        for victim in choice.evict:
            self._ll.llama_memory_seq_rm(self._ctx.memory, victim.seq, -1, -1)
        reuse = self._keep(choice, choice.reuse if most is None else min(choice.reuse, most))
        self.cache.used(choice, tokens[:reuse], reuse=reuse)
        return choice.slot, reuse

    def _keep(self, choice: Choice, reuse: int) -> int:
        """Make the chosen slot hold exactly ``reuse`` tokens of the prefix; return how
        many it holds (0 if a sequence cannot be cut)."""
        mem = self._ctx.memory
        slot = choice.slot
        if choice.source is not None:  # share the prefix's cells, decode nothing
            self._ll.llama_memory_seq_rm(mem, slot.seq, -1, -1)
            if reuse:
                self._ll.llama_memory_seq_cp(mem, choice.source.seq, slot.seq, 0, reuse)
            return reuse
        if not self._ll.llama_memory_seq_rm(mem, slot.seq, reuse, -1):
            self._ll.llama_memory_seq_rm(mem, slot.seq, -1, -1)  # cannot cut: start over
            return 0
        return reuse

    def clear_cache(self) -> None:
        """Forget every cached prompt (the KV cache is emptied)."""
        self._ll.llama_memory_clear(self._ctx.memory, True)
        self.cache.clear()

    def _prefill_once(self, prompt: list[int], extra: int,
                      should_stop: StopCheck | None) -> tuple[Slot, int, bool]:
        mem = self._ctx.memory
        slot, reuse = self._place(prompt, extra)
        for start in range(reuse, len(prompt), self.n_batch):
            chunk = prompt[start : start + self.n_batch]
            try:
                self._decode([(t, start + k, slot.seq, start + k == len(prompt) - 1)
                              for k, t in enumerate(chunk)])
            except BaseException:
                self._ll.llama_memory_seq_rm(mem, slot.seq, -1, -1)
                self.cache.forget(slot)
                raise
            slot.tokens.extend(chunk)
            if should_stop is not None and should_stop() and start + len(chunk) < len(prompt):
                return slot, reuse, False
        return slot, reuse, True

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
        slot, reuse, complete = self._prefill(prompt, count * budget, should_stop)
        # one candidate generates in the slot itself (its answer stays cached for the next
        # turn of the conversation); several copy the prompt's cells to their own sequences
        seqs = [slot.seq] if count == 1 else [self.cache_slots + s for s in range(count)]
        if count > 1:
            for seq in seqs:
                self._ll.llama_memory_seq_cp(mem, slot.seq, seq, -1, -1)
        first_logits = self._logits(-1).copy() if complete else None
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
                cached_tokens=reuse,
                mean_logprob=mean,
                token_logprobs=None if per_token is None else per_token[s],
                latency_ms=(time.perf_counter() - t0) * 1000.0,
            )
            results[s] = cand
            if on_candidate is not None:
                on_candidate(first + s, cand)

        try:
            while True:
                if not complete or (should_stop is not None and should_stop()):
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
                        entries.append((token, pos + n_tokens[s] - 1, seqs[s], True))
                if not entries:
                    break
                self._decode(entries)
                if count == 1:
                    slot.tokens.append(entries[0][0])
                logits_for = {seqs.index(seq): self._logits(i)
                              for i, (_, _, seq, _) in enumerate(entries)}
        except BaseException:
            if count == 1:  # what the slot holds past the prompt is uncertain now
                self._ll.llama_memory_seq_rm(mem, slot.seq, len(prompt), -1)
                del slot.tokens[len(prompt):]
            raise
        finally:
            if count > 1:
                for seq in seqs:
                    self._ll.llama_memory_seq_rm(mem, seq, -1, -1)
        return [c for c in results if c is not None]

    def score(self, request: GenerateRequest, text: str) -> float | None:
        """Teacher-forced mean log-probability of ``text`` after the prompt (see Engine).

        Through the prompt cache: a prompt this worker decoded already (the question it
        also answered) is not decoded again, and the scored answer stays cached.
        """
        prompt = self.prompt_tokens(request)
        answer = list(self._model.tokenize(text.encode("utf-8"), False, False))
        tokens = prompt + answer
        if not answer or len(tokens) > self.n_ctx:
            return None
        first = len(prompt) - 1  # the logits at position p predict the token at p + 1
        mem = self._ctx.memory
        slot, reuse = self._place(tokens, 0, most=first)
        total = 0.0
        try:
            for start in range(reuse, len(tokens) - 1, self.n_batch):
                chunk = tokens[start : min(start + self.n_batch, len(tokens) - 1)]
                self._decode([(t, start + k, slot.seq, start + k >= first)
                              for k, t in enumerate(chunk)])
                slot.tokens.extend(chunk)
                for k in range(len(chunk)):
                    if start + k < first:
                        continue
                    logits = self._logits(k).astype(np.float64)  # by index in the batch
                    top = float(logits.max())
                    logz = top + float(np.log(np.exp(logits - top).sum()))
                    total += float(logits[tokens[start + k + 1]]) - logz
        except BaseException:
            self._ll.llama_memory_seq_rm(mem, slot.seq, -1, -1)
            self.cache.forget(slot)
            raise
        return max(-1e9, min(0.0, total / len(answer)))

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            self._ll.llama_batch_free(self._batch)
            self._batch = None
        self._ctx.close()
        self._model.close()
