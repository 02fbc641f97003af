"""What checking a peer's score costs: re-scoring a candidate vs generating it (real model).

When a peer's log-probability decides an answer, the asker re-scores that candidate with
its own model (runtime/verify.py, Engine.score: one teacher-forced pass over prompt and
answer) before the answer stands. This measures, on the default model with the same
question, the time to generate an answer of up to MAX_TOKENS tokens and the time to
score that answer, and the gap between the engine's own mean log-probability and the
re-scored one (re-tokenising the text may split it differently). Goal: scoring costs
well under one generation (it is one batched forward pass, not one pass per token).

    python bench/rescore.py            # 20 rounds
    python bench/rescore.py --quick    # 5 rounds, ends with one JSON line
"""

from __future__ import annotations

import argparse
import json
import time

from _common import median, write_results

from zswarm.core.messages import ChatMessage, GenerateRequest, SamplingParams
from zswarm.engines.llamacpp import LlamaCppEngine
from zswarm.engines.models import resolve_model

MAX_TOKENS = 48
QUESTION = "Explain in two sentences why the sky is blue."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 5 if args.quick else 20
    engine = LlamaCppEngine(resolve_model("default"), n_ctx=2048, threads=2)
    request = GenerateRequest(messages=(ChatMessage(role="user", content=QUESTION),),
                              params=SamplingParams(max_tokens=MAX_TOKENS, temperature=0.7))
    gen_ms, score_ms, gaps, tokens = [], [], [], []
    try:
        for i in range(rounds):
            seeded = GenerateRequest(messages=request.messages, params=SamplingParams(
                max_tokens=MAX_TOKENS, temperature=0.7, seed=i))
            t0 = time.perf_counter()
            (cand,) = engine.generate(seeded)
            gen_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            verified = engine.score(seeded, cand.text)
            score_ms.append((time.perf_counter() - t0) * 1000)
            tokens.append(cand.tokens)
            if verified is not None and cand.mean_logprob is not None:
                gaps.append(abs(verified - cand.mean_logprob))
    finally:
        engine.close()
    figures = {"rounds": rounds, "answer_tokens_median": median([float(t) for t in tokens]),
               "generate_ms_p50": round(median(gen_ms), 1),
               "score_ms_p50": round(median(score_ms), 1),
               "score_vs_generate": round(median(score_ms) / median(gen_ms), 3),
               "logprob_gap_median": round(median(gaps), 4) if gaps else None,
               "logprob_gap_max": round(max(gaps), 4) if gaps else None}
    write_results("rescore" + ("_quick" if args.quick else ""), figures, [
        ("answer tokens (median)", str(figures["answer_tokens_median"])),
        ("generate p50 ms / score p50 ms", f"{figures['generate_ms_p50']} / "
                                           f"{figures['score_ms_p50']}"),
        ("score / generate", str(figures["score_vs_generate"])),
        ("|re-scored - reported| mean log-prob, median / max",
         f"{figures['logprob_gap_median']} / {figures['logprob_gap_max']}"),
    ])
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
