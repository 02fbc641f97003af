"""Ask a running zswarm node from Python and print who said what.

    .venv/bin/zswarm node --config swarm.toml &      # or examples/two_nodes_on_one_machine
    .venv/bin/python examples/python_client.py 'tcp://127.0.0.1:17617?key=...' "What is 7 * 6?"

The node's address (its endpoint and the key it answers with) is in its start-up lines
and in node.json; without an address, the node started from ./swarm.toml is asked.

The client keeps one ZeroMQ connection to the node (zswarm.client.NodeClient); the
node fans the request out to its peers and returns the answer with its report.
"""

from __future__ import annotations

import sys
from pathlib import Path

from zswarm.client import NodeClient, node_json
from zswarm.config import load_config
from zswarm.core.messages import ChatMessage, GenerateRequest, SamplingParams


def main() -> None:
    if len(sys.argv) > 1:
        endpoint = sys.argv[1]
    else:  # the node started with ./swarm.toml (its node.json)
        found = node_json(load_config(Path("swarm.toml")))
        if found is None:
            sys.exit("no node runs with ./swarm.toml: give its address, 'tcp://...?key=...'")
        endpoint = found[1]
    question = sys.argv[2] if len(sys.argv) > 2 else "What is 7 * 6?"
    request = GenerateRequest(
        messages=(ChatMessage(role="system", content="Answer with a number."),
                  ChatMessage(role="user", content=question)),
        params=SamplingParams(max_tokens=32, temperature=0.7), n=3)
    with NodeClient(endpoint) as node:
        status = node.status()
        print(f"node {status.card.name} serves {status.card.model_id}")
        for peer in node.peers().peers:
            print(f"  peer {peer.name:<12} {peer.state:<8} rtt {peer.rtt_ms} ms")
        reply = node.ask(request, strategy="majority", deadline_ms=120_000)
    print(f"\nanswer: {reply.answer.strip()}")
    for i, cand in enumerate(reply.report.candidates):
        mark = "*" if i == reply.report.winner else " "
        print(f"{mark} {cand.node}/{cand.worker}: {' '.join(cand.text.split())[:70]}")
    for p in reply.report.participants:
        print(f"  {p.node}: asked {p.requested}, got {p.received} ({p.outcome}) {p.detail}")


if __name__ == "__main__":
    main()
