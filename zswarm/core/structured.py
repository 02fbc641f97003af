"""Structured answers: what a JSON or tool-call answer is, its key for a vote, and its check.

Owns, for a request's ``Structure`` (core/messages.py):
- ``check``: the request's own sense (a schema that parses and is a JSON schema, not too
  big or deep; a tool_choice naming a defined tool) as a RequestRefused naming the field;
- ``Shape``: reading a candidate's text back - the value of a JSON answer, the calls of a
  tool-call answer (``parse_calls``) - and its answer key, the canonical value (JSON
  parsed, keys sorted, integral numbers as integers, no whitespace), so that every
  strategy votes on values; a text that does not parse or validate has no key (it is not
  a valid candidate: a peer's broken JSON is dropped like any failed claim);
- the calling convention: a call is ``<tool_call>`` + ``{"name": ..., "arguments": {...}}``
  + ``</tool_call>`` (the form of Hermes, Qwen and SmolLM templates), ``call_schema``
  gives the JSON schema of one call's object, and ``generic_messages`` renders tools,
  calls and tool results as plain chat messages for a template that has no tools section.
Pure: json and jsonschema only; the engines compile the grammar (engines/grammar.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema

from zswarm.core.answers import answer_key
from zswarm.core.messages import ChatMessage, Structure, ToolSpec
from zswarm.errors import RequestRefused

#: how deep a schema may nest (objects and arrays in its JSON)
MAX_SCHEMA_DEPTH = 24
#: the schemas and descriptions of one request, in all (each is also capped on the wire)
MAX_STRUCTURE_CHARS = 64_000
#: the tags around one call in the answer's text
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_CALL_RE = re.compile(re.escape(CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(CALL_CLOSE), re.DOTALL)
TOOL_CHOICES = ("none", "auto", "required")


def _depth(value: Any, most: int) -> int:
    """The nesting depth of a JSON value, counted up to ``most + 1`` (no deeper walk)."""
    stack, deepest = [(value, 1)], 0
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > most:
            return deepest
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def load_schema(text: str, field: str) -> dict[str, Any]:
    """A schema's JSON text -> the schema; RequestRefused naming ``field`` if it is not
    JSON, not an object, too deep, or not a valid JSON schema."""
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise RequestRefused(f"{field} is not JSON: {exc}", field=field) from None
    if not isinstance(schema, dict):
        raise RequestRefused(f"{field} must be a JSON object (a JSON schema)", field=field)
    if _depth(schema, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
        raise RequestRefused(f"{field} nests deeper than {MAX_SCHEMA_DEPTH} levels",
                             field=field)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise RequestRefused(f"{field} is not a valid JSON schema: {exc.message}",
                             field=field) from None
    return schema


@lru_cache(maxsize=32)
def check(structure: Structure) -> None:
    """Refuse a structure that makes no sense, naming the field (OpenAI's names). Cached
    (what passed): the HTTP door checks a request, and admission checks it again."""
    size = len(structure.schema) + sum(len(t.parameters) + len(t.description)
                                       for t in structure.tools)
    if size > MAX_STRUCTURE_CHARS:
        raise RequestRefused(f"response_format and tools hold {size} characters of schemas "
                             f"and descriptions; at most {MAX_STRUCTURE_CHARS}",
                             field="tools" if structure.tools else "response_format")
    if structure.format == "schema":
        load_schema(structure.schema, "response_format.json_schema.schema")
    names = [t.name for t in structure.tools]
    if len(set(names)) != len(names):
        raise RequestRefused("tools: two tools have one name", field="tools")
    for i, tool in enumerate(structure.tools):
        load_schema(tool.parameters, f"tools[{i}].function.parameters")
    choice = structure.tool_choice
    if choice not in TOOL_CHOICES and choice not in names:
        raise RequestRefused(f"tool_choice names function {choice!r}, which is not in tools",
                             field="tool_choice")
    if choice == "required" and not names:
        raise RequestRefused("tool_choice 'required' needs tools", field="tool_choice")


def canonical(value: Any) -> str:
    """One text per JSON value: keys sorted, no whitespace, integral numbers as integers."""
    return json.dumps(_normal(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _normal(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


@lru_cache(maxsize=128)
def _validator(schema_text: str) -> Any:
    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _valid(value: Any, schema_text: str) -> bool:
    try:
        return bool(_validator(schema_text).is_valid(value))
    except (ValueError, RecursionError, jsonschema.exceptions.ReferenceError):
        return False  # a schema the validator cannot follow: nothing passes


def _loads(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except (ValueError, RecursionError):
        return False, None


@dataclass(frozen=True)
class Call:
    """One parsed call: the tool's name and its arguments as canonical JSON."""

    name: str
    arguments: str


def active_tools(structure: Structure) -> tuple[ToolSpec, ...]:
    """The tools the answer may call (none under "none"; one under a named choice)."""
    choice = structure.tool_choice
    if choice == "none":
        return ()
    if choice in TOOL_CHOICES:
        return structure.tools
    return tuple(t for t in structure.tools if t.name == choice)


def constrains(structure: Structure) -> bool:
    """Does decoding need a grammar (JSON, or calls allowed)? Free text does not."""
    return structure.format != "text" or bool(active_tools(structure))


def call_schema(structure: Structure) -> dict[str, Any]:
    """The JSON schema of one call's object: the name of an active tool and its arguments."""
    options = [{"type": "object",
                "properties": {"name": {"const": t.name},
                               "arguments": json.loads(t.parameters or "{}") or {"type": "object"}},
                "required": ["name", "arguments"], "additionalProperties": False}
               for t in active_tools(structure)]
    return options[0] if len(options) == 1 else {"anyOf": options}


def parse_calls(structure: Structure, text: str) -> list[Call] | None:
    """The calls in ``text`` (each a listed, active tool with arguments valid under its
    schema); None if the text holds no call or any call is broken."""
    if CALL_OPEN not in text:
        return None
    tools = {t.name: t for t in active_tools(structure)}
    bodies = _CALL_RE.findall(text)
    rest = _CALL_RE.sub("", text).strip()
    if not bodies or rest or (len(bodies) > 1 and not structure.parallel_tool_calls):
        return None
    calls = []
    for body in bodies:
        ok, obj = _loads(body)
        if not ok or not isinstance(obj, dict) or set(obj) != {"name", "arguments"}:
            return None
        tool = tools.get(obj["name"]) if isinstance(obj["name"], str) else None
        if tool is None or not isinstance(obj["arguments"], dict) \
                or not _valid(obj["arguments"], tool.parameters or "{}"):
            return None
        calls.append(Call(tool.name, canonical(obj["arguments"])))
    return calls


def repeated_call(text: str) -> int | None:
    """Where a text of calls that ends by repeating an earlier call verbatim should end
    (a small model, free to call again, can loop on one call until max_tokens); None if
    its last call is new."""
    bodies = list(_CALL_RE.finditer(text))
    if len(bodies) < 2 or text[bodies[-1].end():].strip():
        return None
    last = bodies[-1].group(1)
    if any(b.group(1) == last for b in bodies[:-1]):
        return bodies[-2].end()
    return None


@dataclass(frozen=True)
class Shape:
    """How the candidates of one structured request are read, checked and keyed."""

    structure: Structure

    def key(self, text: str, question: str = "") -> str | None:
        """The candidate's answer key: its calls, or its JSON value, or (free text allowed)
        the free-text key; None: it is not a valid answer of this shape. Cached: a round
        asks for the same candidate's key after every arrival (validity, groups, report)."""
        return _shape_key(self.structure, text, question)


#: candidates of a round or two (texts are at most MAX_CANDIDATE_CHARS each)
@lru_cache(maxsize=128)
def _shape_key(s: Structure, text: str, question: str) -> str | None:
    """Shape.key, parsed and validated once per (structure, text, question)."""
    if active_tools(s):
        calls = parse_calls(s, text)
        if calls is not None:
            return "call:" + canonical([[c.name, json.loads(c.arguments)] for c in calls])
        if s.tool_choice not in ("none", "auto") or CALL_OPEN in text:  # calls only
            return None
    if s.format == "text":
        return answer_key(text, question)
    ok, value = _loads(text)
    if not ok or (s.format == "json" and not isinstance(value, dict)):
        return None
    if s.format == "schema" and not _valid(value, s.schema):
        return None
    return "json:" + canonical(value)


def tools_prompt(tools: tuple[ToolSpec, ...]) -> str:
    """The generic form's description of the tools (for a template without a tools section)."""
    specs = "\n".join(json.dumps({"type": "function", "function": {
        "name": t.name, "description": t.description,
        "parameters": json.loads(t.parameters or "{}")}}, ensure_ascii=False) for t in tools)
    return ("You can call functions. Their signatures, one JSON object per line, are "
            f"inside <tools></tools>:\n<tools>\n{specs}\n</tools>\n"
            "To call a function, answer with its name and arguments as a JSON object "
            f"inside {CALL_OPEN}{CALL_CLOSE} tags, one per call:\n"
            f'{CALL_OPEN}\n{{"name": "function_name", "arguments": {{"arg": "value"}}}}\n'
            f"{CALL_CLOSE}")


def call_text(name: str, arguments: str) -> str:
    """One call as the answer's text holds it."""
    ok, args = _loads(arguments)
    return (f"{CALL_OPEN}\n" + json.dumps({"name": name, "arguments": args if ok else arguments},
                                          ensure_ascii=False) + f"\n{CALL_CLOSE}")


def generic_messages(messages: tuple[ChatMessage, ...], structure: Structure | None
                     ) -> list[dict[str, str]]:
    """Plain chat messages (system, user, assistant) for a template without tools: the
    tools described in the system message, an assistant's calls as their text, a tool's
    result as a user message inside <tool_response> tags."""
    out: list[dict[str, str]] = []
    tools = active_tools(structure) if structure is not None else ()
    for m in messages:
        if m.role == "tool":
            out.append({"role": "user",
                        "content": f"<tool_response>\n{m.content}\n</tool_response>"})
        elif m.tool_calls:
            calls = "\n".join(call_text(c.name, c.arguments) for c in m.tool_calls)
            out.append({"role": "assistant", "content": f"{m.content}\n{calls}".strip()})
        else:
            out.append({"role": m.role, "content": m.content})
    if tools:
        prompt = tools_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out

