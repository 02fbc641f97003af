"""The llama.cpp engine (default), on llama-cpp-python's low-level API.

Owns: loading a GGUF, rendering its chat template, tokens, and the KV cache's
operations. Sequences 0..cache_slots-1 of the unified KV cache are slots that keep
recent prompts (engines/prefix_cache.py chooses): a prompt goes to the slot holding
its longest prefix and only the rest is decoded, as llama-server's slots do with
``cache_prompt``. Requests run through engines/batching.py (continuous batching: one
per slot at once, every step one llama_decode call for all of them); one candidate is
generated in the slot itself (so a conversation's next turn finds its answer cached
too), n > 1 copy the prompt's cells to sequences of their own. Sampling is
engines/sampling.py.
It must not: know about processes, sockets or trio (runtime/workers.py does).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
from typing import Any

import numpy as np

from zswarm.core.messages import (
    Candidate,
    ChatMessage,
    GenerateRequest,
    SamplingParams,
    Structure,
)
from zswarm.core.structured import active_tools, generic_messages
from zswarm.engines.base import CandidateCallback, StopCheck, TokenCallback
from zswarm.engines.batching import Batcher, DoneCallback
from zswarm.engines.grammar import Grammars, Matcher
from zswarm.engines.models import ModelFile
from zswarm.engines.prefix_cache import Choice, PrefixCache, Slot
from zswarm.errors import InferenceError, ModelNotFound, ZswarmError

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


def _native(m: ChatMessage) -> dict[str, Any]:
    """A message as templates that render tools read it (OpenAI's shape)."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function", "function": {
            "name": c.name, "arguments": _json_or_text(c.arguments)}} for c in m.tool_calls]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


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
        flash_attn: str = "auto",
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
        cparams.flash_attn_type = {"auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
                                   "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                                   "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED}[flash_attn]
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
        #: the running requests (continuous batching): one per slot at most
        self.batcher = Batcher(self, max_jobs=self.cache_slots)
        self.n_batch = int(cparams.n_batch)
        self._vocab = self._model.vocab
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.eog = np.array(
            [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)],
            dtype=np.int64,
        )
        self.eog_set = frozenset(int(t) for t in self.eog)
        self._batch = llama_cpp.llama_batch_init(max(self.n_batch, self.n_seq_max), 0, 1)
        meta = self._model.metadata()
        self._template_src = meta.get("tokenizer.chat_template") or _FALLBACK_TEMPLATE
        self._template: Any = None
        self._pieces: dict[int, bytes] = {}
        self._pieces_special: dict[int, bytes] = {}
        self._bos = self._piece(self._model.token_bos())
        self._eos = self._piece(self._model.token_eos())
        self._add_bos = bool(self._model.add_bos_token())
        #: structured answers' grammars, over a tokenizer built from this model's vocabulary
        self.grammars = Grammars(self._grammar_tokenizer, self.n_vocab)

    def _grammar_tokenizer(self) -> Any:
        """llguidance's tokenizer over this model's vocabulary: each token's bytes, a
        control token marked by a leading 0xFF (so a grammar's text never matches it),
        and llama.cpp's own tokenize function for llguidance to call."""
        from llguidance import LLTokenizer

        ll = self._ll
        control = ll.LLAMA_TOKEN_ATTR_CONTROL
        pieces = []
        for token in range(self.n_vocab):
            piece = self.token_bytes(token, special=True)
            attr = ll.llama_vocab_get_attr(self._vocab, token)
            looks_special = piece.startswith(b"<") and piece.endswith(b">")
            if attr & control or (attr & ll.LLAMA_TOKEN_ATTR_USER_DEFINED and looks_special):
                piece = b"\xff" + piece
            pieces.append(piece)
        tokenize = ctypes.cast(ll.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
        # from_llamacpp is llguidance's own constructor for llama.cpp (not in its stubs)
        return LLTokenizer.from_llamacpp(  # type: ignore[attr-defined]
            tokens=pieces, vocab_ptr=self._vocab, tokenize_fptr=tokenize,
            eos_token=ll.llama_vocab_eos(self._vocab))

    def matcher(self, structure: Structure) -> Matcher:
        return self.grammars.matcher(structure)

    # --- text <-> tokens --------------------------------------------------------

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
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
        return self.token_bytes(token, special=True).decode("utf-8", "replace")

    @property
    def template_has_tools(self) -> bool:
        """Does the GGUF's chat template render tools itself (else the generic form)?"""
        return "tools" in self._template_src

    def render_chat(self, messages: tuple[ChatMessage, ...],
                    structure: Structure | None = None) -> str:
        """The prompt of a chat: the GGUF's template (jinja, sandboxed), given the tools
        when it renders them, else the generic form of core/structured.py."""
        tools = active_tools(structure) if structure is not None else ()
        extra: dict[str, Any] = {}
        if self.template_has_tools:
            chat: list[dict[str, Any]] = [_native(m) for m in messages]
            if tools:
                extra["tools"] = [{"type": "function", "function": {
                    "name": t.name, "description": t.description,
                    "parameters": json.loads(t.parameters or "{}")}} for t in tools]
        else:
            chat = list(generic_messages(messages, structure))
        if self._template is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message: str) -> None:
                raise InferenceError(f"chat template: {message}")

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = raise_exception
            self._template = env.from_string(self._template_src)
        return str(
            self._template.render(
                messages=chat,
                add_generation_prompt=True,
                bos_token=self._bos,
                eos_token=self._eos,
                **extra,
            )
        )

    def prompt_tokens(self, request: GenerateRequest) -> list[int]:
        text = request.prompt if request.prompt is not None else \
            self.render_chat(request.messages, request.structure)
        add_bos = self._add_bos and not (self._bos and text.startswith(self._bos))
        return list(self._model.tokenize(text.encode("utf-8"), add_bos, True))

    # --- decoding ---------------------------------------------------------------

    def decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
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

    def logits(self, i: int) -> np.ndarray[Any, np.dtype[np.float32]]:
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
        """One request on its own (the Engine protocol): submitted to the batcher and
        stepped until it ends. The worker process steps the batcher itself, with many."""
        results: dict[int, Candidate] = {}
        ended: list[ZswarmError | None] = []

        def on_cand(index: int, cand: Candidate) -> None:
            results[index] = cand
            if on_candidate is not None:
                on_candidate(index, cand)

        self.submit("generate", request, on_token=on_token, on_candidate=on_cand,
                    on_done=ended.append)
        while not ended:
            if should_stop is not None and should_stop():
                self.batcher.cancel("generate")
            self.batcher.step()
        if ended[0] is not None:
            raise ended[0]
        return [results[i] for i in sorted(results)]

    def submit(self, key: str, request: GenerateRequest, *, on_token: TokenCallback | None,
               on_candidate: CandidateCallback | None, on_done: DoneCallback) -> None:
        """Queue a request for the batcher (engines/batching.py); nothing runs until
        ``batcher.step()``. A prompt that cannot be rendered ends at once."""
        try:
            prompt = self.prompt_tokens(request)
        except ZswarmError as exc:
            on_done(exc)
            return
        self.batcher.submit(key, request, prompt, on_token=on_token,
                            on_candidate=on_candidate, on_done=on_done)

    # --- the KV cache, as engines/batching.Kv -------------------------------------

    @property
    def slots(self) -> list[Slot]:
        return self.cache.slots

    def place(self, tokens: list[int], extra: int, *, pinned: frozenset[int] = frozenset(),
              reserved: int = 0, most: int | None = None) -> tuple[Slot, int] | None:
        """Put ``tokens`` in a slot (engines/prefix_cache.py chooses), holding exactly the
        reused prefix (at most ``most`` tokens); the slot and that prefix's length, the
        rest being the caller's to decode. None: no room beside the ``pinned`` slots."""
        choice = self.cache.choose(tokens, extra, pinned=pinned, reserved=reserved)
        if choice is None:
            return None
        for victim in choice.evict:
            self.drop_seq(victim.seq)
        reuse = self._keep(choice, choice.reuse if most is None else min(choice.reuse, most))
        self.cache.used(choice, tokens[:reuse], reuse=reuse)
        return choice.slot, reuse

    def _keep(self, choice: Choice, reuse: int) -> int:
        """Make the chosen slot hold exactly ``reuse`` tokens of the prefix; return how
        many it holds (0 if a sequence cannot be cut)."""
        mem = self._ctx.memory
        slot = choice.slot
        if choice.source is not None:  # share the prefix's cells, decode nothing
            self.drop_seq(slot.seq)
            if reuse:
                self._ll.llama_memory_seq_cp(mem, choice.source.seq, slot.seq, 0, reuse)
            return reuse
        if not self._ll.llama_memory_seq_rm(mem, slot.seq, reuse, -1):
            self.drop_seq(slot.seq)  # cannot cut: start over
            return 0
        return reuse

    def copy_seq(self, src: int, dst: int) -> None:
        self._ll.llama_memory_seq_cp(self._ctx.memory, src, dst, -1, -1)

    def drop_seq(self, seq: int, start: int = 0) -> None:
        self._ll.llama_memory_seq_rm(self._ctx.memory, seq, start, -1)

    def forget(self, slot: Slot) -> None:
        self.cache.forget(slot)

    def clear_cache(self) -> None:
        """Forget every cached prompt (the KV cache is emptied); only between requests."""
        self._ll.llama_memory_clear(self._ctx.memory, True)
        self.cache.clear()

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
        placed = self.place(tokens, 0, pinned=self.batcher.pinned,
                            reserved=sum(job.reserved for job in self.batcher.jobs), most=first)
        if placed is None:  # every slot is busy: not scored now (the caller treats it so)
            return None
        slot, reuse = placed
        total = 0.0
        try:
            for start in range(reuse, len(tokens) - 1, self.n_batch):
                chunk = tokens[start : min(start + self.n_batch, len(tokens) - 1)]
                self.decode([(t, start + k, slot.seq, start + k >= first)
                              for k, t in enumerate(chunk)])
                slot.tokens.extend(chunk)
                for k in range(len(chunk)):
                    if start + k < first:
                        continue
                    logits = self.logits(k).astype(np.float64)  # by index in the batch
                    top = float(logits.max())
                    logz = top + float(np.log(np.exp(logits - top).sum()))
                    total += float(logits[tokens[start + k + 1]]) - logz
        except BaseException:
            self.drop_seq(slot.seq)
            self.cache.forget(slot)
            raise
        return max(-1e9, min(0.0, total / len(answer)))

    def warm(self, system: str = "") -> None:
        """Answer one short chat message before the worker says it is ready.

        Its prompt stays in the prompt cache, and with it the chat template's opening
        and ``system`` (the node's default system prompt) that most chat requests share:
        the first request of a new worker - or of a model just loaded - then decodes
        only its own part, as later ones do (about 70 ms less for the default model
        here). It also pays once for what a process's first decode sets up.
        """
        said = (ChatMessage(role="system", content=system),) if system else ()
        hello = GenerateRequest(messages=(*said, ChatMessage(role="user", content="Hello.")),
                                params=SamplingParams(temperature=0.0, max_tokens=1))
        try:
            self.generate(hello)
        except ZswarmError as exc:  # a context too small for it: requests will say so
            log.warning("warm-up answer failed: %s", exc)

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            self._ll.llama_batch_free(self._batch)
            self._batch = None
        self._ctx.close()
        self._model.close()
