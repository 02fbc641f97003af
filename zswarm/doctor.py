"""``zswarm doctor``: why two machines do not find each other, checked and explained.

Owns the checks and their plain-words findings (each with a fix): the bind address
and its interface; multicast on it and a route for 224.0.0.251 (mDNS); what answers
mDNS within a couple of seconds and which of those nodes this one could use; the
configured ports (free, or taken by whom); static peers answering a StatusRequest;
discovered nodes' RPC and heartbeat ports (seen over mDNS but unreachable is the
firewall symptom); duplicate node ids; how the running node's members reach it (a
node whose peers reach it only over links it opened accepts no inbound connections:
what that costs and how to open it); and the model loading in a worker process and
generating one token (a llama.cpp build for the wrong CPU dies there with SIGILL).

Traffic goes only where the node itself would send it: mDNS on the bind interface,
TCP to the configured static peers and to nodes that advertised themselves.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass

import msgspec
import psutil
import trio

from zswarm import client, cores, pull, statedir
from zswarm.asks import Ask
from zswarm.config import Config, override
from zswarm.core.claims import foreign
from zswarm.core.ids import pinned, unpinned
from zswarm.core.messages import PROTOCOL_VERSION, ChatMessage, GenerateRequest, NodeCard, SamplingParams
from zswarm.core.text import printable
from zswarm.engines.loader import model_id
from zswarm.errors import WorkerCrashed, ZswarmError
from zswarm.net.addresses import (
    IFF_LOOPBACK,
    IFF_MULTICAST,
    IFF_UP,
    choose_bind_address,
    interfaces,
    loopback_fix,
)
from zswarm.net.guard import DropCounter
from zswarm.net.mdns import Found, browse_for
from zswarm.net.security import SwarmKey, swarm_key
from zswarm.runtime.local import local_node

MDNS_GROUP = "224.0.0.251"
#: how long mDNS is browsed (responders answer a query at most once a second)
BROWSE_S = 2.0
#: a peer that takes longer than this to answer a StatusRequest is called unreachable
PROBE_TIMEOUT_S = 2.0
#: advertised nodes probed at once, at most, and in all; and the time all probes get
MAX_PROBES = 16
MAX_PROBED = 64
PROBES_TOTAL_S = 6.0

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok, warn, FAIL, info
    message: str
    fix: str = ""


def _bind(config: Config) -> tuple[str, Iterator[Finding]]:
    setting = config.node.bind
    address = choose_bind_address(setting)
    why = ("set in [node] bind" if setting != "auto" else
           "bind = \"auto\": the first private LAN address of this host"
           if address != "127.0.0.1" else "bind = \"auto\" found no private LAN address")
    return address, _bind_findings(address, why, loopback_fix(setting))


def _bind_findings(address: str, why: str, loopback_fix: str) -> Iterator[Finding]:
    named = {a: (name, flags) for name, (a, flags) in interfaces().items()}
    if address not in named:
        if address == "0.0.0.0":
            yield Finding("bind", WARN, "listens on every interface (0.0.0.0); mDNS needs "
                          "one address to advertise", "set [node] bind to this machine's LAN "
                          "address, or \"auto\"")
            return
        yield Finding("bind", FAIL, f"{address} ({why}) is not an address of this machine",
                      "set [node] bind to one of: " + ", ".join(sorted(named)) + " or \"auto\"")
        return
    name, flags = named[address]
    if flags & IFF_LOOPBACK:
        yield Finding("bind", WARN, f"{address} on {name} ({why}): loopback, so only nodes "
                      "on this machine can find or reach this node", loopback_fix)
        return
    yield Finding("bind", OK, f"{address} on interface {name} ({why})")
    if not flags & IFF_UP:
        yield Finding("multicast", FAIL, f"interface {name} is down", f"ip link set {name} up")
    elif not flags & IFF_MULTICAST:
        yield Finding("multicast", FAIL, f"interface {name} has multicast off: mDNS cannot "
                      "work on it", f"ip link set {name} multicast on")


def _route(address: str) -> Finding:
    """Which source address the kernel uses for the mDNS group (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((MDNS_GROUP, 5353))
            source = s.getsockname()[0]
    except OSError as exc:
        return Finding("multicast", FAIL, f"no route for {MDNS_GROUP} (mDNS): "
                       f"{exc.strerror or exc}", "add one: ip route add 224.0.0.0/4 dev "
                       "<your LAN interface>")
    if source != address and not ipaddress.ip_address(address).is_loopback:
        return Finding("multicast", INFO, f"the route for {MDNS_GROUP} leaves from {source}, "
                       f"not {address}; zswarm sends mDNS on {address}'s interface itself")
    return Finding("multicast", OK, f"route for {MDNS_GROUP} via {source}")


def _owner(port: int) -> str:
    """'pid 123 (python -m zswarm node)' for the process listening on TCP ``port``, as far
    as this user may look ("" when nothing listens there)."""
    hidden = "another process (not visible to this user)"
    try:
        listening = [c for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]
    except psutil.Error:
        return hidden
    if not listening:
        return ""
    pid = listening[0].pid
    if pid is None:
        return hidden
    try:
        cmd = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return hidden
    return f"pid {pid} ({cmd[:80]})"


def _ports(config: Config, address: str, running_pid: int | None) -> Iterator[Finding]:
    wanted = {"rpc": config.ports.rpc}
    if config.http.enabled:
        wanted["http"] = config.ports.http
    if config.federation.enabled:
        wanted["pub"] = config.ports.pub
    for name, port in wanted.items():
        if port == 0:
            yield Finding("ports", OK, f"ports.{name} = 0: any free port")
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
                yield Finding("ports", OK, f"ports.{name} {port} is free on {address}")
                continue
            except OSError as exc:
                error = exc.strerror or str(exc)
        owner = _owner(port)
        if running_pid is not None and owner.startswith(f"pid {running_pid} "):
            yield Finding("ports", OK, f"ports.{name} {port} is held by the node running with "
                          f"this config (pid {running_pid})")
            continue
        yield Finding("ports", FAIL, f"ports.{name} {port} on {address}: {error}"
                      + (f", taken by {owner}" if owner else ""),
                      f"stop that process, or set [ports] {name} to a free port (0 = any)")


def ports_taken(config: Config) -> list[Finding]:
    """The configured ports another process holds on the bind address (`zswarm join`
    checks them before it pulls a model)."""
    address = choose_bind_address(config.node.bind)
    return [f for f in _ports(config, address, None) if f.status == FAIL]


def _probe(endpoint: str, key: SwarmKey | None) -> tuple[NodeCard | None, float, str]:
    t0 = time.perf_counter()
    try:
        card = client.status(endpoint, timeout_s=PROBE_TIMEOUT_S, key=key).card
        return card, (time.perf_counter() - t0) * 1000, ""
    except ZswarmError as exc:
        return None, 0.0, str(exc)


def _tcp_open(endpoint: str) -> bool:
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            return True
    except (OSError, ValueError):
        return False


def _reach(card: NodeCard, key: SwarmKey | None) -> tuple[NodeCard | None, float, str, bool]:
    """(status reply's card, ms, error, heartbeat port open) for one advertised node."""
    peer, ms, error = _probe(pinned(card.rpc, card.public), key)
    return peer, ms, error, peer is not None and _tcp_open(card.pub)


def _reach_all(cards: list[NodeCard], key: SwarmKey | None
               ) -> list[tuple[NodeCard | None, float, str, bool] | None]:
    """``_reach`` for each card, MAX_PROBES at once, all within PROBES_TOTAL_S (None: not
    checked in time). A LAN full of records costs doctor seconds, not minutes."""
    pool = ThreadPoolExecutor(max_workers=MAX_PROBES, thread_name_prefix="doctor-probe")
    futures = [pool.submit(_reach, card, key) for card in cards]
    done, _ = wait(futures, timeout=PROBES_TOTAL_S)
    pool.shutdown(wait=False, cancel_futures=True)  # the stragglers end by their own timeout
    return [f.result() if f in done else None for f in futures]


def _static_peers(config: Config, key: SwarmKey | None, me: NodeCard) -> Iterator[Finding]:
    fed = config.federation
    if not fed.enabled or fed.discovery == "mdns" or not fed.peers:
        return
    for endpoint in fed.peers:
        card, ms, error = _probe(endpoint, key)
        if card is None:
            yield Finding("static peers", FAIL, f"{endpoint} did not answer a StatusRequest "
                          f"within {PROBE_TIMEOUT_S:.0f} s ({error})",
                          "check that `zswarm node` runs there, that its RPC port is open in "
                          "its firewall, and that both use the same swarm key (a wrong key "
                          "looks like no answer)")
            continue
        why = foreign(card, me)
        yield (Finding("static peers", WARN, f"{endpoint} is {card.name} but not a peer: it "
                       f"{why}", "use the same [federation] swarm and swarm key on both")
               if why else Finding("static peers", OK, f"{endpoint} is {card.name} "
                                   f"({card.model_id}), answered in {ms:.1f} ms"))


def _discovered(config: Config, found: list[Found], drops: DropCounter, me: NodeCard,
                key: SwarmKey | None, running_rpc: str | None, seconds: float
                ) -> Iterator[Finding]:
    fed = config.federation
    yield Finding("mdns", INFO if found else WARN,
                  f"{len(found)} zswarm node(s) answered mDNS within {seconds:g} s"
                  + (f"; {drops.total} record(s) that are not zswarm's format were ignored"
                     if drops.total else ""),
                  "" if found else "if another machine runs a node: same LAN segment (not a "
                  "guest Wi-Fi), UDP 5353 multicast allowed (client isolation and some "
                  "routers block it), or use static peers: --peer "
                  "'tcp://HOST:17617?key=KEY' (the address that node prints at start)")
    running = unpinned(running_rpc)[0] if running_rpc else None  # its endpoint
    by_id: dict[str, set[str]] = {}
    to_probe: list[tuple[str, NodeCard, bool]] = []
    for f in found:
        card = f.card
        by_id.setdefault(card.node_id, set()).add(card.rpc)
        if card.rpc == running:
            yield Finding("mdns", OK, f"this machine's node {card.name} is advertised "
                          f"({f.address})")
            continue
        name = f"{card.name} ({card.node_id[:12]}) at {f.address}"
        why = foreign(card, me)
        if why:
            yield Finding("mdns", INFO, f"{name}: not a peer, it {why}")
            continue
        if f.proto != PROTOCOL_VERSION:
            yield Finding("mdns", WARN, f"{name}: protocol {f.proto}, this node speaks "
                          f"{PROTOCOL_VERSION}", "run the same zswarm version on both")
            continue
        other = not pull.is_named(me.model_id, card.model_id)
        if other:
            yield Finding("mdns", INFO if not fed.same_model_only else WARN,
                          f"{name}: another model ({card.model_id})",
                          "" if not fed.same_model_only else "votes go only to nodes with the "
                          "same model (federation.same_model_only)")
        to_probe.append((name, card, other))
    if len(to_probe) > MAX_PROBED:
        yield Finding("reachability", WARN, f"{len(to_probe)} nodes of this swarm answered "
                      f"mDNS; only the first {MAX_PROBED} were probed",
                      "so many is unusual for a home or lab LAN: check for a flood of records")
        to_probe = to_probe[:MAX_PROBED]
    results = _reach_all([card for _, card, _ in to_probe], key)
    for (name, card, other), result in zip(to_probe, results, strict=True):
        if result is None:
            yield Finding("reachability", WARN, f"{name}: not checked, doctor's "
                          f"{PROBES_TOTAL_S:.0f} s for probes ran out")
            continue
        peer, ms, error, pub_open = result
        if peer is None:
            yield Finding("reachability", FAIL, f"{name} is seen over mDNS but its RPC port "
                          f"{card.rpc} does not answer ({error}): the firewall symptom",
                          "on that machine, allow TCP ports 17615-17617 (e.g. sudo ufw allow "
                          "17615:17617/tcp) or whatever [ports] it uses")
        elif not pub_open:
            yield Finding("reachability", FAIL, f"{name}: RPC answers but its heartbeat port "
                          f"{card.pub} does not accept connections, so this node would see it "
                          "as dead", "on that machine, allow TCP to its [ports] pub (17616)")
        elif not other:
            yield Finding("reachability", OK, f"{name}: RPC answered in {ms:.1f} ms, "
                          "heartbeat port open")
    for node_id, endpoints in by_id.items():
        if node_id == me.node_id and running not in endpoints or len(endpoints) > 1:
            yield Finding("node ids", FAIL, f"node id {node_id} is used by "
                          f"{len(endpoints)} node(s) at {', '.join(sorted(endpoints))}"
                          + (" and by this machine" if node_id == me.node_id else ""),
                          "a copied state dir: delete state_dir/node.key on all but one "
                          "(a new key, and id, is made at start)")


def _not_pulled(config: Config, want: str) -> Finding:
    """``[model] path = "swarm:..."`` before the node's first start pulled it."""
    peers = config.federation.peers
    said = f"[model] path = \"swarm:{want}\" is not pulled yet (into {pull.models_dir(config)})"
    if not peers:
        return Finding("model", FAIL, f"{said}, and there are no [federation] peers to pull "
                       "it from", "add the member it comes from to [federation] peers "
                       "(zswarm join writes one), or set [model] path to a GGUF file")
    return Finding("model", INFO, f"{said}: the node pulls it from {', '.join(peers)} at its "
                   "first start (zswarm node), and the model is checked then")


async def _model(config: Config) -> Finding:
    one = override(config, {"node": {"workers": 1}})
    request = GenerateRequest(messages=(ChatMessage(role="user", content="Say OK."),),
                              params=SamplingParams(max_tokens=1, temperature=0.0))
    t0 = time.perf_counter()
    try:
        async with local_node(one) as local:
            loaded = time.perf_counter()
            await local.coordinator.ask(Ask(request, "first_valid", 120_000))
    except ZswarmError as exc:
        fix = ("a worker that dies on the first token (SIGILL) runs a llama.cpp built for "
               "another CPU: rebuild with ./scripts/install.sh (portable flags, see README)"
               if isinstance(exc, WorkerCrashed) else "check [model] path, backend and "
               "memory_limit_mib (or path = \"default\" for the embedded model)")
        return Finding("model", FAIL, f"{exc.kind}: {exc}", fix)
    return Finding("model", OK, f"loaded in {loaded - t0:.1f} s and generated a token in a "
                   f"worker process ({(time.perf_counter() - loaded) * 1000:.0f} ms)")


def _running(config: Config) -> tuple[int | None, str | None]:
    """(pid, RPC endpoint) of the node running with this config, from its node.json."""
    written = client.node_json(config)
    if written is not None and client.alive(written[0]):
        return written
    return None, None  # none started, or that node is gone


def _inbound(config: Config, running_rpc: str | None, key: SwarmKey | None
             ) -> Iterator[Finding]:
    """What the running node's peers say about connections into it and out of it."""
    if running_rpc is None:
        return
    try:
        peers = client.peers(running_rpc, key=key, timeout_s=PROBE_TIMEOUT_S).peers
    except ZswarmError as exc:
        yield Finding("inbound", WARN, f"the running node at {running_rpc} did not list its "
                      f"peers: {exc}")
        return
    low, high = sorted((config.ports.pub, config.ports.rpc))
    opening = (f"open TCP ports {low} and {high} on this machine, e.g. `sudo ufw allow "
               f"{low}:{high}/tcp` or `sudo firewall-cmd --add-port={low}-{high}/tcp`"
               if low else "set fixed [ports] rpc and pub in the config (0 is a new port at "
               "each start), then open them in the firewall (e.g. `sudo ufw allow PORT/tcp`)")
    ours = [p.name for p in peers if p.reach == "our link" and p.state == "alive"]
    if ours:
        yield Finding(
            "inbound", WARN,
            f"{len(ours)} peer(s) ({', '.join(ours[:8])}) reach this node only over "
            "connections it opened: it accepts no inbound connections (a firewall?). It "
            "still serves and asks them, but a node that accepts none either cannot link "
            "to it, and each peer must be reached from here first",
            opening)
    elif any(p.state == "alive" for p in peers):
        yield Finding("inbound", OK, "peers connect to this node directly")
    for p in peers:
        if p.reach == "its link" and p.state == "alive":
            yield Finding("reachability", INFO, f"{p.name}: reached over its own link (it "
                          "accepts no inbound connections); it serves this node all the same")


def _cores(config: Config, running_pid: int | None) -> list[Finding]:
    """Other nodes of this machine, and whether their workers and this node's fit the cores
    (a node not running yet takes, with threads = 0, what the others leave: zswarm/cores.py)."""
    others = [n for n in cores.other_nodes() if n.pid != running_pid]
    if not others:
        return []
    if running_pid is None and config.model.threads == 0:
        config = msgspec.structs.replace(config, model=msgspec.structs.replace(
            config.model, threads=cores.share(others, config.node.workers)))
    said = cores.advice(config, others)
    total = cores.node_threads(config) + sum(n.threads for n in others)
    where = f"{len(others)} other zswarm node(s) on this machine (pid " + \
        ", ".join(str(n.pid) for n in others) + f"): {total} threads on {cores.cores()} cores"
    if said:
        return [Finding("cores", WARN, where, said.split(": ", 1)[-1])]
    return [Finding("cores", OK, where)]


def run_checks(config: Config, *, browse_s: float = BROWSE_S, check_model: bool = True
               ) -> list[Finding]:
    """Every check, in the order a person would look; ConfigError for a bad swarm key file."""
    key = swarm_key(config.security.swarm_key_file, source=config.source)
    fed = config.federation
    address, bind_findings = _bind(config)
    findings = list(bind_findings)
    if fed.enabled and fed.discovery != "static":
        findings.append(_route(address))
    running_pid, running_rpc = _running(config)
    want = pull.wanted(config)
    pulled = pull.pulled(config) if want is not None else None
    try:
        if want is not None and pulled is None:
            findings.append(_not_pulled(config, want))
            model, check_model = want, False  # join writes the model's id: peers compare
        else:
            if pulled is not None:
                config = pull.use_path(config, pulled)
            model = model_id(config.model)
    except ZswarmError as exc:
        findings.append(Finding("model", FAIL, f"{exc.kind}: {exc}", "check [model] path "
                                "(or path = \"default\" for the embedded default model)"))
        model, check_model = "", False
    me = NodeCard(node_id=statedir.node_id(config) or "-", name=config.node.name, model_id=model,
                  workers=config.node.workers, rpc="", pub="", swarm=fed.swarm,
                  key=key.fingerprint if key else "")
    findings += _ports(config, address, running_pid)
    findings += _cores(config, running_pid)
    if not fed.enabled:
        findings.append(Finding("federation", INFO, "federation is off: this node works alone",
                                "zswarm node --federation, or [federation] enabled = true"))
    else:
        findings += _static_peers(config, key, me)
        findings += _inbound(config, running_rpc, key)
        if fed.discovery != "static":
            drops = DropCounter("mdns")
            found = browse_for(address, browse_s, drops)
            findings += _discovered(config, found, drops, me, key, running_rpc, browse_s)
    if check_model:
        findings.append(trio.run(_model, config))
    return findings


def failed(findings: list[Finding]) -> bool:
    return any(f.status == FAIL for f in findings)


def render(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        # one line each: a message may quote what a record or a peer said
        lines.append(f"{f.status:<5} {f.check:<13} {printable(f.message)}")
        if f.fix:
            lines.append(f"{'':<19} fix: {printable(f.fix)}")
    problems = sum(f.status == FAIL for f in findings)
    warnings = sum(f.status == WARN for f in findings)
    lines.append(f"{problems} problem(s), {warnings} warning(s)" if problems or warnings
                 else "all checks passed")
    return "\n".join(lines)


def to_json(findings: list[Finding]) -> str:
    return json.dumps({"ok": not failed(findings), "findings": [asdict(f) for f in findings]},
                      ensure_ascii=False)
