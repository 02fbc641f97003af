"""How the command line shows things: peer tables (plain, JSON, live), reports, key state.

Pure formatting over the protocol's messages (core/messages.py); the commands (cli/)
decide what to fetch and where to print it.
"""

from __future__ import annotations

import json

import msgspec
import typer
from rich.table import Table
from rich.text import Text

from zswarm.core.ids import pinned
from zswarm.core.messages import PeerInfo, Report
from zswarm.core.peers import count_states, summarize_states
from zswarm.core.text import printable

PEER_HEAD = ("id", "name", "address", "state", "model", "load", "last seen", "rtt", "note")


def say(text: str, *, err: bool = False) -> None:
    """Everything the CLI prints: answers, peers' names, findings (core/text.py escapes
    the control characters a peer or a model could use to drive the terminal)."""
    typer.echo(printable(text, keep_lines=True), err=err)


#: a peer's note is shown whole up to this (it says why; a peer's text is bounded here)
MAX_NOTE_CHARS = 300


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def peer_row(p: PeerInfo) -> tuple[str, ...]:
    """One peer as table cells (the model name in full: it is how users tell models apart).

    Every cell is the peer's word: control characters are escaped (core/text.py)."""
    load = (f"q{p.load.queue_depth} idle {p.load.idle_workers}/{p.load.workers_ready}"
            if p.state in ("alive", "suspect") else "-")
    cells = (p.node_id[:12] or "-", p.name or "-", p.address, p.state, p.model_id or "-", load,
             "-" if p.last_seen_s is None else f"{p.last_seen_s:.1f}s ago",
             "-" if p.rtt_ms is None else f"{p.rtt_ms:.2f}ms",
             _cut(p.detail, MAX_NOTE_CHARS))  # demoted, incompatible, unreachable: why
    return tuple(printable(cell) for cell in cells)


def peer_text(peers: list[PeerInfo]) -> str:
    """Aligned plain columns (stable for scripts and logs)."""
    rows = [PEER_HEAD, *(peer_row(p) for p in peers)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(PEER_HEAD))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


_STATE_STYLE = {"alive": "green", "suspect": "yellow", "dead": "red", "unreachable": "red",
                "incompatible": "magenta", "left": "dim", "discovered": "cyan"}


def peer_table(peers: list[PeerInfo], *, title: str) -> Table:
    """The same rows as a rich table (``zswarm peers --watch``)."""
    table = Table(title=Text(title), title_justify="left", expand=False)
    for head in PEER_HEAD:
        table.add_column(head, overflow="fold")
    for p in peers:
        # Text, not markup: a peer's name or note is the peer's to choose ("[/]" included)
        cells = [Text(cell) for cell in peer_row(p)]
        cells[3].stylize(_STATE_STYLE.get(p.state, ""))
        table.add_row(*cells)
    return table


def peer_summary(peers: list[PeerInfo]) -> str:
    """'peers: 2 alive, 1 dead'."""
    return f"peers: {summarize_states(count_states(p.state for p in peers))}"


def peer_json(p: PeerInfo) -> dict[str, object]:
    return {"id": p.node_id, "name": p.name, "address": p.address, "state": p.state,
            "model": p.model_id, "load": msgspec.to_builtins(p.load),
            "last_seen_s": p.last_seen_s, "rtt_ms": p.rtt_ms, "source": p.source,
            "detail": p.detail, "reach": p.reach,
            # what --node, zswarm join and [federation] peers take
            "node_address": pinned(p.rpc, p.public) if p.rpc else None}


def key_state(fingerprint: str) -> str:
    return (f"on (fingerprint {fingerprint})" if fingerprint else
            "OFF: an open swarm, any host on the LAN can join and ask (see zswarm keygen)")


def explain(answer: str, report: Report, *, where: str = "") -> str:
    """``zswarm ask --explain``: the answer, then who answered (``where``) and who said what."""
    lines = [answer, ""] + ([f"answered by {where}"] if where else []) + [
             f"strategy {report.strategy}, winner #{report.winner}, "
             f"agreement {report.agreement:.2f}, {spent(report)}"]
    lines.append(f"{'#':>2}  {'node/worker':<20} {'score':>8} {'finish':<9} {'ms':>8} "
                 f"{'cached':>11}  text")
    for i, c in enumerate(report.candidates):
        mark = "*" if i == report.winner else " "
        score = "-" if c.score is None else f"{c.score:.3f}"
        who = printable(f"{c.node}/{c.worker}")
        cached = f"{c.cached_tokens}/{c.prompt_tokens}"  # prompt tokens the cache held
        lines.append(f"{i:>2}{mark} {who:<20} {score:>8} {c.finish_reason:<9} "
                     f"{c.latency_ms:>8.0f} {cached:>11}  {printable(_cut(c.text, 60))}")
    timings = ", ".join(f"{k} {v:.0f}" for k, v in report.timings.items())
    lines.append(f"timings: {timings}")
    for p in report.participants:
        detail = f" ({p.detail})" if p.detail else ""
        lines.append(printable(f"node {p.node}: asked {p.requested}, got {p.received}, "
                               f"{p.outcome}{detail}"))
    if report.note:
        lines.append(printable(f"note: {report.note}"))
    return "\n".join(lines)


def spent(report: Report) -> str:
    """How many candidates an answer used: "5 of a budget of 16 candidates, 2 waves,
    stopped: settled", or "8 of 8 candidates"."""
    used = len(report.candidates)
    if not report.budget:
        return f"{used} of {report.expected} candidates"
    waves = f"{report.waves} wave" + ("s" if report.waves != 1 else "")
    return f"{used} of a budget of {report.budget} candidates, {waves}, stopped: {report.stop}"


def as_json(answer: str, report: Report, *, where: str = "") -> str:
    """``zswarm ask --json`` (``answered_by``: the node's endpoint, or in-process)."""
    return json.dumps({
        "answer": answer,
        "answered_by": where,
        "strategy": report.strategy,
        "winner": report.winner,
        "agreement": report.agreement,
        "used": len(report.candidates),
        "budget": report.budget or None,
        "waves": report.waves,
        "stop": report.stop or None,
        "candidates": [
            {"node": c.node, "node_id": c.node_id, "worker": c.worker, "text": c.text,
             "score": c.score, "model_id": c.model_id or None,
             "finish_reason": c.finish_reason, "latency_ms": c.latency_ms,
             "prompt_tokens": c.prompt_tokens, "cached_tokens": c.cached_tokens}
            for c in report.candidates
        ],
        "timings": report.timings,
        "note": report.note,
        "participants": [msgspec.to_builtins(p) for p in report.participants],
    }, ensure_ascii=False)
