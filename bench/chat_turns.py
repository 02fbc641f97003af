"""Chat at the speed of the cache: time to first token per turn, zswarm's engine vs the library.

Side by side in one run, same model file (the default model), same threads: a
growing 8-turn chat (a system prompt, then user turns, each reply capped at
REPLY_TOKENS and appended to the history) and 4 interleaved conversations of 8 turns,
asked of (a) a zswarm node over its OpenAI API (streamed; growing chat only), (b) its
llama.cpp engine with its prompt cache (engines/llamacpp.py, the code a worker runs)
and (c) llama-cpp-python's own ``Llama.create_chat_completion``
(which keeps the previous prompt's prefix: one prompt). Time to first token is
measured by streaming: the time until the first text arrives.

Goals (issue 17): turn 8 of the growing chat <= 1.1x the library's; interleaved turns
2-8 <= 0.5x the library's; a new prompt <= the library's + 5 ms.

    python bench/chat_turns.py            # 3 rounds
    python bench/chat_turns.py --quick    # 1 round, ends with one JSON line
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, write_results  # noqa: E402

from zswarm.core.messages import ChatMessage, GenerateRequest, SamplingParams  # noqa: E402
from zswarm.engines.llamacpp import LlamaCppEngine  # noqa: E402
from zswarm.engines.models import resolve_model  # noqa: E402
from zswarm.testing.cluster import NodeProcess, node_config  # noqa: E402

THREADS = 1
REPLY_TOKENS = 24
N_CTX = 4096
SYSTEM = ("You are a helpful assistant running on a small home server. Answer briefly and "
          "plainly; when unsure, say so. Prefer short sentences and concrete examples. "
          "Never invent facts about the user.")
QUESTIONS = [
    "What is a good name for a grey cat?", "Why is the sky blue?",
    "Give me a word that rhymes with light.", "What is 12 times 12?",
    "Name a country in South America.", "What colour is a ripe banana?",
    "Suggest a breakfast with eggs.", "What is the capital of Japan?",
]

Ask = Callable[[list[dict[str, str]]], tuple[float, str]]


def zswarm_asker(engine: LlamaCppEngine) -> Ask:
    def ask(messages: list[dict[str, str]]) -> tuple[float, str]:
        request = GenerateRequest(
            messages=tuple(ChatMessage(role=m["role"], content=m["content"])  # type: ignore[arg-type]
                           for m in messages),
            params=SamplingParams(max_tokens=REPLY_TOKENS, temperature=0.0))
        t0 = time.perf_counter()
        first: list[float] = []

        def on_token(index: int, text: str) -> None:
            if not first:
                first.append(time.perf_counter() - t0)

        (cand,) = engine.generate(request, on_token=on_token)
        return (first[0] if first else time.perf_counter() - t0) * 1000, cand.text
    return ask


def node_asker(base: str) -> Ask:
    """The node's OpenAI API, streamed (what a chat client sees)."""
    import httpx

    http = httpx.Client(timeout=120)

    def ask(messages: list[dict[str, str]]) -> tuple[float, str]:
        t0 = time.perf_counter()
        ttft = None
        parts = []
        body = {"model": "default", "messages": messages, "max_tokens": REPLY_TOKENS,
                "temperature": 0.0, "stream": True}
        with http.stream("POST", f"{base}/chat/completions", json=body) as r:
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                choices = chunk.get("choices") or [{}]
                text = (choices[0].get("delta") or {}).get("content") or ""
                if text and ttft is None:
                    ttft = (time.perf_counter() - t0) * 1000
                parts.append(text)
        return ttft if ttft is not None else (time.perf_counter() - t0) * 1000, "".join(parts)
    return ask


def library_asker(llm: object) -> Ask:
    def ask(messages: list[dict[str, str]]) -> tuple[float, str]:
        t0 = time.perf_counter()
        ttft = None
        parts = []
        for chunk in llm.create_chat_completion(  # type: ignore[attr-defined]
                messages=messages, max_tokens=REPLY_TOKENS, temperature=0.0, stream=True):
            text = chunk["choices"][0]["delta"].get("content") or ""
            if text and ttft is None:
                ttft = (time.perf_counter() - t0) * 1000
            parts.append(text)
        return ttft if ttft is not None else (time.perf_counter() - t0) * 1000, "".join(parts)
    return ask


def growing(ask: Ask, tag: str) -> list[float]:
    """A new conversation (``tag`` makes its system prompt differ from other rounds')."""
    history = [{"role": "system", "content": f"{SYSTEM} ({tag})"}]
    ttfts = []
    for q in QUESTIONS:
        history.append({"role": "user", "content": q})
        ms, reply = ask(history)
        ttfts.append(ms)
        history.append({"role": "assistant", "content": reply})
    return ttfts


def interleaved(ask: Ask, conversations: int = 4) -> list[list[float]]:
    histories = [[{"role": "system", "content": f"{SYSTEM} (conversation {c})"}]
                 for c in range(conversations)]
    ttfts: list[list[float]] = [[] for _ in range(conversations)]
    for turn in range(len(QUESTIONS)):
        for c, history in enumerate(histories):
            history.append({"role": "user", "content": QUESTIONS[(turn + c) % len(QUESTIONS)]})
            ms, reply = ask(history)
            ttfts[c].append(ms)
            history.append({"role": "assistant", "content": reply})
    return ttfts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 1 if args.quick else 3
    from llama_cpp import Llama

    model = resolve_model("default")
    ours = LlamaCppEngine(model, n_ctx=N_CTX, threads=THREADS)
    lib = Llama(model_path=str(model.path), n_ctx=N_CTX, n_threads=THREADS,
                n_threads_batch=THREADS, verbose=False)
    grow_ours, grow_lib, inter_ours, inter_lib, grow_node = [], [], [], [], []
    work = Path(tempfile.mkdtemp(prefix="zswarm-chat-"))
    cfg = node_config(work, "chat", swarm="chat-" + secrets.token_hex(4),
                      federation={"enabled": False},
                      model={"threads": THREADS, "n_ctx": N_CTX},
                      scheduler={"default_deadline_ms": 120_000})
    node = NodeProcess(cfg)
    try:
        info = node.wait_ready(120)
        for _ in range(rounds):
            grow_node.append(growing(node_asker(f"http://127.0.0.1:{info['http_port']}/v1"),
                                     f"round {len(grow_node)}"))
            ours.clear_cache()
            lib.reset()
            grow_ours.append(growing(zswarm_asker(ours), f"round {len(grow_ours)}"))
            grow_lib.append(growing(library_asker(lib), f"round {len(grow_lib)}"))
            ours.clear_cache()
            lib.reset()
            inter_ours.append(interleaved(zswarm_asker(ours)))
            inter_lib.append(interleaved(library_asker(lib)))
    finally:
        ours.close()
        node.stop()
    per_turn_ours = [round(median([r[t] for r in grow_ours]), 1) for t in range(len(QUESTIONS))]
    per_turn_lib = [round(median([r[t] for r in grow_lib]), 1) for t in range(len(QUESTIONS))]
    later = lambda runs: median([ms for r in runs for conv in r for ms in conv[1:]])  # noqa: E731
    per_turn_node = [round(median([r[t] for r in grow_node]), 1) for t in range(len(QUESTIONS))]
    figures = {
        "turns_ttft_ms_node_http": per_turn_node,
        "node_turn8_ratio": round(per_turn_node[-1] / per_turn_lib[-1], 2),
        "turns_ttft_ms_zswarm": per_turn_ours, "turns_ttft_ms_library": per_turn_lib,
        "turn8_ratio": round(per_turn_ours[-1] / per_turn_lib[-1], 2),
        "new_prompt_ms_zswarm": per_turn_ours[0], "new_prompt_ms_library": per_turn_lib[0],
        "interleaved_later_turns_ms_zswarm": round(later(inter_ours), 1),
        "interleaved_later_turns_ms_library": round(later(inter_lib), 1),
        "interleaved_ratio": round(later(inter_ours) / later(inter_lib), 2),
        "threads": THREADS, "rounds": rounds,
    }
    write_results("chat_turns" + ("_quick" if args.quick else ""), figures, [
        ("growing chat TTFT per turn, a zswarm node over its OpenAI API (ms)",
         str(per_turn_node)),
        ("turn 8: node / library (goal <= 1.1)", str(figures["node_turn8_ratio"])),
        ("growing chat TTFT per turn, zswarm engine (ms)", str(per_turn_ours)),
        ("growing chat TTFT per turn, llama-cpp-python Llama (ms)", str(per_turn_lib)),
        ("turn 8: zswarm / library (goal <= 1.1)", str(figures["turn8_ratio"])),
        ("4 interleaved conversations, turns 2-8: zswarm / library (goal <= 0.5)",
         str(figures["interleaved_ratio"])),
        ("a new prompt: zswarm / library ms (goal <= library + 5)",
         f"{per_turn_ours[0]} / {per_turn_lib[0]}"),
    ])
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
