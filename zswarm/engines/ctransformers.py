"""The ctransformers engine (optional extra): legacy GGML models (gpt2, llama, ...).

Owns: checking a GGML file against its own header before handing it to native
code (damaged files can crash the process; workers add RLIMIT_AS), tokenizing
with a buffer sized by bytes (ctransformers' own sizes it by characters and
overflows on non-ASCII text), and sequential generation of n candidates with
engines/sampling.py on the logits, so cancellation, streaming and log-probs
work as in the llama.cpp engine. ctransformers 0.2.27 cannot load current GGUF.
"""

from __future__ import annotations

import ctypes
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np

from zswarm.core.messages import Candidate, ChatMessage, FinishReason, GenerateRequest, TokenLogprob
from zswarm.core.structured import generic_messages
from zswarm.engines.base import CandidateCallback, StopCheck, TextStream, TokenCallback, context_message
from zswarm.engines.models import ModelFile
from zswarm.engines.sampling import make_rng, sample, top_logprobs
from zswarm.errors import InferenceError, ModelNotFound, RequestRefused

# bytes per block and elements per block of the legacy ggml tensor types
_TYPE_SIZES = {0: (4, 1), 1: (2, 1), 2: (18, 32), 3: (20, 32), 6: (22, 32), 7: (24, 32),
               8: (34, 32)}


def check_ggml_file(path: Path) -> None:
    """Walk an unversioned GGML file's header, vocab and tensor table; refuse what does not fit."""
    data = path.read_bytes()
    size = len(data)

    def bad(why: str) -> ModelNotFound:
        return ModelNotFound(f"model file {path}: damaged GGML file ({why})")

    if size < 32 or struct.unpack_from("<I", data)[0] != 0x67676D6C:
        raise bad("not an unversioned GGML file")
    n_vocab = struct.unpack_from("<i", data, 4)[0]
    off = 28
    if struct.unpack_from("<i", data, off)[0] != n_vocab or not 0 < n_vocab < 10_000_000:
        raise bad("vocabulary size does not match the header")
    off += 4
    for _ in range(n_vocab):
        if off + 4 > size:
            raise bad("vocabulary runs past the end of the file")
        off += 4 + struct.unpack_from("<I", data, off)[0]
    tensors = 0
    while off < size:
        if off + 12 > size:
            raise bad("truncated tensor header")
        n_dims, name_len, ttype = struct.unpack_from("<3i", data, off)
        if not 1 <= n_dims <= 4 or not 0 < name_len < 512 or ttype not in _TYPE_SIZES:
            raise bad(f"bad tensor header at byte {off}")
        ne = struct.unpack_from(f"<{n_dims}i", data, off + 12)
        off += 12 + 4 * n_dims + name_len
        bytes_per_block, block = _TYPE_SIZES[ttype]
        count = int(np.prod(ne))
        if count <= 0 or count % block:
            raise bad(f"bad tensor shape {ne}")
        off += count // block * bytes_per_block
        if off > size:
            raise bad("tensor data runs past the end of the file")
        tensors += 1
    if tensors == 0:
        raise bad("no tensors")


class CTransformersEngine:
    def __init__(self, model: ModelFile, *, model_type: str = "gpt2", n_ctx: int = 0) -> None:
        try:
            from ctransformers import LLM, Config
        except ImportError as exc:
            raise InferenceError("backend 'ctransformers' needs: pip install 'zswarm[ctransformers]'"
                                 ) from exc
        if model.format == "ggml":
            check_ggml_file(model.path)
        self.model_id = model.model_id
        try:
            self._llm: Any = LLM(str(model.path), model_type,
                                 config=Config(threads=1, context_length=n_ctx or -1), lib="basic")
        except (RuntimeError, ValueError) as exc:
            raise ModelNotFound(f"model file {model.path}: ctransformers cannot load it ({exc})"
                                ) from exc
        self.n_vocab = int(self._llm.vocab_size)
        self.n_ctx = int(self._llm.context_length)
        self._eos = int(self._llm.eos_token_id)

    def tokenize(self, text: str) -> list[int]:
        raw = text.encode("utf-8")
        buf = (ctypes.c_int * (len(raw) + 2))()
        n = self._llm.ctransformers_llm_tokenize(raw, False, buf)
        return list(buf[:n])

    @staticmethod
    def render(messages: tuple[ChatMessage, ...]) -> str:
        """A plain transcript (these legacy models have no chat template); tool calls and
        results in the history in core/structured.py's generic form."""
        chat = generic_messages(messages, None)
        return "".join(f"{m['role']}: {m['content']}\n" for m in chat) + "assistant:"

    def reset(self) -> None:
        """Forget the context (LLM.reset() is deprecated and warns)."""
        self._llm.ctransformers_llm_reset()
        self._llm._context.clear()

    def _logits(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        ptr = self._llm.ctransformers_llm_logits_data()
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def generate(
        self,
        request: GenerateRequest,
        *,
        on_token: TokenCallback | None = None,
        on_candidate: CandidateCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[Candidate]:
        if request.structure is not None:  # no grammar library drives this backend
            field = "tools" if request.structure.tools else "response_format"
            raise RequestRefused(f"{field}: the ctransformers backend cannot constrain its "
                                 "answers (structured output and tools need the llamacpp "
                                 "backend)", field=field)
        text = request.prompt if request.prompt is not None else self.render(request.messages)
        prompt = self.tokenize(text)
        if not prompt:
            raise InferenceError("the prompt is empty after tokenization")
        if len(prompt) >= self.n_ctx:
            raise RequestRefused(context_message(len(prompt), self.n_ctx), field="prompt")
        budget = min(request.params.max_tokens, self.n_ctx - len(prompt))
        out: list[Candidate] = []
        for i in range(request.n):
            cand = self._candidate(request, i, prompt, budget, on_token, should_stop)
            out.append(cand)
            if on_candidate is not None:
                on_candidate(i, cand)
            if cand.finish_reason == "cancelled":
                break
        return out

    def _candidate(self, request: GenerateRequest, i: int, prompt: list[int], budget: int,
                   on_token: TokenCallback | None, should_stop: StopCheck | None
                   ) -> Candidate:
        """Candidate ``i``: the prompt evaluated afresh, then one token at a time."""
        t0 = time.perf_counter()
        params = request.params
        banned = np.array([self._eos]) if params.ignore_eos else None
        rng = make_rng(params.seed, request.first_index + i)
        stream = TextStream(params.stop)
        self.reset()
        self._llm.eval(prompt)
        reason: FinishReason = "length"
        count, lp_sum = 0, 0.0
        per_token: list[TokenLogprob] | None = [] if params.logprobs else None
        counts: dict[int, int] = {}
        while count < budget:
            if should_stop is not None and should_stop():
                reason = "cancelled"
                break
            logits = self._logits()
            token, lp = sample(logits, params, rng, banned=banned, counts=counts)
            if token == self._eos:
                reason = "stop"
                break
            count += 1
            lp_sum += lp
            counts[token] = counts.get(token, 0) + 1
            raw = self._llm.ctransformers_llm_detokenize(token)
            if per_token is not None:
                top = tuple((self._llm.ctransformers_llm_detokenize(t).decode(errors="replace"), x)
                            for t, x in top_logprobs(logits, params.top_logprobs))
                per_token.append(TokenLogprob(raw.decode(errors="replace"), lp, top))
            piece = stream.feed(raw)
            if piece and on_token is not None:
                on_token(i, piece)
            if stream.stopped:
                reason = "stop"
                break
            if count < budget:
                self._llm.eval([token])
        tail = stream.finish()
        if tail and on_token is not None:
            on_token(i, tail)
        return Candidate(text=stream.text, finish_reason=reason, tokens=count,
                         prompt_tokens=len(prompt), mean_logprob=lp_sum / count if count else None,
                         token_logprobs=per_token, latency_ms=(time.perf_counter() - t0) * 1000)

    def score(self, request: GenerateRequest, text: str) -> float | None:
        """Not built for this legacy backend: a peer's score cannot be checked with it, so
        the asker drops such claims (runtime/verify.py)."""
        return None

    def close(self) -> None:
        self._llm = None
