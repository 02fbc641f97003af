"""Constrained decoding with llguidance: a request's Structure -> a grammar -> a token mask.

Owns: the grammar of a structure (JSON, a JSON schema, tool calls in the
``<tool_call>`` form of core/structured.py, or text-or-calls for tool_choice "auto"),
the compiled matchers (one per grammar, cached; each candidate gets a copy), and each
step's mask as a boolean array over the vocabulary. llguidance was chosen because it
installs alone (no torch), builds its tokenizer from the GGUF's own vocabulary through
llama.cpp, and computes a mask in ~0.16 ms here (ENVIRONMENT.md); XGrammar pulls torch.
JSON is generated with fixed separators (", " and ": ") and no free whitespace: a small
model left free to emit whitespace can fill max_tokens with it.
``check`` compiles a structure without a vocabulary, so a door can refuse what the
library cannot enforce (an unsupported schema keyword, a grammar over the limits)
before any worker sees it. It must not: know about batches or processes.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any

import numpy as np
import numpy.typing as npt

from zswarm.core.messages import Structure
from zswarm.core.structured import CALL_CLOSE, CALL_OPEN, active_tools, call_schema
from zswarm.errors import RequestRefused

#: compiled grammars kept per engine
GRAMMAR_CACHE = 32
_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _limits() -> Any:
    """What a grammar may cost to build and to step (llguidance's own limits, lowered)."""
    import llguidance

    return llguidance.LLParserLimits(max_grammar_size=200_000, initial_lexer_fuel=2_000_000,
                                     step_lexer_fuel=500_000, max_lexer_states=100_000,
                                     verbose_errors=False)


_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[(.*?)\]")


def _reason(message: str) -> str:
    """llguidance's error in a sentence: the keywords it cannot enforce named, the
    grammar it quotes left out."""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    first = re.sub(r"^at \d+\(\d+\): ", "", first)
    first = first.removeprefix("failed to compile JSON schema: ")
    keys = _UNIMPLEMENTED.search(first)
    if keys:
        names = ", ".join(k.strip().strip('"') for k in keys.group(1).split(","))
        return f"uses keywords this server cannot enforce: {names}"
    return f"cannot be enforced: {first[:300]}"


def _json(schema: dict[str, Any]) -> str:
    """A schema as an inline %json block of a lark grammar, in the fixed JSON style."""
    return "%json " + json.dumps({**schema, "x-guidance": _JSON_STYLE})


def grammar_of(structure: Structure) -> str:
    """The llguidance grammar (lark) of a structure; field of a refusal: the structure's."""
    from llguidance import LLMatcher

    if structure.format == "schema":
        value = _json(json.loads(structure.schema))
    elif structure.format == "json":
        value = _json({"type": "object"})
    else:
        value = "TEXT"
    rules = ["TEXT: /[^<\\s][\\s\\S]*/"]  # free text: anything not opening with a call
    tools = active_tools(structure)
    if not tools:
        return LLMatcher.grammar_from_lark("\n".join([f"start: {value}", *rules]))
    # a newline may end the last call (where a model's training put one before its end)
    calls = "call (\"\\n\" call)* \"\\n\"?" if structure.parallel_tool_calls \
        else "call \"\\n\"?"
    start = calls if structure.tool_choice not in ("none", "auto") else f"{calls} | {value}"
    rules += [f"call: {json.dumps(CALL_OPEN + chr(10))} {_json(call_schema(structure))} "
              f"{json.dumps(chr(10) + CALL_CLOSE)}"]
    return LLMatcher.grammar_from_lark("\n".join([f"start: {start}", *rules]))


def _field(structure: Structure) -> str:
    """The request's field a refusal names (OpenAI's path)."""
    if active_tools(structure):
        return "tools"
    return "response_format.json_schema.schema" if structure.format == "schema" \
        else "response_format"


def check(structure: Structure) -> None:
    """Compile the structure's grammar without a vocabulary: a RequestRefused with
    llguidance's reason (an unsupported keyword, a limit) if it cannot be enforced."""
    from llguidance import LLMatcher

    try:
        grammar = grammar_of(structure)
    except ValueError as exc:
        raise RequestRefused(f"{_field(structure)}: {exc}", field=_field(structure)) from None
    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar, None,
                                                                limits=_limits())
    if failed:
        raise RequestRefused(f"{_field(structure)} {_reason(messages[0])}",
                             field=_field(structure))


class Matcher:
    """One candidate's constraint: the mask of the next token, and the token taken."""

    def __init__(self, inner: Any, n_vocab: int) -> None:
        self._inner = inner
        self._n_vocab = n_vocab
        self._bits = np.zeros((n_vocab + 31) // 32, dtype=np.int32)

    def copy(self) -> Matcher:
        return Matcher(self._inner.deep_copy(), self._n_vocab)

    def mask(self) -> npt.NDArray[np.bool_] | None:
        """Which tokens may come next; None if the matcher failed (no token may)."""
        if self._inner.is_error():
            return None
        self._inner.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self._n_vocab]
        return allowed.astype(bool)

    def consume(self, token: int) -> bool:
        """Take the sampled token; False if the grammar did not allow it."""
        return bool(self._inner.consume_token(token))

    @property
    def error(self) -> str:
        return str(self._inner.get_error())


class Grammars:
    """The compiled grammars of one engine (its tokenizer is built on first use)."""

    def __init__(self, tokenizer: Any, n_vocab: int) -> None:
        #: a function building the llguidance tokenizer (~0.3 s: only when first needed)
        self._make_tokenizer = tokenizer
        self._tokenizer: Any = None
        self._n_vocab = n_vocab
        self._compiled: OrderedDict[str, Matcher] = OrderedDict()

    def matcher(self, structure: Structure) -> Matcher:
        """A fresh matcher for one candidate (compiled once per grammar, then copied);
        RequestRefused if the grammar cannot be enforced."""
        from llguidance import LLMatcher

        grammar = grammar_of(structure)
        compiled = self._compiled.get(grammar)
        if compiled is None:
            if self._tokenizer is None:
                self._tokenizer = self._make_tokenizer()
            inner = LLMatcher(self._tokenizer, grammar, log_level=0, limits=_limits())
            if inner.is_error():
                raise RequestRefused(f"{_field(structure)} {_reason(str(inner.get_error()))}",
                                     field=_field(structure))
            compiled = Matcher(inner, self._n_vocab)
            self._compiled[grammar] = compiled
            while len(self._compiled) > GRAMMAR_CACHE:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(grammar)
        return compiled.copy()
