"""What a person is told about the swarm at start-up: the peers found, or what to check.

``report_first_peers`` waits a couple of heartbeat intervals after the node is
ready (a deadline, not synchronisation: mDNS answers and first heartbeats arrive
in that time) and logs one line: the peers by state and name, or "no peers yet:"
with the first thing to check for this configuration. ``zswarm doctor`` checks
the same things in depth.
"""

from __future__ import annotations

import ipaddress
import logging

import trio

from zswarm.config import Config
from zswarm.core.messages import PeerInfo
from zswarm.core.peers import count_states, summarize_states
from zswarm.net.addresses import loopback_fix
from zswarm.runtime.context import Peers

log = logging.getLogger("zswarm.node")

#: the report waits this many heartbeat intervals, and at least MIN_WAIT_S
INTERVALS = 2
MIN_WAIT_S = 1.5


def peers_report(config: Config, peers: list[PeerInfo], address: str,
                 foreign: list[str] | None = None) -> tuple[bool, list[str]]:
    """(any peer alive, the lines to log): 'peers: 2 alive (alive: b, c)', or 'no peers
    yet (...); what to check:' and one line per thing to check, the likeliest cause first:
    ``foreign``, nodes of this swarm's name seen with another swarm key (or none)."""
    fed = config.federation
    alive = [p.name for p in peers if p.state == "alive"]
    problems = [f"{p.name or p.address}: {p.state}" + (f" ({p.detail})" if p.detail else "")
                for p in peers if p.state in ("incompatible", "unreachable", "dead")]
    counts = summarize_states(count_states(p.state for p in peers))
    if alive:
        line = f"peers: {counts} (alive: {', '.join(alive)})"
        return True, [line + (f"; {'; '.join(problems)}" if problems else "")]
    hints = [f"{what}: every member needs the same [security] swarm_key_file (zswarm "
             "doctor shows each key's fingerprint)" for what in foreign or ()]
    hints += problems
    if fed.discovery != "static":
        if ipaddress.ip_address(address).is_loopback:
            hints.append(f"this node listens on {address} (loopback), so only nodes on this "
                         f"machine can find it: {loopback_fix(config.node.bind)}")
        key = " and the same swarm key" if config.security.swarm_key_file else ""
        hints.append(f"no node of swarm {fed.swarm!r} answered over mDNS from {address}: "
                     f"does another machine run `zswarm node` with [federation] swarm = "
                     f"{fed.swarm!r}{key}?")
        hints.append("then run `zswarm doctor` on both (it checks multicast, ports and "
                     "firewalls)")
    elif not fed.peers:
        hints.append("discovery is \"static\" and [federation] peers is empty: add "
                     "--peer 'tcp://HOST:17617?key=KEY' (the address it prints at start) or set "
                     "discovery = \"both\"")
    return False, [f"no peers yet ({counts}); what to check:", *(f"  {h}" for h in hints)]


async def report_first_peers(config: Config, peers: Peers, address: str) -> None:
    """Log ``peers_report`` once, a couple of heartbeat intervals after start-up."""
    interval_s = config.federation.heartbeat_interval_s
    await trio.sleep(max(MIN_WAIT_S, INTERVALS * interval_s))
    found, lines = peers_report(config, peers.peers(), address, peers.foreign())
    for line in lines:  # a line each: a log line stays readable in a terminal
        (log.info if found else log.warning)("%s", line)
