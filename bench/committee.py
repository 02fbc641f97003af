"""A committee across models against the best single model, at equal candidates.

The questions: the held-out half of bench/data/questions.jsonl (quality.split("held"):
nothing was tuned on it). One `zswarm node` with three real models in [[models]], one
worker and one thread each, all loaded: "small" (the default SmolLM2-135M Q4_1), "q8"
(it requantized to Q8_0) and "weak" (it requantized to Q3_K_S, a weaker copy), made by
llama.cpp's own quantize API (zswarm.testing.models). Each question is asked, through the
node's HTTP API with the `openai` client, in every mode in turn (so the machine is the
same for all): each model alone, and the committees small+q8, small+weak and all three
(`zswarm.models`), each with `confidence`, n = 8, T = 0.7, max_tokens 12. Scoring:
bench/quality.py. The committee's weights per model are learned by the node as it goes
(core/committee.py), from this run's own decisions.

Self-MoA (arXiv 2502.00674) reports that mixing weaker models into a vote often hurts;
this measures whether it does here. Prints one JSON line; writes
bench/results/committee[_quick].{json,md}. --quick: every third question.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
from _common import write_results
from quality import correct, load_questions, split

from zswarm.testing.cluster import NodeProcess, node_config
from zswarm.testing.models import requantized

SYSTEM = "Answer with a single word or number only."
MODES: dict[str, list[str]] = {
    "small": ["small"], "q8": ["q8"], "weak": ["weak"], "small+q8": ["small", "q8"],
    "small+weak": ["small", "weak"], "all three": ["small", "q8", "weak"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    questions = split(load_questions(), "held")
    if args.quick:
        questions = questions[::3]
    paths = {"small": "default", "q8": str(requantized("Q8_0")),
             "weak": str(requantized("Q3_K_S"))}
    models = [{"name": name, "path": path, "threads": 1, "n_ctx": 1024, "workers": 1,
               "preload": True, "pinned": True} for name, path in paths.items()]
    right = {mode: 0 for mode in MODES}
    seconds = {mode: 0.0 for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        proc = NodeProcess(node_config(Path(tmp), "c", swarm="bench-committee", models=models,
                                       federation={"enabled": False}))
        try:
            port = proc.wait_ready(180).http_port
            with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                               max_retries=0, timeout=300) as client:
                for q in questions:
                    for mode, names in MODES.items():
                        t0 = time.perf_counter()
                        extra: dict[str, Any] = {"n": 8, "strategy": "confidence"}
                        if len(names) > 1:
                            extra["models"] = names
                        r = client.chat.completions.create(
                            model=names[0], max_tokens=12, temperature=0.7,
                            messages=[{"role": "system", "content": SYSTEM},
                                      {"role": "user", "content": q["question"]}],
                            extra_body={"zswarm": extra})
                        seconds[mode] += time.perf_counter() - t0
                        right[mode] += correct(q, r.choices[0].message.content or "")
        finally:
            proc.stop()
    n = len(questions)
    accuracy = {mode: round(right[mode] / n, 3) for mode in MODES}
    best_single = max(("small", "q8", "weak"), key=lambda m: accuracy[m])
    figures = {"quick": args.quick, "questions": n, "accuracy": accuracy,
               "seconds_per_ask": {m: round(seconds[m] / n, 3) for m in MODES},
               "best_single": best_single,
               "committee_minus_best": {m: round(accuracy[m] - accuracy[best_single], 3)
                                        for m in ("small+q8", "small+weak", "all three")}}
    write_results("committee_quick" if args.quick else "committee", figures, [
        (f"accuracy, {mode} (n = 8 in all)", f"{accuracy[mode]}") for mode in MODES] + [
        ("best single model", best_single),
        ("committee - best single", f"{figures['committee_minus_best']}"),
        ("questions (held-out half)", f"{n}")])
    print(json.dumps({k: figures[k] for k in ("questions", "accuracy", "best_single",
                                              "committee_minus_best")}))


if __name__ == "__main__":
    main()
