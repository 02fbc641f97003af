"""Terminal views of peers: whatever a peer calls itself is shown as text, never as markup."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from zswarm.core.messages import Load, PeerInfo
from zswarm.views import peer_table, peer_text


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
