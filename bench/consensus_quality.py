"""More right answers for the same budget? Fixed n against adaptive budgets, real model, live node.

The questions: one fixed half of bench/data/questions.jsonl (quality.split: ``held``
by default, the half nothing was tuned on; ``--part tune`` is the half the stopping
rule, its thresholds and tau were chosen on). A `zswarm node` with the default model
(one worker, every core) answers each question over HTTP with the official `openai`
client, every mode in turn before the next question (so the machine is the same for
all of them):

- greedy (T = 0, n = 1), for reference;
- ``best_of_n`` n = 16 (waits for all 16, each with its mean log-probability): the
  fixed-n curves of every strategy are computed from these candidates, by the node's
  own pure functions (core/consensus.py), n = 16 as they came and n < 16 as the mean
  over 20 random subsets; the stopping rules are compared on them too (waves as the
  node runs them, the shorter answers of a wave first);
- ``confidence`` with n = 8 and n = 16, live: their wall time is the fixed cost;
- ``confidence``, ``majority`` and ``best_of_n`` with a budget of 4, 8 and 16, live;
- at the default temperature (0.2), ``confidence`` with n = 1 (the old default) and with
  the default budget of 8: what the default buys.

With --swarm (default in the full run) two nodes, one core each, answer with
``confidence`` n = 16 and budget 16 over the swarm (waves spread over both). Scoring:
bench/quality.py. 95% intervals: bootstrap over questions. Prints one JSON line (the
goals of the issue) and writes results/consensus_quality[_quick].{json,md,png}.
--quick: every third question of the part, no swarm (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import openai
from _common import RESULTS, percentile, write_results
from quality import correct, load_questions, split
from stopping_sim import (
    MISSES,
    RULES,
    fixed_n,
    learned_factors,
    miss,
    oracle_n,
    simulate,
    zswarm_rule,
)

from zswarm.client import NodeClient
from zswarm.core import stopping
from zswarm.core.consensus import DEFAULT_TAU
from zswarm.core.messages import Candidate
from zswarm.testing.cluster import NodeProcess, node_config, wait_until

SYSTEM = "Answer with a single word or number only."
STRATEGIES = ("confidence", "majority", "best_of_n")
NS = (1, 2, 4, 8, 16)
BUDGETS = (4, 8, 16)
TAUS = (0.5, 1.0, 2.0, 3.0)
#: [generation] temperature's default
DEFAULT_T = 0.2

Record = dict[str, Any]


class Node:
    """One live node and an OpenAI client of its HTTP API."""

    def __init__(self, tmp: Path, k: int, threads: int) -> None:
        swarm = "quality-" + secrets.token_hex(4)
        self.procs = [NodeProcess(node_config(tmp, f"q{i}", swarm=swarm,
                                              model={"threads": threads},
                                              federation={"enabled": k > 1}))
                      for i in range(k)]
        try:
            for p in self.procs:
                p.wait_ready(300)
            if k > 1:
                with NodeClient(self.procs[0].rpc) as rpc:
                    wait_until(lambda: sum(p.state == "alive"
                                           for p in rpc.peers().peers) == k - 1,
                               60, what="peers alive")
        except BaseException:
            for p in self.procs:  # a node that never served is still ours to stop
                p.stop()
            raise
        port = self.procs[0].info.http_port
        self.client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-",
                                    max_retries=0, timeout=600)

    def ask(self, question: str, *, temperature: float, **zswarm: Any
            ) -> tuple[dict[str, Any], float]:
        t0 = time.perf_counter()
        r = self.client.chat.completions.create(
            model="default", max_tokens=12, temperature=temperature,
            messages=[{"role": "system", "content": SYSTEM},
                      {"role": "user", "content": question}],
            extra_body={"zswarm": zswarm})
        return r.model_extra["zswarm"], time.perf_counter() - t0

    def close(self) -> None:
        self.client.close()
        for p in self.procs:
            p.stop()


def _cands(report: dict[str, Any]) -> list[Candidate]:
    return [Candidate(text=c["text"], finish_reason=c["finish_reason"], tokens=c["tokens"],
                      mean_logprob=c["mean_logprob"], node=c["node"], node_id=c["node"],
                      model_id=c["model_id"]) for c in report["candidates"]]


def _live(report: dict[str, Any], seconds: float) -> Record:
    return {"answer": report["candidates"][report["winner"]]["text"],
            "used": len(report["candidates"]), "waves": report.get("waves", 1),
            "stop": report.get("stop", ""), "s": seconds,
            "nodes": sorted({c["node"] for c in report["candidates"]})}


def collect(node: Node, questions: list[dict[str, Any]], temperature: float, *,
            swarm: bool = False, live: bool = True) -> list[Record]:
    records = []
    for i, q in enumerate(questions):
        rec: Record = {"id": q["id"]}

        def ask(question: str = q["question"], **kw: Any) -> Record:
            return _live(*node.ask(question, temperature=temperature, **kw))

        if swarm:
            rec["confidence_n16"] = ask(strategy="confidence", n=16)
            rec["confidence_b16"] = ask(strategy="confidence", budget=16)
        else:
            report, _ = node.ask(q["question"], temperature=0.0, strategy="first_valid", n=1)
            rec["greedy"] = report["candidates"][0]["text"]
            report, _ = node.ask(q["question"], temperature=temperature,
                                 strategy="best_of_n", n=16)
            rec["candidates"] = _cands(report)
            if not live:  # --candidates-only: what the offline figures need
                records.append(rec)
                continue
            for n in (8, 16):
                rec[f"confidence_n{n}"] = ask(strategy="confidence", n=n)
            for s in STRATEGIES:
                for b in BUDGETS:
                    rec[f"{s}_b{b}"] = ask(strategy=s, budget=b)
            # what a user gets by default ([generation] temperature 0.2): one candidate
            # (the old default), or the default budget
            for mode, count in (("default_n1", {"n": 1}), ("default_b8", {"budget": 8})):
                rec[mode] = _live(*node.ask(q["question"], temperature=DEFAULT_T,
                                            strategy="confidence", **count))
        records.append(rec)
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{len(questions)} questions", file=sys.stderr, flush=True)
    return records


def _save(path: Path, records: list[Record]) -> None:
    """Every record, its candidates as dicts: --reuse reads them back."""
    RESULTS.mkdir(exist_ok=True)
    with path.open("w") as out:
        for rec in records:
            out.write(json.dumps({**rec, "candidates": [
                msgspec.to_builtins(c) for c in rec.get("candidates", [])]}) + "\n")


def _asked(mode: str, waves_run: int) -> int:
    """Candidates a live mode started: a fixed n all of them, a budget its waves'."""
    count = int(mode.rsplit("_", 1)[1][1:])
    return sum(stopping.waves(count)[:waves_run]) if "_b" in mode else count


def _load(rec: Record) -> Record:
    return {**rec, "candidates": [msgspec.convert(c, Candidate) for c in rec["candidates"]]}


def _misses(records: list[Record], by_id: dict[str, Any]) -> dict[str, Any]:
    """Per kind of miss (stopping_sim.MISSES): how many questions, and their ids."""
    found: dict[str, list[str]] = {m: [] for m in MISSES}
    factors = learned_factors(records, by_id)
    for r in records:
        why = miss(by_id[r["id"]], r["candidates"], factors=factors[r["id"]])
        if why is not None:
            found[why].append(r["id"])
    return {m: {"count": len(ids), "ids": ids} for m, ids in found.items()}


def bootstrap(values: list[float], resamples: int = 2000) -> tuple[float, float, float]:
    rnd = random.Random(7)
    k = len(values)
    means = sorted(sum(rnd.choices(values, k=k)) / k for _ in range(resamples))
    return (round(sum(values) / k, 4), round(means[int(0.025 * resamples)], 4),
            round(means[int(0.975 * resamples) - 1], 4))


def plot(curves: dict[str, list[tuple[float, float]]],
         budgets: dict[str, list[tuple[float, float]]],
         same: dict[str, list[tuple[float, float]]], greedy: float,
         oracle: list[tuple[float, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, strategy in enumerate(curves):
        color = f"C{i}"
        xs, ys = zip(*curves[strategy], strict=True)
        ax.plot(xs, ys, marker="o", color=color, label=f"{strategy}, n = 1-16")
        if strategy in budgets:
            bx, by = zip(*budgets[strategy], strict=True)
            ax.plot(bx, by, marker="s", linestyle="--", color=color,
                    label=f"{strategy}, budget {', '.join(str(b) for b in BUDGETS)}, live")
        sx, sy = zip(*same[strategy], strict=True)
        ax.plot(sx, sy, marker="^", linestyle=":", color=color,
                label=f"{strategy}, budget {', '.join(str(b) for b in BUDGETS)}, "
                      "on the curve's candidates")
    ox, oy = zip(*oracle, strict=True)
    ax.plot(ox, oy, marker=".", color="black", linestyle="-.",
            label="oracle: some candidate of n right")
    ax.axhline(greedy, color="grey", linestyle=":", label="greedy (T = 0)")
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 2, 4, 8, 16], ["1", "2", "4", "8", "16"])
    ax.set_xlabel("mean candidates per question")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--part", choices=("held", "tune"), default="held")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--swarm", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--reuse", action="store_true",
                        help="analyse the one-node samples of the last run again (no node)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    parser.add_argument("--candidates-only", action="store_true",
                        help="collect greedy and the 16 candidates only (no live modes, no "
                             "swarm): the offline figures, in a few minutes")
    args = parser.parse_args()
    questions = split(load_questions(), args.part)
    if args.quick:
        questions = questions[::3]
    if args.limit:
        questions = questions[:args.limit]
    by_id = {q["id"]: q for q in questions}
    swarm = (not args.quick and not args.candidates_only) if args.swarm is None else args.swarm
    cores = os.cpu_count() or 1
    name = "consensus_quality" + ("_quick" if args.quick else "") + \
        ("" if args.part == "held" else "_tune") + ("_candidates" if args.candidates_only else "")
    samples = RESULTS / f"{name}_samples.jsonl"
    with tempfile.TemporaryDirectory(prefix="zswarm-quality-") as tmp_name:
        tmp = Path(tmp_name)
        swarm_records: list[Record] = []
        if args.reuse:  # the records of the last run, analysed again (no node is started)
            kept = [_load(json.loads(line)) for line in samples.read_text().splitlines()]
            records = [r for r in kept if r["id"] in by_id and "greedy" in r]
            swarm_records = [r for r in kept if r["id"] in by_id and "greedy" not in r]
            swarm = False
            previous = RESULTS / f"{name}.json"  # the collecting run's time, kept
            one_s = json.loads(previous.read_text()).get("one_node_run_s", 0.0) \
                if previous.exists() else 0.0
        else:
            node = Node(tmp / "one", 1, cores)
            try:
                t0 = time.perf_counter()
                records = collect(node, questions, args.temperature,
                                  live=not args.candidates_only)
                one_s = time.perf_counter() - t0
            finally:
                node.close()
            _save(samples, records)  # before the swarm: a failure there keeps this run
        if swarm:
            node = Node(tmp / "two", 2, max(1, cores // 2))
            try:
                swarm_records = collect(node, questions, args.temperature, swarm=True)
            finally:
                node.close()
    kinds = sorted({q["kind"] for q in questions})

    def per_kind(values: list[float], recs: list[Record] = records) -> dict[str, float]:
        return {k: round(statistics.mean(v for v, r in zip(values, recs, strict=True)
                                         if by_id[r["id"]]["kind"] == k), 3) for k in kinds}

    figures: dict[str, Any] = {
        "part": args.part, "questions": len(records), "temperature": args.temperature,
        "tau": DEFAULT_TAU, "waves": {b: stopping.waves(b) for b in BUDGETS},
        "one_node_run_s": round(one_s, 1), **offline_figures(records, by_id, per_kind)}
    rows = offline_rows(figures)
    live = "confidence_b16" in records[0]
    if live:
        figures |= live_figures(records, by_id, per_kind)
        rows += live_rows(figures)
    if swarm_records:
        figures["swarm_2_nodes"] = swarm_figures(swarm_records, by_id)
        rows += [(f"2 nodes {mode}", json.dumps(f))
                 for mode, f in figures["swarm_2_nodes"].items()]
    RESULTS.mkdir(exist_ok=True)
    curves = {s: [(n, figures["fixed_n"][s][n][0]) for n in NS] for s in STRATEGIES}
    budget_points = {s: [(figures["live"][f"{s}_b{b}"]["mean_candidates"],
                          figures["live"][f"{s}_b{b}"]["accuracy"][0]) for b in BUDGETS]
                     for s in STRATEGIES} if live else {}
    same = {s: [(c, a) for a, c in figures["budget_on_the_same_candidates"][s].values()]
            for s in STRATEGIES}
    plot(curves, budget_points, same, figures["greedy"][0],
         [(n, figures["oracle_n"][n]) for n in NS], RESULTS / f"{name}.png",
         f"zswarm, SmolLM2-135M, T = {args.temperature:g}, {args.part} half "
         f"({len(records)} questions): fixed n vs budget")
    write_results(name, figures, rows)
    _save(samples, records + swarm_records)
    for row in rows:
        print(f"{row[0]:<48} {row[1]}", file=sys.stderr)
    line = {
        "part": args.part, "questions": len(records),
        "confidence_n16": figures["fixed_n"]["confidence"][16][0],
        "confidence_n8": figures["fixed_n"]["confidence"][8][0],
        "oracle_n16": figures["oracle_n16"][0],
        "misses_n16": {m: v["count"] for m, v in figures["misses_confidence_n16"].items()},
        "budget16_same_candidates": figures["budget_on_the_same_candidates"]["confidence"][16],
        "yesno_n16": figures["fixed_n_per_kind"]["confidence"][16].get("yesno"),
        "calibration_n16": {k: v["all"] for k, v in figures["calibration_n16"].items()},
    }
    if live:
        lv = figures["live"]
        line |= {
            "budget16": lv["confidence_b16"]["accuracy"][0],
            "budget16_candidates": lv["confidence_b16"]["mean_candidates"],
            "budget16_asked": lv["confidence_b16"]["mean_asked"],
            "yesno_budget16": lv["confidence_b16"]["per_kind"].get("yesno"),
            "p50_s": {m: lv[m]["p50_s"] for m in ("confidence_b16", "confidence_n16",
                                                   "confidence_n8")},
            "p95_s": {m: lv[m]["p95_s"] for m in ("confidence_b16", "confidence_n16",
                                                   "confidence_n8")},
            "default_b8": lv["default_b8"]["accuracy"][0],
            "default_n1": lv["default_n1"]["accuracy"][0]}
    if swarm_records:
        line["swarm_budget16"] = figures["swarm_2_nodes"]["confidence_b16"]["accuracy"][0]
        line["swarm_n16"] = figures["swarm_2_nodes"]["confidence_n16"]["accuracy"][0]
    print(json.dumps(line))


PerKind = Callable[[list[float]], dict[str, float]]


def offline_figures(records: list[Record], by_id: dict[str, Any], per_kind: PerKind
                    ) -> dict[str, Any]:
    """What the collected candidates say under the node's pure functions (no live mode)."""
    greedy = [float(correct(by_id[r["id"]], r["greedy"])) for r in records]
    fixed = {s: {n: fixed_n(records, by_id, s, n) for n in NS} for s in STRATEGIES}
    uncalibrated = fixed_n(records, by_id, "confidence", 16, calibrate=False)
    with_yes_no = fixed_n(records, by_id, "confidence", 16, yes_no=True)
    return {
        "greedy": bootstrap(greedy),
        "fixed_n": {s: {n: bootstrap(v) for n, v in by_n.items()} for s, by_n in fixed.items()},
        "fixed_n_per_kind": {s: {n: per_kind(v) for n, v in by_n.items()}
                             for s, by_n in fixed.items()},
        # core/calibration.py on and off, learned over the questions in order as a node would
        "calibration_n16": {
            "on": {"all": round(statistics.mean(fixed["confidence"][16]), 4),
                   **per_kind(fixed["confidence"][16])},
            "off": {"all": round(statistics.mean(uncalibrated), 4), **per_kind(uncalibrated)},
            "yes/no too": {"all": round(statistics.mean(with_yes_no), 4),
                           **per_kind(with_yes_no)}},
        # the rule on the same candidates as the fixed-n curves (4 orders each): less noisy
        # than the live budgets (one draw per question), and paired with the curves
        "budget_on_the_same_candidates": {
            s: {b: simulate(records, by_id, s, b, zswarm_rule) for b in BUDGETS}
            for s in STRATEGIES},
        "rules_confidence": {f"{name}, budget {b}": simulate(records, by_id, "confidence", b, rule)
                             for name, rule in RULES.items() for b in (8, 16)},
        "tau_confidence_n16": {t: round(statistics.mean(
            fixed_n(records, by_id, "confidence", 16, t)), 4) for t in TAUS},
        # some candidate right (of all 16; of n), and where the vote over them missed it
        "oracle_n16": bootstrap([float(any(correct(by_id[r["id"]], c.text)
                                           for c in r["candidates"])) for r in records]),
        "oracle_n": {n: round(statistics.mean(oracle_n(records, by_id, n)), 4) for n in NS},
        "misses_confidence_n16": _misses(records, by_id),
    }


def offline_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("greedy (T = 0)", str(figures["greedy"]))]
    rows += [(f"{s} n={n}", f"{v[0]} [{v[1]}, {v[2]}]")
             for s, by_n in figures["fixed_n"].items() for n, v in by_n.items()]
    rows += [(f"n={n} per kind {s}", json.dumps(figures["fixed_n_per_kind"][s][n]))
             for s in STRATEGIES for n in (8, 16)]
    rows += [(f"calibration {k}, confidence n=16", json.dumps(v))
             for k, v in figures["calibration_n16"].items()]
    rows += [(f"{s} budget {b}, on the curve's candidates", f"accuracy {a}, {c} candidates")
             for s, by_b in figures["budget_on_the_same_candidates"].items()
             for b, (a, c) in by_b.items()]
    rows += [(f"rule: {k}", f"accuracy {a}, {c} candidates")
             for k, (a, c) in figures["rules_confidence"].items()]
    rows += [("oracle: some candidate of 16 right", str(figures["oracle_n16"])),
             ("oracle: some candidate of n right", json.dumps(figures["oracle_n"])),
             ("confidence n=16 misses a right candidate, by kind of miss",
              json.dumps({m: v["count"] for m, v in figures["misses_confidence_n16"].items()}))]
    rows += [(f"tau {t}, confidence n=16", str(v))
             for t, v in figures["tau_confidence_n16"].items()]
    return rows


def _right(records: list[Record], by_id: dict[str, Any], mode: str) -> list[float]:
    return [float(correct(by_id[r["id"]], r[mode]["answer"])) for r in records]


def live_figures(records: list[Record], by_id: dict[str, Any], per_kind: PerKind
                 ) -> dict[str, Any]:
    """The modes a live node answered (fixed n, budgets, defaults): accuracy and time."""
    modes = [f"{s}_b{b}" for s in STRATEGIES for b in BUDGETS]
    modes += ["confidence_n8", "confidence_n16", "default_n1", "default_b8"]
    live = {mode: _right(records, by_id, mode) for mode in modes}
    figures: dict[str, Any] = {"live": {}}
    for mode, v in live.items():
        seconds = [r[mode]["s"] for r in records]
        figures["live"][mode] = {
            "accuracy": bootstrap(v),
            "mean_candidates": round(statistics.mean(r[mode]["used"] for r in records), 2),
            # started (the compute spent): a wave stopped early was asked whole
            "mean_asked": round(statistics.mean(_asked(mode, r[mode]["waves"])
                                                for r in records), 2),
            "mean_waves": round(statistics.mean(r[mode]["waves"] for r in records), 2),
            "p50_s": round(percentile(seconds, 50), 3),
            "p95_s": round(percentile(seconds, 95), 3),
            "per_kind": per_kind(v),
            "stops": {s: sum(r[mode]["stop"] == s for r in records)
                      for s in ("cannot change", "settled", "no agreement", "budget spent")}}
    # paired over the same questions (tighter than two intervals side by side)
    figures["paired"] = {f"{a} - {b}": bootstrap([x - y for x, y in zip(live[a], live[b],
                                                                        strict=True)])
                         for a, b in (("confidence_b16", "confidence_n16"),
                                      ("confidence_b16", "confidence_n8"),
                                      ("default_b8", "default_n1"))}
    return figures


def live_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [(f"live {mode}", f"{f['accuracy'][0]} [{f['accuracy'][1]}, {f['accuracy'][2]}], "
             f"{f['mean_candidates']} candidates ({f['mean_asked']} asked), "
             f"{f['mean_waves']} waves, p50 {f['p50_s']} s, "
             f"p95 {f['p95_s']} s, stops {json.dumps(f['stops'])}")
            for mode, f in figures["live"].items()]
    rows += [(f"live {mode} per kind", json.dumps(f["per_kind"]))
             for mode, f in figures["live"].items()]
    rows += [(f"paired {k}", str(v)) for k, v in figures["paired"].items()]
    return rows


def swarm_figures(records: list[Record], by_id: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        mode: {"accuracy": bootstrap(_right(records, by_id, mode)),
               "mean_candidates": round(statistics.mean(r[mode]["used"] for r in records), 2),
               "p50_s": round(percentile([r[mode]["s"] for r in records], 50), 3),
               "p95_s": round(percentile([r[mode]["s"] for r in records], 95), 3),
               "questions_on_both_nodes": sum(len(r[mode]["nodes"]) > 1 for r in records)}
        for mode in ("confidence_n16", "confidence_b16")}
    out["paired confidence_b16 - confidence_n16"] = bootstrap(
        [x - y for x, y in zip(_right(records, by_id, "confidence_b16"),
                               _right(records, by_id, "confidence_n16"), strict=True)])
    return out


if __name__ == "__main__":
    main()
