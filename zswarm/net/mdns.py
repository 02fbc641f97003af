"""mDNS (python-zeroconf): advertise this node as ``_zswarm._tcp.local.`` and browse for others.

Owns the Zeroconf instance, the TXT record format and the translation of
zeroconf's callbacks (which run in zeroconf's threads) into Found/Gone events on
a trio channel. Decides nothing about peers (core/peers.py does).

Records are untrusted: a card is built from a TXT record only through
core/claims.py (msgspec constraints, endpoints at the resolved IPv4 address with
ports 1-65535); a bad record is dropped and counted. At most MAX_PENDING services
are being resolved at once and the trio channel is bounded: a flood of records
costs records, not memory. The TXT record carries no secret: at most the public
fingerprint of the swarm key (``key``), so a node can tell "another swarm".

Zeroconf listens and sends only on the node's bind address, never on every
interface. Registration skips name probing (``cooperating_responders=True``):
probing costs ~1.3 s before a node can be seen, and instance names here are
unique by construction (they contain the node id), so there is nothing to probe
for. That is how discovery gets under 0.5 s (measured in bench/consensus_latency.py).
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import trio
from zeroconf import Error as ZeroconfError
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from zswarm.core.claims import card_from_txt
from zswarm.core.messages import PROTOCOL_VERSION, NodeCard
from zswarm.core.peers import endpoint_host
from zswarm.errors import RemoteProtocolError
from zswarm.net.guard import DropCounter, MessageGuard

log = logging.getLogger(__name__)

SERVICE_TYPE = "_zswarm._tcp.local."
#: services being resolved at once; more are dropped until some finish
MAX_PENDING = 64


@dataclass(frozen=True)
class Found:
    card: NodeCard
    address: str
    proto: int
    service: str


@dataclass(frozen=True)
class Gone:
    service: str


MdnsEvent = Found | Gone
MdnsEventSink = Callable[[MdnsEvent], None]


def service_name(card: NodeCard) -> str:
    label = re.sub(r"[^A-Za-z0-9-]", "-", card.name)[:40].strip("-") or "node"
    return f"{label}-{card.node_id[:12]}.{SERVICE_TYPE}"


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def txt_record(card: NodeCard) -> dict[str, str]:
    return {"id": card.node_id, "name": card.name, "proto": str(PROTOCOL_VERSION),
            "model": card.model_id, "workers": str(card.workers), "hw": card.hardware,
            "pub": str(_port(card.pub)), "rpc": str(_port(card.rpc)), "http": str(card.http),
            "swarm": card.swarm, "pk": card.public, **({"key": card.key} if card.key else {})}


def card_from_info(info: ServiceInfo) -> tuple[NodeCard, str, int]:
    """(card, address, protocol version) from a resolved service; RemoteProtocolError if bad."""
    props = {k.decode(errors="replace"): (v or b"").decode(errors="replace")
             for k, v in (info.properties or {}).items() if isinstance(k, bytes)}
    addresses = info.parsed_addresses(IPVersion.V4Only)
    if not addresses:
        raise RemoteProtocolError("no IPv4 address", reason="bad-record")
    card, proto = card_from_txt(props, addresses[0])
    return card, addresses[0], proto


class Mdns:
    """One Zeroconf instance on one interface address; blocking calls, run them in a thread."""

    def __init__(self, address: str, drops: DropCounter | None = None) -> None:
        self.address = address
        self.drops = drops or DropCounter("mdns")
        self.zc = Zeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
        self._browser: ServiceBrowser | None = None
        #: no new events or resolutions (closing; those in flight still deliver)
        self._stopping = threading.Event()
        #: services being resolved -> whether another event came meanwhile (resolve again)
        self._pending: dict[str, bool] = {}
        self._lock = threading.Lock()
        # resolving a service can wait on the network: never block zeroconf's browser thread
        self._resolvers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="zswarm-mdns")

    def advertise(self, card: NodeCard, *, probe: bool = False) -> None:
        """Register our record; ``probe=True`` is zeroconf's default name probing (slower)."""
        host = socket.inet_aton(endpoint_host(card.rpc))
        info = ServiceInfo(SERVICE_TYPE, service_name(card), addresses=[host],
                           port=_port(card.rpc), properties=txt_record(card),
                           server=f"zswarm-{card.node_id[:16]}.local.")
        self.zc.register_service(info, cooperating_responders=not probe)

    def browse(self, on_event: MdnsEventSink) -> None:
        def resolve(name: str) -> None:
            try:
                with MessageGuard(self.drops):
                    info = ServiceInfo(SERVICE_TYPE, name)
                    if not info.load_from_cache(self.zc) and not info.request(self.zc, 2000):
                        log.debug("mdns: %s did not resolve", name)
                        return
                    card, address, proto = card_from_info(info)
                    on_event(Found(card, address, proto, name))
            finally:
                with self._lock:
                    again = self._pending.pop(name, False) and not self._stopping.is_set()
                    if again:
                        self._pending[name] = False
                if again:
                    self._resolvers.submit(resolve, name)

        def on_change(zeroconf: Zeroconf, service_type: str, name: str,
                      state_change: ServiceStateChange) -> None:
            if self._stopping.is_set():
                return
            with MessageGuard(self.drops):
                if state_change is ServiceStateChange.Removed:
                    on_event(Gone(name))
                    return
                with self._lock:
                    if name in self._pending:
                        self._pending[name] = True  # resolve once more when this one ends
                        return
                    if len(self._pending) >= MAX_PENDING:
                        raise RemoteProtocolError(f"{MAX_PENDING} services resolving already",
                                                  reason="flood")
                    self._pending[name] = False
                self._resolvers.submit(resolve, name)

        self._browser = ServiceBrowser(self.zc, SERVICE_TYPE, handlers=[on_change])

    def close(self) -> None:
        """Stop browsing, let resolutions in flight finish (at most their 2 s), send goodbyes
        for our records, close the sockets."""
        self._stopping.set()
        if self._browser is not None:
            self._browser.cancel()
        self._resolvers.shutdown(wait=True, cancel_futures=True)
        self.zc.unregister_all_services()
        self.zc.close()


async def serve_mdns(address: str, card: NodeCard | None,
                     events: trio.MemorySendChannel[MdnsEvent], drops: DropCounter | None = None,
                     *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Advertise ``card`` (unless None) and browse; events go to ``events`` until cancelled.

    When ``events`` is full, further events are dropped (counted as ``queue-full``).
    """
    token = trio.lowlevel.current_trio_token()
    drops = drops or DropCounter("mdns")

    def post(event: MdnsEvent) -> None:
        try:
            trio.from_thread.run_sync(events.send_nowait, event, trio_token=token)
        except trio.WouldBlock:
            drops.drop("queue-full")
        except (trio.RunFinishedError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def start() -> Mdns:
        mdns = Mdns(address, drops)
        try:
            mdns.browse(post)
        except BaseException:
            mdns.close()
            raise
        return mdns

    try:
        mdns = await trio.to_thread.run_sync(start)
    except OSError as exc:
        log.error("mdns: cannot start on %s: %s; discovery is off (static peers still work)",
                  address, exc)
        task_status.started()
        await trio.sleep_forever()
        return
    task_status.started()  # browsing; the node need not wait for its announcements to go out
    try:
        if card is not None:
            try:
                await trio.to_thread.run_sync(mdns.advertise, card)
                log.debug("mdns: advertising %s on %s", service_name(card), address)
            except (OSError, ZeroconfError) as exc:
                log.error("mdns: cannot advertise on %s: %s; peers will not find this node "
                          "by mDNS (it still finds them, and static peers work)", address, exc)
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await trio.to_thread.run_sync(mdns.close, abandon_on_cancel=True)


def browse_for(address: str, seconds: float, drops: DropCounter | None = None) -> list[Found]:
    """Blocking: browse for ``seconds`` and return every node that answered (zswarm peers
    --browse, zswarm doctor); records that do not parse are counted in ``drops``."""
    found: dict[str, Found] = {}
    lock = threading.Lock()

    def on_event(event: MdnsEvent) -> None:
        with lock:
            if isinstance(event, Found):
                found[event.service] = event
            else:
                found.pop(event.service, None)

    mdns = Mdns(address, drops)
    try:
        mdns.browse(on_event)
        time.sleep(seconds)  # the user asked to listen this long
    finally:
        mdns.close()
    with lock:
        return list(found.values())
