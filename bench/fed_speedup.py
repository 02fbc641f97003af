"""One vote, two machines: how much sooner does a second node finish a vote, and where does the time go?

Two setups with the same compute per node: node A alone, pinned to CPU 0 (one worker,
one thread), and A with a second node B pinned to CPU 1 (a static peer; candidates split
over both). The same questions (bench/data/questions.jsonl, the held-out half, every
kind) are asked one at a time through A's HTTP API with the `openai` client, one mode
after the other over all of them (so every ask meets its question as new, its prompt
not in any prompt cache): ``confidence``, ``best_of_n``
and ``majority`` at n = 8 and n = 16, T = 0.7, 12 tokens at most. Then ``route`` throughput: two clients
asking at once (n = 1) for a fixed number of questions, questions per second.

Per mode: time per question (p50, p95) in each setup and their ratio (two / one; ideal
0.5), accuracy (bench/quality.py), candidates used, and the breakdown of an ask from its
report: planning, each node's last candidate (A's own, B's), waiting for the slowest
(gathering end minus the first node's last candidate), re-scoring peers' claims
(runtime/verify.py), deciding, and the HTTP door (client wall time minus the node's
total). The one-node setup also measures the time of a share of 1, 2 and 4 candidates
(best_of_n, which waits for all; 8 and 16 from its modes): the curve docs/scale.md
predicts larger swarms from; and every mode at half its n (the floor: what an even split
over two equal nodes leaves each node, on this node alone). Per mode, over the whole set:
the total time of two nodes against the floor's (goal <= 1.05x), and the split (the mean
candidates asked of each node). Prints one JSON line; writes
results/fed_speedup[_quick][_short].{json,md}.

    python bench/fed_speedup.py            # 100 questions
    python bench/fed_speedup.py --quick    # 30 questions
    python bench/fed_speedup.py --short --runs 3 --modes confidence_n8,majority_n8
                                           # answers of a few tokens, three runs' spread
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
from _common import percentile, run_clients, write_results
from quality import correct, load_questions, split

from zswarm.client import NodeClient
from zswarm.testing.cluster import NodeProcess, node_config, wait_until

SYSTEM = "Answer with a single word or number only."
MODES = tuple((s, n) for s in ("confidence", "best_of_n", "majority") for n in (8, 16))
TEMPERATURE = 0.7
MAX_TOKENS = 12
#: --short: answers of a few tokens (a number, a word), where the prompt weighs most
SHORT_TOKENS = 4
ROUTE_CLIENTS = 2
#: share sizes whose time one node is measured at (beside n = 8 and 16)
CURVE = (1, 2, 4)

Record = dict[str, Any]


class Swarm:
    """Node A (CPU 0), and with ``two`` node B (CPU 1) as its static peer."""

    def __init__(self, tmp: Path, two: bool) -> None:
        swarm = "speedup-" + secrets.token_hex(4)
        common = {"model": {"threads": 1, "n_ctx": 1024}, "node": {"workers": 1}}
        self.procs: list[NodeProcess] = []
        try:
            if two:
                b = NodeProcess(node_config(tmp, "b", swarm=swarm, **common,
                                            federation={"discovery": "static"}), cpus={1})
                self.procs.append(b)
                b.wait_ready(300)
            fed = ({"discovery": "static", "peers": [self.procs[0].rpc]} if two
                   else {"enabled": False})
            a = NodeProcess(node_config(tmp, "a", swarm=swarm, **common, federation=fed),
                            cpus={0})
            self.procs.insert(0, a)
            a.wait_ready(300)
            if two:
                with NodeClient(a.rpc) as rpc:
                    wait_until(lambda: any(p.state == "alive" for p in rpc.peers().peers),
                               60, what="B alive at A")
        except BaseException:
            self.close()
            raise
        self.url = f"http://127.0.0.1:{self.procs[0].info.http_port}/v1"
        self.client = openai.OpenAI(base_url=self.url, api_key="-", max_retries=0,
                                    timeout=600)

    def ask(self, question: str, client: openai.OpenAI | None = None, **zswarm: Any
            ) -> tuple[dict[str, Any], str, float]:
        t0 = time.perf_counter()
        r = (client or self.client).chat.completions.create(
            model="default", max_tokens=MAX_TOKENS, temperature=TEMPERATURE,
            messages=[{"role": "system", "content": SYSTEM},
                      {"role": "user", "content": question}],
            extra_body={"zswarm": zswarm})
        return r.model_extra["zswarm"], r.choices[0].message.content or "", \
            time.perf_counter() - t0

    def close(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        for p in self.procs:
            p.stop()


def breakdown(report: dict[str, Any], wall_s: float) -> Record:
    """Where an ask's time went, in ms, from its report."""
    t = report.get("timings", {})
    last = {p["node"]: p["latency_ms"] for p in report.get("participants", [])
            if p.get("received")}
    split = {p["node"]: p["requested"] for p in report.get("participants", [])}
    gather = t.get("gather_ms", 0.0)
    return {"wall_ms": wall_s * 1000, "total_ms": t.get("total_ms", 0.0),
            "plan_ms": t.get("plan_ms", 0.0), "gather_ms": gather,
            "rescore_ms": t.get("rescore_ms", 0.0), "decide_ms": t.get("decide_ms", 0.0),
            "last_ms": last, "split": split,
            "wait_slowest_ms": gather - min(last.values()) if last else 0.0,
            "door_ms": wall_s * 1000 - t.get("total_ms", 0.0)}


def run_setup(swarm: Swarm, questions: list[dict[str, Any]], modes: list[tuple[str, int]],
              *, curve: bool = False, floor: bool = False) -> dict[str, list[Record]]:
    """Every mode for every question; with ``curve`` also best_of_n at n = 1, 2, 4 (it
    waits for all: the time one node takes for a share of that size); with ``floor``
    every mode at half its n too (``floor_<mode>``: what an even split over two equal
    nodes leaves each, asked of this one node alone)."""
    asked = [(s, n, f"{s}_n{n}") for s, n in modes]
    if floor:
        asked += [(s, n // 2, f"floor_{s}_n{n}") for s, n in modes]
    if curve:
        asked = [("best_of_n", c, f"share_{c}") for c in CURVE] + asked
    out: dict[str, list[Record]] = {name: [] for _, _, name in asked}
    # one mode after the other over every question: each ask meets its question as new
    # (a worker's prompt cache keeps 4 prompts; the set's other questions came between),
    # so each node decodes the question's prompt in every ask, as for a user's new
    # question - in each setup alike (asking every mode of a question in a row would
    # find it cached 6 times in 7 on one node and once in 2 on two)
    for s, n, name in asked:
        for q in questions:
            report, answer, wall = swarm.ask(q["question"], strategy=s, n=n)
            out[name].append({"id": q["id"], "ok": correct(q, answer),
                                     "used": len(report["candidates"]),
                                     "rescored": "checked by this node" in report.get("note",
                                                                                      ""),
                                     **breakdown(report, wall)})
        print(f"  {name}: {len(questions)} questions", file=sys.stderr, flush=True)
    return out


def route_rate(swarm: Swarm, questions: list[dict[str, Any]]) -> float:
    """Questions per second with ROUTE_CLIENTS clients asking at once (route, n = 1)."""
    clients = [openai.OpenAI(base_url=swarm.url, api_key="-", max_retries=0, timeout=600)
               for _ in range(ROUTE_CLIENTS)]
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for q in questions[k::ROUTE_CLIENTS]:
                swarm.ask(q["question"], clients[k], strategy="route")
        except BaseException as exc:  # noqa: BLE001 - reported after the join
            errors.append(exc)

    seconds = run_clients(work, ROUTE_CLIENTS)
    for c in clients:
        c.close()
    if errors:
        raise errors[0]
    return len(questions) / seconds


def summary(one: list[Record], two: list[Record], floor: list[Record]) -> Record:
    def p(recs: list[Record], q: float) -> float:
        return percentile([r["wall_ms"] for r in recs], q) / 1000

    def med(recs: list[Record], key: str) -> float:
        return round(statistics.median(r[key] for r in recs), 1)

    def last(recs: list[Record], which: str) -> float:
        vals = [r["last_ms"].get(which) for r in recs]
        got = [v for v in vals if v is not None]
        return round(statistics.median(got), 1) if got else 0.0

    nodes_two = sorted({n for r in two for n in r["last_ms"]})
    return {
        "p50_s": [round(p(one, 50), 3), round(p(two, 50), 3)],
        "p95_s": [round(p(one, 95), 3), round(p(two, 95), 3)],
        "ratio_p50": round(p(two, 50) / p(one, 50), 3),
        "ratio_p95": round(p(two, 95) / p(one, 95), 3),
        "ratio_total": round(sum(r["wall_ms"] for r in two) / sum(r["wall_ms"] for r in one),
                             3),
        # the floor: this node alone making what an even split leaves it (n / 2)
        "floor_ratio_total": round(sum(r["wall_ms"] for r in floor)
                                   / sum(r["wall_ms"] for r in one), 3),
        "two_over_floor_total": round(sum(r["wall_ms"] for r in two)
                                      / sum(r["wall_ms"] for r in floor), 3),
        "total_s": [round(sum(r["wall_ms"] for r in recs) / 1000, 2)
                    for recs in (one, floor, two)],
        # candidates asked of each node per question, two nodes (even: n / 2 each)
        "split_two": {node: round(statistics.mean(r["split"].get(node, 0) for r in two), 2)
                      for node in sorted({n for r in two for n in r["split"]})},
        "accuracy": [round(statistics.mean(r["ok"] for r in one), 3),
                     round(statistics.mean(r["ok"] for r in two), 3)],
        "used": [round(statistics.mean(r["used"] for r in one), 2),
                 round(statistics.mean(r["used"] for r in two), 2)],
        "rescored_share_two": round(statistics.mean(r["rescored"] for r in two), 2),
        "two_breakdown_ms": {
            "plan": med(two, "plan_ms"),
            **{f"last_{n}": last(two, n) for n in nodes_two},
            "gather": med(two, "gather_ms"), "wait_slowest": med(two, "wait_slowest_ms"),
            "rescore": med(two, "rescore_ms"), "decide": med(two, "decide_ms"),
            "total": med(two, "total_ms"), "door": med(two, "door_ms")},
        "one_breakdown_ms": {"gather": med(one, "gather_ms"), "decide": med(one, "decide_ms"),
                             "total": med(one, "total_ms"), "door": med(one, "door_ms")},
    }


def one_run(tmp: Path, questions: list[dict[str, Any]], modes: list[tuple[str, int]],
            *, route: bool) -> tuple[dict[str, dict[str, list[Record]]], dict[str, float]]:
    """Both setups, one after the other: their records, and route's rates."""
    runs: dict[str, dict[str, list[Record]]] = {}
    rates: dict[str, float] = {}
    for setup in ("one", "two"):
        print(f"{setup} node(s)", file=sys.stderr, flush=True)
        swarm = Swarm(tmp / setup, two=setup == "two")
        try:
            runs[setup] = run_setup(swarm, questions, modes, curve=setup == "one",
                                    floor=setup == "one")
            if route:
                rates[setup] = route_rate(swarm, questions)
        finally:
            swarm.close()
    return runs, rates


def main() -> None:
    global MAX_TOKENS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--questions", type=int, default=None)
    parser.add_argument("--short", action="store_true",
                        help=f"answers of a few tokens: max_tokens {SHORT_TOKENS}, not "
                             f"{MAX_TOKENS}")
    parser.add_argument("--runs", type=int, default=1,
                        help="repeat both setups this many times (the spread is reported)")
    parser.add_argument("--modes", default=",".join(f"{s}_n{n}" for s, n in MODES),
                        help="comma-separated, of " + ", ".join(f"{s}_n{n}" for s, n in MODES))
    args = parser.parse_args()
    if args.short:
        MAX_TOKENS = SHORT_TOKENS
    modes = [(s, n) for s, n in MODES if f"{s}_n{n}" in args.modes.split(",")]
    count = args.questions or (30 if args.quick else 100)
    held = split(load_questions(), "held")
    questions = held[::max(1, len(held) // count)][:count]
    with tempfile.TemporaryDirectory(prefix="zswarm-speedup-") as tmp:  # nodes' state dirs
        every = [one_run(Path(tmp) / f"run{k}", questions, modes, route=k == 0)
                 for k in range(args.runs)]
    runs, rates = every[0]
    per_run = [{f"{s}_n{n}": summary(r["one"][f"{s}_n{n}"], r["two"][f"{s}_n{n}"],
                                     r["one"][f"floor_{s}_n{n}"]) for s, n in modes}
               for r, _ in every]
    modes_fig = per_run[0]
    one = runs["one"]
    share_ms = {c: round(statistics.median(r["gather_ms"] for r in one[f"share_{c}"]), 1)
                for c in CURVE}
    share_ms |= {n: round(statistics.median(r["gather_ms"] for r in one[f"best_of_n_n{n}"]), 1)
                 for n in (8, 16) if f"best_of_n_n{n}" in one}
    spread = {m: {k: [run[m][k] for run in per_run]
                  for k in ("two_over_floor_total", "ratio_total", "floor_ratio_total",
                            "ratio_p50", "split_two", "accuracy")}
              for m in modes_fig}
    figures = {"questions": len(questions), "max_tokens": MAX_TOKENS, "runs": args.runs,
               "modes": modes_fig, "spread": spread, "one_node_share_ms": share_ms,
               "route_q_per_s": [round(rates["one"], 2), round(rates["two"], 2)],
               "route_ratio": round(rates["two"] / rates["one"], 2)}
    name = "fed_speedup" + ("_quick" if args.quick else "") + ("_short" if args.short else "")
    write_results(name, {**figures, "records": [r for r, _ in every]}, [
        (f"{m} two/one p50 (p95); two/floor total; split; accuracy one, two",
         f"{v['ratio_p50']} ({v['ratio_p95']}); {v['two_over_floor_total']}; "
         f"{json.dumps(v['split_two'])}; {v['accuracy'][0]}, {v['accuracy'][1]}")
        for m, v in modes_fig.items()] + [
        (f"{m} over {args.runs} runs", json.dumps(v)) for m, v in spread.items()] + [
        ("route q/s one, two", str(figures["route_q_per_s"]))])
    line = {"questions": len(questions), "max_tokens": MAX_TOKENS,
            "route_ratio": figures["route_ratio"], "spread": spread,
            **{m: {k: v[k] for k in ("ratio_p50", "ratio_p95", "accuracy", "p50_s",
                                     "two_over_floor_total", "split_two")}
               for m, v in modes_fig.items()},
            "one_node_share_ms": share_ms}
    if "confidence_n8" in modes_fig:
        line["confidence_n8_breakdown_ms"] = modes_fig["confidence_n8"]["two_breakdown_ms"]
    print(json.dumps(line))


if __name__ == "__main__":
    main()
