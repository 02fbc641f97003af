"""What a peer may claim: pure checks on mDNS records, heartbeats and votes.

Everything a peer says about itself is untrusted. These functions turn it into
something the node may act on, or raise RemoteProtocolError with a ``reason``
(the label under which the message is counted as dropped):

- endpoints are only ``tcp://<IPv4 literal>:<1-65535>``, and a peer's endpoints are
  built from the address mDNS (or the static config) resolved, never taken from
  what the peer wrote;
- cards are built with ``msgspec.convert`` so every constraint of NodeCard holds
  (a bare constructor skips them);
- a vote must come from the node it was sent to, with at most the candidates asked
  for, each no longer than asked, and per-token log-probabilities only if asked; each
  candidate is named after the link it came over, not after itself;
- load figures and heartbeat intervals are clamped to what the node can believe.

Pure: no I/O; the runtime (runtime/federation.py) calls these.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import msgspec

from zswarm.core.ids import is_public, node_id_of
from zswarm.core.messages import (
    MAX_CHARS_PER_TOKEN,
    Candidate,
    GenerateRequest,
    Load,
    NodeCard,
    Vote,
)
from zswarm.errors import RemoteProtocolError

#: a peer's heartbeat interval is believed up to this (or this node's own, if longer)
MAX_PEER_INTERVAL_S = 10.0


def _digits(text: str, most: int) -> bool:
    """ASCII digits only ("²".isdigit() is True, but int("²") raises), at most ``most``."""
    return text.isascii() and text.isdigit() and len(text) <= most


def ipv4_literal(host: str) -> str:
    """``host`` if it is a dotted IPv4 address (no names, no IPv6, no wildcards)."""
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise RemoteProtocolError(f"not an IPv4 address: {host[:64]!r}", reason="bad-endpoint"
                                  ) from None
    if ip.is_unspecified or ip.is_multicast:
        raise RemoteProtocolError(f"not a unicast address: {host}", reason="bad-endpoint")
    return str(ip)


def port_number(value: object) -> int:
    """A TCP port 1-65535 from an int or a decimal string."""
    text = str(value)
    if not _digits(text, 5) or not 1 <= int(text) <= 65535:
        raise RemoteProtocolError(f"not a port (1-65535): {text[:16]!r}", reason="bad-endpoint")
    return int(text)


def tcp_endpoint(host: str, port: object) -> str:
    return f"tcp://{ipv4_literal(host)}:{port_number(port)}"


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """'tcp://10.0.0.2:17617' -> ('10.0.0.2', 17617); RemoteProtocolError for anything else."""
    if not endpoint.startswith("tcp://") or ":" not in endpoint[6:]:
        raise RemoteProtocolError(f"not a tcp://host:port endpoint: {endpoint[:80]!r}",
                                  reason="bad-endpoint")
    host, port = endpoint[6:].rsplit(":", 1)
    return ipv4_literal(host), port_number(port)


def card_at(card: NodeCard, address: str) -> NodeCard:
    """The card with its endpoints moved to ``address`` (the ports are the peer's)."""
    _, rpc_port = split_endpoint(card.rpc)
    _, pub_port = split_endpoint(card.pub)
    return msgspec.structs.replace(card, rpc=tcp_endpoint(address, rpc_port),
                                   pub=tcp_endpoint(address, pub_port))


def card_from_txt(props: Mapping[str, str], address: str) -> tuple[NodeCard, int]:
    """(card, protocol version) from an mDNS TXT record resolved at ``address``."""
    proto_text = props.get("proto", "0")
    proto = int(proto_text) if _digits(proto_text, 6) else -1
    try:
        fields = {
            "node_id": props["id"], "name": props.get("name", ""),
            "model_id": props.get("model", ""), "workers": int(props.get("workers", "0")),
            "rpc": tcp_endpoint(address, props["rpc"]), "pub": tcp_endpoint(address, props["pub"]),
            "http": int(props.get("http", "0")), "swarm": props.get("swarm", "default"),
            "hardware": props.get("hw", ""), "key": props.get("key", ""),
            "public": props.get("pk", ""),
        }
        return msgspec.convert(fields, NodeCard), proto
    except (KeyError, ValueError, msgspec.ValidationError) as exc:
        raise RemoteProtocolError(f"bad TXT record: {type(exc).__name__}: {str(exc)[:200]}",
                                  reason="bad-record") from None


def believable_load(load: Load, card: NodeCard) -> Load:
    """No more ready or idle workers than the card says the node has."""
    ready = min(load.workers_ready, card.workers)
    idle = min(load.idle_workers, ready)
    if (ready, idle) == (load.workers_ready, load.idle_workers):
        return load
    return msgspec.structs.replace(load, workers_ready=ready, idle_workers=idle)


def believable_interval_s(claimed_ms: int, own_s: float) -> float:
    """A peer's heartbeat interval, at least ours and at most MAX_PEER_INTERVAL_S (or ours)."""
    return min(max(claimed_ms / 1000, own_s), max(own_s, MAX_PEER_INTERVAL_S))


def accept_vote(vote: Vote, *, node_id: str, name: str, asked: GenerateRequest,
                model_id: str = "") -> list[Candidate]:
    """The candidates of a vote from ``node_id``, each named after the link (``node_id``,
    ``name``) and marked with the ``model_id`` of its card; or RemoteProtocolError.

    The codec has checked every field's range (finite log-probabilities <= 0, text
    length); this checks what only the asker knows: at most the candidates asked for,
    at most ``max_tokens`` tokens each (and MAX_CHARS_PER_TOKEN characters per token),
    and per-token log-probabilities only when they were asked for (dropped otherwise).
    """
    if vote.node_id != node_id:
        raise RemoteProtocolError(f"a vote signed {vote.node_id!r} came over the link to "
                                  f"{node_id!r}", reason="bad-vote")
    if len(vote.candidates) > asked.n:
        raise RemoteProtocolError(f"{len(vote.candidates)} candidates for {asked.n} asked",
                                  reason="bad-vote")
    max_tokens = asked.params.max_tokens
    for cand in vote.candidates:
        if cand.tokens > max_tokens or len(cand.text) > max_tokens * MAX_CHARS_PER_TOKEN \
                or len(cand.token_logprobs or ()) > max_tokens:
            raise RemoteProtocolError(
                f"a candidate of {cand.tokens} tokens, {len(cand.text)} characters and "
                f"{len(cand.token_logprobs or ())} log-probabilities for max_tokens "
                f"{max_tokens}", reason="oversized-vote")
    keep_logprobs = asked.params.logprobs
    return [msgspec.structs.replace(c, node=name, node_id=node_id, model_id=model_id,
                                    token_logprobs=c.token_logprobs if keep_logprobs else None)
            for c in vote.candidates]


def unproven(card: NodeCard, public: str | None = None) -> str:
    """Why ``card`` does not say who it is ("" = its id derives from its key, and that
    key is ``public``, the one the link it came over is pinned to, when given)."""
    if not is_public(card.public):
        return "shows no node key (a zswarm from before ids were keys?)"
    if node_id_of(card.public) != card.node_id:
        return f"claims the id {card.node_id}, which is not its key's"
    if public is not None and card.public != public:
        return f"answers as {card.node_id}, another node than the one asked"
    return ""


def foreign(card: NodeCard, me: NodeCard) -> str:
    """Why the node of ``card`` is not of this node's swarm ("" = it is one of ours).

    The one same-swarm rule: the same swarm name and the same swarm key fingerprint
    (no key on both sides is an open swarm). Whether the card is its key's is
    ``unproven``, checked where a card arrives.
    """
    if card.swarm != me.swarm:
        return f"is in swarm {card.swarm!r}, not {me.swarm!r}"
    if card.key != me.key:
        if me.key:
            return "uses another swarm key" if card.key else "has no swarm key"
        return "uses a swarm key and this node has none"
    return ""
