"""Chat at the speed of the cache: time to first token per turn, zswarm's engine vs the library.

Side by side in one run, same model file (the default model), same threads: a
growing 8-turn chat (a system prompt, then user turns, each reply capped at
REPLY_TOKENS and appended to the history) and 4 interleaved conversations of 8 turns,
asked of (a) a zswarm node over its OpenAI API (streamed; growing chat only), (b) its
llama.cpp engine with its prompt cache (engines/llamacpp.py, the code a worker runs)
and (c) llama-cpp-python's own ``Llama.create_chat_completion``
(which keeps the previous prompt's prefix: one prompt). Time to first token is
measured by streaming: the time until the first text arrives.

Then, on nodes of their own: 4 concurrent clients on a node of one worker (2 threads;
continuous batching) against one client, in tokens/s; and 2 nodes with ``route``,
4 growing conversations asked of one of them: the share of follow-up turns served by
the node that served the conversation's first turn (which holds its prefix), and
their time to first token against the same conversations on one node.

Goals (issue 17): turn 8 of the growing chat <= 1.1x the library's; interleaved turns
2-8 <= 0.5x the library's; a new prompt <= the library's + 5 ms; 4 concurrent
clients >= 1.8x the tokens/s of one; route: >= 90% of follow-ups on the prefix's
node, TTFT within 1.2x of one node's; peak RSS per worker reported beside the
KV cache's size (n_ctx bounds it).

    python bench/chat_turns.py            # 3 rounds
    python bench/chat_turns.py --quick    # 1 round, ends with one JSON line
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import median, proc_status_mib, run_clients, write_results

from zswarm.core.messages import ChatMessage, GenerateRequest, SamplingParams
from zswarm.engines.llamacpp import LlamaCppEngine
from zswarm.engines.models import ModelFile, resolve_model
from zswarm.testing.cluster import NodeProcess, node_config, wait_until

THREADS = 1
REPLY_TOKENS = 24
CLIENT_TOKENS = 64
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


def concurrent_clients(base: str, clients: int, requests_each: int) -> float:
    """Aggregate completion tokens/s of ``clients`` threads, each asking in turn."""
    import httpx

    tokens: list[int] = []

    def client(c: int) -> None:
        with httpx.Client(timeout=300) as http:
            for r in range(requests_each):
                body = {"model": "default", "max_tokens": CLIENT_TOKENS, "temperature": 0.8,
                        "seed": c * 100 + r, "messages": [
                            {"role": "user", "content": f"Tell a long story about robot {c}-{r}."}]}
                reply = http.post(f"{base}/chat/completions", json=body).json()
                tokens.append(reply["usage"]["completion_tokens"])

    seconds = run_clients(client, clients)
    return sum(tokens) / seconds


def engine_batch_ratio(model: ModelFile, clients: int) -> float:
    """The engine alone (no node, no HTTP), 2 threads: tokens/s of ``clients`` requests
    batched together against one, each 64 tokens: what llama.cpp's decode allows here."""
    engine = LlamaCppEngine(model, n_ctx=N_CTX, threads=2)

    def rate(k: int) -> float:
        engine.clear_cache()
        done: list[object] = []
        t0 = time.perf_counter()
        for i in range(k):
            engine.submit(f"r{i}", GenerateRequest(
                messages=(ChatMessage(role="user", content=f"Tell a long story about robot {i}."),),
                params=SamplingParams(temperature=0.8, seed=i, max_tokens=CLIENT_TOKENS,
                                      ignore_eos=True)),
                on_token=None, on_candidate=None, on_done=done.append)
        while len(done) < k:
            engine.batcher.step()
        return CLIENT_TOKENS * k / (time.perf_counter() - t0)

    try:
        rate(1)  # warm
        return median([rate(clients) / rate(1) for _ in range(3)])
    finally:
        engine.close()


def worker_rss_mib(node: NodeProcess) -> float:
    """Peak RSS (VmHWM) of the node's worker processes, the largest, in MiB."""
    peak = 0.0
    for child in Path(f"/proc/{node.pid}/task/{node.pid}/children").read_text().split():
        peak = max(peak, proc_status_mib(int(child)))
    return round(peak, 1)


def route_pair(work: Path, rounds: int) -> dict[str, object]:
    """Two nodes, ``route``: which node serves each follow-up turn, and how fast."""
    import httpx

    swarm = "chat-route-" + secrets.token_hex(4)
    common = {"model": {"threads": THREADS, "n_ctx": N_CTX},
              "scheduler": {"default_deadline_ms": 120_000},
              "consensus": {"strategy": "route"}}
    b = NodeProcess(node_config(work, "b", swarm=swarm, federation={
        "swarm": swarm, "discovery": "static"}, **common))
    a = None
    try:
        b.wait_ready(120)
        a = NodeProcess(node_config(work, "a", swarm=swarm, federation={
            "swarm": swarm, "discovery": "static", "peers": [b.rpc]}, **common))
        info = a.wait_ready(120)
        base = f"http://127.0.0.1:{info.http_port}/v1"
        http = httpx.Client(timeout=120)

        def b_alive() -> bool:
            data = http.get(f"{base}/federation/peers").json()
            peers = data.get("peers", []) if isinstance(data, dict) else data
            return any(p.get("name") == "b" and p.get("state") == "alive" for p in peers)

        wait_until(b_alive, 60, what="node b alive at node a")
        on_home = follow_ups = 0
        ttfts: list[float] = []
        for rnd in range(rounds):
            histories = [[{"role": "system", "content": f"{SYSTEM} (route {rnd}.{c})"}]
                         for c in range(4)]
            homes: list[str | None] = [None] * 4
            for turn in range(len(QUESTIONS)):
                for c, history in enumerate(histories):
                    history.append({"role": "user",
                                    "content": QUESTIONS[(turn + c) % len(QUESTIONS)]})
                    t0 = time.perf_counter()
                    body = {"model": "default", "messages": history, "temperature": 0.0,
                            "max_tokens": REPLY_TOKENS, "stream": True}
                    ttft, parts, served = None, [], None
                    with http.stream("POST", f"{base}/chat/completions", json=body) as r:
                        for line in r.iter_lines():
                            if not line.startswith("data: ") or line == "data: [DONE]":
                                continue
                            chunk = json.loads(line[6:])
                            text = ((chunk.get("choices") or [{}])[0].get("delta")
                                    or {}).get("content") or ""
                            if text and ttft is None:
                                ttft = (time.perf_counter() - t0) * 1000
                            parts.append(text)
                            if chunk.get("zswarm"):
                                served = (chunk["zswarm"].get("nodes") or [None])[0]
                    history.append({"role": "assistant", "content": "".join(parts)})
                    if turn == 0:
                        homes[c] = served
                    else:
                        follow_ups += 1
                        on_home += served == homes[c]
                        ttfts.append(ttft if ttft is not None else 0.0)
        return {"route_on_home_share": round(on_home / follow_ups, 3),
                "route_follow_up_ttft_ms": round(median(ttfts), 1)}
    finally:
        if a is not None:
            a.stop()
        b.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 1 if args.quick else 3
    from llama_cpp import Llama

    model = resolve_model("default")
    ours = LlamaCppEngine(model, n_ctx=N_CTX, threads=THREADS)
    ours_fa_off = LlamaCppEngine(model, n_ctx=N_CTX, threads=THREADS, flash_attn="off")
    lib = Llama(model_path=str(model.path), n_ctx=N_CTX, n_threads=THREADS,
                n_threads_batch=THREADS, verbose=False)
    grow_ours, grow_lib, inter_ours, inter_lib, grow_node = [], [], [], [], []
    grow_fa_off: list[list[float]] = []
    work = Path(tempfile.mkdtemp(prefix="zswarm-chat-"))
    cfg = node_config(work, "chat", swarm="chat-" + secrets.token_hex(4),
                      federation={"enabled": False},
                      model={"threads": THREADS, "n_ctx": N_CTX},
                      scheduler={"default_deadline_ms": 120_000})
    node = NodeProcess(cfg)
    try:
        info = node.wait_ready(120)
        for _ in range(rounds):
            grow_node.append(growing(node_asker(f"http://127.0.0.1:{info.http_port}/v1"),
                                     f"round {len(grow_node)}"))
            ours.clear_cache()
            lib.reset()
            grow_ours.append(growing(zswarm_asker(ours), f"round {len(grow_ours)}"))
            grow_lib.append(growing(library_asker(lib), f"round {len(grow_lib)}"))
            grow_fa_off.append(growing(zswarm_asker(ours_fa_off), f"round {len(grow_fa_off)}"))
            ours.clear_cache()
            lib.reset()
            inter_ours.append(interleaved(zswarm_asker(ours)))
            inter_lib.append(interleaved(library_asker(lib)))
        rss_one = worker_rss_mib(node)
    finally:
        ours.close()
        ours_fa_off.close()
        node.stop()
    node_ttft_later = median([ms for r in grow_node for ms in r[1:]])
    # continuous batching: one worker, 2 threads (as measured in the issue)
    busy = NodeProcess(node_config(work, "busy", swarm="chat-" + secrets.token_hex(4),
                                   federation={"enabled": False},
                                   model={"threads": 2, "n_ctx": N_CTX},
                                   scheduler={"default_deadline_ms": 300_000}))
    try:
        binfo = busy.wait_ready(120)
        bbase = f"http://127.0.0.1:{binfo.http_port}/v1"
        each = 2 if args.quick else 4
        one_client = concurrent_clients(bbase, 1, each)
        four_clients = concurrent_clients(bbase, 4, each)
        rss_batch = worker_rss_mib(busy)
    finally:
        busy.stop()
    route = route_pair(work, rounds)
    engine4 = engine_batch_ratio(model, 4)
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
        "clients1_tok_s": round(one_client, 1), "clients4_tok_s": round(four_clients, 1),
        "clients4_ratio": round(four_clients / one_client, 2),
        "engine_clients4_ratio": round(engine4, 2),
        "turn8_ratio_engine_flash_attn_off": round(
            median([r[-1] for r in grow_fa_off]) / per_turn_lib[-1], 2),
        **route,
        "route_ttft_ratio": round(float(route["route_follow_up_ttft_ms"])  # type: ignore[arg-type]
                                  / node_ttft_later, 2),
        "one_node_follow_up_ttft_ms": round(node_ttft_later, 1),
        "worker_peak_rss_mib": max(rss_one, rss_batch),
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
        ("4 concurrent clients / 1, tokens/s on one worker (goal >= 1.8)",
         f"{figures['clients4_ratio']} ({figures['clients4_tok_s']} / "
         f"{figures['clients1_tok_s']})"),
        ("the engine alone, 4 batched / 1 (llama.cpp's ceiling here)",
         str(figures["engine_clients4_ratio"])),
        ("turn 8 with flash attention off (the library's default): engine / library",
         str(figures["turn8_ratio_engine_flash_attn_off"])),
        ("route, 2 nodes: follow-ups on the prefix's node (goal >= 0.9)",
         str(figures["route_on_home_share"])),
        ("route follow-up TTFT / one node's (goal <= 1.2)", str(figures["route_ttft_ratio"])),
        ("peak RSS per worker (MiB)", str(figures["worker_peak_rss_mib"])),
    ])
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
