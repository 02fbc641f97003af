"""Tokens/s streamed through the HTTP shim vs the engine called directly, same run.

A `zswarm node` process (default model, one worker) streams a greedy answer over
POST /v1/chat/completions (SSE, httpx client); the same request runs on the engine
loaded in this process. Runs alternate so that machine noise hits both alike, and
only one of the two generates at a time. Goal: ratio (HTTP tok/s / direct tok/s) >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
from _common import report_tok_s_ratio

from zswarm.config import load_config
from zswarm.core.messages import ChatMessage, GenerateRequest, SamplingParams
from zswarm.engines.loader import load_engine
from zswarm.testing.cluster import NodeProcess, node_config

PROMPT = "Write a long story about a lighthouse keeper and a storm."


def stream_once(base: str, tokens: int) -> tuple[int, float]:
    body = {"model": "default", "stream": True, "max_tokens": tokens, "temperature": 0,
            "messages": [{"role": "user", "content": PROMPT}]}
    t0 = time.perf_counter()
    used = 0
    with httpx.stream("POST", f"{base}/chat/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                if "usage" in event:
                    used = event["usage"]["completion_tokens"]
    return used, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps, tokens = (3, 128) if args.quick else (7, 256)
    with tempfile.TemporaryDirectory(prefix="zswarm-bench-") as tmp:
        path = node_config(Path(tmp), "http", swarm="bench-http",
                           federation={"enabled": False})
        cfg = load_config(path)
        request = GenerateRequest(
            messages=(ChatMessage(role="system", content=cfg.generation.system_prompt),
                      ChatMessage(role="user", content=PROMPT)),
            params=SamplingParams(max_tokens=tokens, temperature=0.0, top_p=cfg.generation.top_p,
                                  top_k=cfg.generation.top_k))
        engine = load_engine(cfg.model, threads=2)
        node = NodeProcess(path)
        try:
            info = node.wait_ready(120)
            base = f"http://127.0.0.1:{info.http_port}/v1"
            stream_once(base, tokens)  # warm up
            engine.generate(request)
            direct, http = [], []
            for _ in range(reps):
                t0 = time.perf_counter()
                [c] = engine.generate(request)
                direct.append(c.tokens / (time.perf_counter() - t0))
                used, seconds = stream_once(base, tokens)
                http.append(used / seconds)
        finally:
            node.stop()
            engine.close()
    report_tok_s_ratio("http_overhead", direct=direct, other=http, key="http",
                       label="streamed over HTTP (SSE) through the node", tokens=tokens,
                       tokens_label="max tokens per run", reps=reps)

if __name__ == "__main__":
    main()
