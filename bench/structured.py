"""Structured answers on the default model: what the constraint costs and what voting buys.

In one process, on the llama.cpp engine the node's workers run (one worker, 2 threads):
- tokens/s of schema-constrained decoding against unconstrained, same prompt and length
  (a schema with one long string field vs free text, EOS ignored where it may be), at
  batch 1 and batch 8, runs alternating so that noise hits both alike;
- the delay to the first token that a new schema adds (its grammar compiled) and that a
  cached one adds, against an unconstrained request; and the one-time build of the
  grammar library's tokenizer from the GGUF's vocabulary (once per worker);
- validity: candidates at temperature 0.8 over several schemas that parse and validate
  (jsonschema), of those that ended on their own (cut by max_tokens: counted apart);
- accuracy on bench/data/extraction.json (the project's own small set: a sentence about a
  person -> name, age, city): one candidate at T = 0.8 vs n = 5 voted by value
  (confidence over canonical JSON, core/consensus.py), and greedy, with a paired bootstrap
  interval of the difference. Goals (issue 36): ratio >= 0.9 at batch 1 and 8, a cached
  schema < 5 ms before the first token, 100% validity, n = 5 above one candidate.
Prints one JSON line; writes bench/results/structured.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import msgspec
from _common import median, write_results

from zswarm.core.consensus import Validation, decide
from zswarm.core.messages import ChatMessage, GenerateRequest, SamplingParams, Structure
from zswarm.core.structured import Shape
from zswarm.engines.llamacpp import LlamaCppEngine
from zswarm.engines.models import resolve_model

DATA = Path(__file__).resolve().parent / "data" / "extraction.json"
#: a string that cannot end before max_tokens: both sides generate the same number of tokens
STORY = {"type": "object", "properties": {"story": {"type": "string", "minLength": 10_000}},
         "required": ["story"]}
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "city": {"type": "string"}},
          "required": ["name", "age", "city"], "additionalProperties": False}
VALIDITY_SCHEMAS = [
    PERSON,
    {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]},
                                      "count": {"type": "integer", "minimum": 0}},
     "required": ["colour", "count"]},
    {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"},
                                                "maxItems": 4}, "done": {"type": "boolean"}},
     "required": ["items", "done"]},
    {"type": "object", "properties": {"title": {"type": "string", "maxLength": 40},
                                      "tags": {"type": "array", "items": {
                                          "enum": ["a", "b", "c"]}}}, "required": ["title"]},
]


def chat(q: str, structure: Structure | None, **params: Any) -> GenerateRequest:
    n = params.pop("n", 1)
    return GenerateRequest(messages=(ChatMessage(role="user", content=q),),
                           params=SamplingParams(**params), n=n, structure=structure)


def schema(s: dict[str, Any]) -> Structure:
    return Structure(format="schema", schema=json.dumps(s))


def tok_s(engine: LlamaCppEngine, request: GenerateRequest) -> float:
    t0 = time.perf_counter()
    cands = engine.generate(request)
    tokens = [c.tokens for c in cands]
    assert tokens == [request.params.max_tokens] * request.n, tokens  # equal work
    return sum(tokens) / (time.perf_counter() - t0)


def speed(engine: LlamaCppEngine, reps: int, tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for batch in (1, 8):
        free = chat("Write a story about a lighthouse.", None, n=batch, max_tokens=tokens,
                    ignore_eos=True, temperature=0.8, seed=1)
        constrained = chat("Write a story about a lighthouse as JSON.", schema(STORY),
                           n=batch, max_tokens=tokens, temperature=0.8, seed=1)
        tok_s(engine, free), tok_s(engine, constrained)  # warm: cache, grammar
        a, b = [], []
        for _ in range(reps):
            a.append(tok_s(engine, free))
            b.append(tok_s(engine, constrained))
        out[f"batch{batch}"] = {"free_tok_s": round(median(a), 1),
                                "constrained_tok_s": round(median(b), 1),
                                "ratio": round(median(b) / median(a), 3)}
    return out


def first_token_ms(engine: LlamaCppEngine, request: GenerateRequest) -> float:
    t0 = time.perf_counter()
    first: list[float] = []
    engine.generate(request, on_token=lambda i, t: first or first.append(time.perf_counter()))
    return (first[0] - t0) * 1000 if first else float("nan")


def compile_delay(engine: LlamaCppEngine, reps: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    engine.grammars.matcher(schema({"type": "object"}))  # builds the tokenizer once
    tokenizer_ms = (time.perf_counter() - t0) * 1000
    free, new, cached = [], [], []
    q = "Give a person as JSON."
    for k in range(reps):
        fresh = schema({**PERSON, "title": f"person {k}"})  # a schema never seen
        free.append(first_token_ms(engine, chat(q, None, max_tokens=2, temperature=0)))
        new.append(first_token_ms(engine, chat(q, fresh, max_tokens=2, temperature=0)))
        cached.append(first_token_ms(engine, chat(q, fresh, max_tokens=2, temperature=0)))
    return {"tokenizer_build_ms": round(tokenizer_ms, 1),
            "first_token_free_ms": round(median(free), 2),
            "first_token_new_schema_ms": round(median(new), 2),
            "first_token_cached_schema_ms": round(median(cached), 2),
            "new_schema_adds_ms": round(median(new) - median(free), 2),
            "cached_schema_adds_ms": round(median(cached) - median(free), 2)}


def validity(engine: LlamaCppEngine, samples: int) -> dict[str, Any]:
    import jsonschema

    ended = valid = cut = 0
    questions = ["Fill in the JSON.", "Make something up.", "Describe your day.",
                 "What is 2 + 2?", "List some fruit."]
    k = 0
    while ended + cut < samples:
        s = VALIDITY_SCHEMAS[k % len(VALIDITY_SCHEMAS)]
        cands = engine.generate(chat(questions[k % len(questions)], schema(s), n=8,
                                     temperature=0.8, seed=k, max_tokens=160))
        k += 1
        for c in cands:
            if c.finish_reason != "stop":
                cut += 1
                continue
            ended += 1
            try:
                jsonschema.validate(json.loads(c.text), s)
                valid += 1
            except (ValueError, jsonschema.ValidationError):
                pass
    return {"samples": ended + cut, "ended": ended, "valid_of_ended": valid,
            "validity": round(valid / max(1, ended), 4), "cut_by_max_tokens": cut}


def right(text: str, truth: dict[str, Any]) -> bool:
    try:
        got = json.loads(text)
    except ValueError:
        return False
    return isinstance(got, dict) and \
        str(got.get("name", "")).strip().lower() == truth["name"].lower() and \
        got.get("age") == truth["age"] and \
        str(got.get("city", "")).strip().lower() == truth["city"].lower()


def extraction(engine: LlamaCppEngine, limit: int | None) -> dict[str, Any]:
    items = json.loads(DATA.read_text())[:limit]
    structure = schema(PERSON)
    validation = Validation(allow_truncated=False, shape=Shape(structure))
    greedy, one, voted = [], [], []
    for k, item in enumerate(items):
        q = f"{item['text']}\nExtract the person's name, age and city."
        [g] = engine.generate(chat(q, structure, temperature=0, max_tokens=60))
        cands = engine.generate(chat(q, structure, n=5, temperature=0.8, seed=k, max_tokens=60))
        cands = [msgspec.structs.replace(c, node_id="local", model_id=engine.model_id)
                 for c in cands]
        d = decide("confidence", cands, expected=5, final=True, validation=validation,
                   question=q)
        greedy.append(right(g.text, item["truth"]))
        one.append(right(cands[0].text, item["truth"]))
        voted.append(d is not None and right(cands[d.winner].text, item["truth"]))
    rng = random.Random(0)
    diffs = []
    for _ in range(2000):
        idx = [rng.randrange(len(items)) for _ in items]
        diffs.append(sum(voted[i] - one[i] for i in idx) / len(items))
    diffs.sort()
    return {"items": len(items), "greedy": round(sum(greedy) / len(items), 3),
            "one_candidate_t08": round(sum(one) / len(items), 3),
            "voted_n5_t08": round(sum(voted) / len(items), 3),
            "voted_minus_one": round((sum(voted) - sum(one)) / len(items), 3),
            "interval_95": [round(diffs[int(0.025 * len(diffs))], 3),
                            round(diffs[int(0.975 * len(diffs))], 3)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    engine = LlamaCppEngine(resolve_model("default"), n_ctx=4096, threads=2)
    engine.warm()
    figures: dict[str, Any] = {"quick": args.quick}
    figures["compile"] = compile_delay(engine, 3 if args.quick else 9)
    figures["speed"] = speed(engine, 2 if args.quick else 5, 64 if args.quick else 128)
    figures["validity"] = validity(engine, 40 if args.quick else 200)
    figures["extraction"] = extraction(engine, 10 if args.quick else None)
    engine.close()
    sp, co, va, ex = (figures["speed"], figures["compile"], figures["validity"],
                      figures["extraction"])
    write_results("structured_quick" if args.quick else "structured", figures, [
        ("constrained / free tok/s, batch 1 (goal >= 0.9)",
         f"{sp['batch1']['ratio']} ({sp['batch1']['constrained_tok_s']} / "
         f"{sp['batch1']['free_tok_s']})"),
        ("constrained / free tok/s, batch 8 (goal >= 0.9)",
         f"{sp['batch8']['ratio']} ({sp['batch8']['constrained_tok_s']} / "
         f"{sp['batch8']['free_tok_s']})"),
        ("first token: a new schema adds, ms", f"{co['new_schema_adds_ms']}"),
        ("first token: a cached schema adds, ms (goal < 5)", f"{co['cached_schema_adds_ms']}"),
        ("tokenizer built once per worker, ms", f"{co['tokenizer_build_ms']}"),
        ("valid of ended candidates at T 0.8 (goal 100%)",
         f"{va['valid_of_ended']} / {va['ended']} ({va['cut_by_max_tokens']} cut by "
         "max_tokens)"),
        ("extraction: greedy / one candidate / n = 5 voted",
         f"{ex['greedy']} / {ex['one_candidate_t08']} / {ex['voted_n5_t08']} "
         f"({ex['items']} items)"),
        ("n = 5 minus one candidate, 95% interval",
         f"{ex['voted_minus_one']} [{ex['interval_95'][0]}, {ex['interval_95'][1]}]"),
    ])
    print(json.dumps({"ratio_b1": sp["batch1"]["ratio"], "ratio_b8": sp["batch8"]["ratio"],
                      "cached_schema_adds_ms": co["cached_schema_adds_ms"],
                      "new_schema_adds_ms": co["new_schema_adds_ms"],
                      "validity": va["validity"], "samples": va["samples"],
                      "extraction_one": ex["one_candidate_t08"],
                      "extraction_n5": ex["voted_n5_t08"],
                      "extraction_interval_95": ex["interval_95"]}))


if __name__ == "__main__":
    main()
