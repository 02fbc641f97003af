"""Terminal views of peers: whatever a peer calls itself is shown as text, never as markup."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from zswarm.core.messages import Load, PeerInfo, Report, ReportCandidate
from zswarm.views import explain, peer_table, peer_text


def peer(name: str, model: str = "m", detail: str = "") -> PeerInfo:
    return PeerInfo(node_id="abc", name=name, address="10.0.0.2", state="alive", model_id=model,
                    load=Load(), last_seen_s=0.5, rtt_ms=1.0, source="mdns", detail=detail)


def render(peers: list[PeerInfo], title: str = "t") -> str:
    with open(os.devnull, "w") as sink:
        console = Console(width=400, record=True, file=sink)
        console.print(peer_table(peers, title=title))
    return console.export_text()


def test_markup_in_a_peer_name_is_shown_as_typed():
    out = render([peer("[/]evil[bold]", model="SmolLM2-135M-Instruct.Q4_1.gguf@abcdef0123456789",
                       detail="[red]x[/]")], title="a [/] title")
    assert "[/]evil[bold]" in out and "[red]x[/]" in out and "a [/] title" in out
    assert "SmolLM2-135M-Instruct.Q4_1.gguf@abcdef0123456789" in out  # the model in full
    assert "SmolLM2-135M-Instruct.Q4_1.gguf@abcdef0123456789" in peer_text([peer("b", model=(
        "SmolLM2-135M-Instruct.Q4_1.gguf@abcdef0123456789"))])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80), st.text(max_size=200))
def test_any_peer_text_renders(name, model, detail):
    render([peer(name, model, detail)], title=name)
    peer_text([peer(name, model, detail)])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80), st.text(max_size=200))
def test_no_peer_text_reaches_the_terminal_raw(name, model, detail):
    """Whatever a peer calls itself: no ESC, no newline of its own, no bidi control."""
    text = peer_text([peer(name, model, detail)])
    assert text.count("\n") == 1  # the header and one row
    assert not any(ch < " " and ch != "\n" or "\x7f" <= ch <= "\x9f" for ch in text)
    report = Report(strategy="majority", winner=0, agreement=1.0, expected=1, note=detail,
                    candidates=[ReportCandidate(node=name, worker=model, text=detail,
                                                score=None, finish_reason="stop",
                                                latency_ms=1.0)])
    lines = explain("42", report).split("\n")
    assert len(lines) == 6 + bool(detail)  # the note's line, only if there is a note
    assert not any(ch < " " for line in lines for ch in line)


def test_zswarm_ask_escapes_what_a_model_or_peer_says(tmp_path):
    """An answer that carries OSC 52 (writes the clipboard) and a screen clear is printed
    with those escaped; its own lines stay lines."""
    from typer.testing import CliRunner

    from zswarm.cli import app
    from zswarm.testing.cluster import node_config

    evil = "\x1b]52;c;cm0gLXJm\x07forty-two\x1b[2J\nsecond line"
    cfg = node_config(tmp_path, "a", swarm="views-test", answers=[evil])
    result = CliRunner().invoke(app, ["ask", "hi", "--config", str(cfg), "--local"])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert result.output.splitlines() == ["\\u001b]52;c;cm0gLXJm\\u0007forty-two\\u001b[2J",
                                          "second line"]
