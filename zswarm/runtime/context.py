"""What the servers of one node share, built once by the composition root (zswarm/node.py).

Owns: ``NodeContext`` - the config, this node's card, its life (the one state machine:
loading -> ready -> draining, or loading -> draining; ``ready()`` and ``drain()`` are
the only transitions, and ``refusal()`` is what every front door and /health say of a
state that takes no work), its stats and drop counters, the requests in flight (``InFlight``: a
drain waits for its "none left" event instead of polling) and the load figures
every server reports (``load()``); and ``Peers``, what the coordinator, the RPC
server and the HTTP shim may ask of the swarm, with ``NoPeers`` for a node that
does not federate; the local models and their workers are ``models`` (runtime/models.py).
runtime/federation.py implements ``Peers``; nobody else reads
its peer table.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio

from zswarm.config import Config
from zswarm.core.catalog import Holder
from zswarm.core.messages import (
    Candidate,
    GenerateRequest,
    Load,
    Message,
    NodeCard,
    NodeState,
    PeerInfo,
)
from zswarm.core.plan import NodeLoad
from zswarm.errors import (
    Draining,
    Loading,
    LocalProtocolError,
    Overloaded,
    PeerUnavailable,
    RemoteProtocolError,
)
from zswarm.net.guard import FrameDrops
from zswarm.net.security import Credentials, SwarmKey
from zswarm.runtime.models import Models
from zswarm.runtime.stats import NodeStats


class InFlight:
    """Requests being answered (RPC and HTTP alike); ``idle()`` returns once none are left."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = trio.Event()
        self._idle.set()

    def enter(self) -> None:
        if self.count == 0:
            self._idle = trio.Event()
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    async def idle(self) -> None:
        await self._idle.wait()


@dataclass(eq=False)
class NodeContext:
    config: Config
    card: NodeCard
    #: the node's models, loaded or not, and their workers (runtime/models.py)
    models: Models
    key: SwarmKey | None = None
    #: what its sockets show: its own key (its id) and the swarm key (net/security.py)
    creds: Credentials | None = None
    stats: NodeStats = field(default_factory=NodeStats)
    drops: FrameDrops = field(default_factory=FrameDrops)
    requests: InFlight = field(default_factory=InFlight)
    #: "loading" until the workers have the model, "draining" once shutting down (set by
    #: ``ready`` and ``drain`` only; a leaving node's last heartbeat says "leaving" on the
    #: wire: runtime/federation.py)
    state: NodeState = "loading"

    def ready(self) -> None:
        """The workers have the model: take work (loading -> ready)."""
        if self.state != "loading":
            raise LocalProtocolError(f"a {self.state} node cannot become ready")
        self.state = "ready"

    def drain(self) -> None:
        """Shutting down: take nothing new, finish what is in flight (from any state but
        draining; heartbeats say so, and every door refuses with ``Draining``)."""
        if self.state == "draining":
            raise LocalProtocolError("the node is draining already")
        self.state = "draining"

    def refusal(self) -> Overloaded | None:
        """Why this node takes no new request now (the one rule, for every front door:
        RPC, HTTP, OpenAI, /health), or None when it is ready."""
        if self.state == "loading":
            return Loading()
        if self.state != "ready":
            return Draining()
        return None

    def load(self) -> Load:
        return self.models.load(self.state, self.stats.tokens.rate())


class Peers(Protocol):
    """What the rest of the node may ask of the swarm (runtime/federation.py answers)."""

    def peer_loads(self, model_id: str, allowed: Sequence[str] | None, *,
                   loaded: bool = True) -> list[NodeLoad]:
        """ALIVE peers serving ``model_id`` that may be sent votes, with their load
        (``loaded=False``: those that hold it but have not loaded it).

        ``allowed`` limits them to these node ids (None = any, empty = none); never names,
        which a peer chooses and may change.
        """
        ...

    def peer_name(self, node_id: str) -> str: ...

    async def vote(self, node_id: str, request: GenerateRequest, deadline: float,
                   model_id: str | None = None) -> list[Candidate]:
        """The peer's candidates of ``model_id`` (None: its default model). ``deadline``
        (trio time) is what the peer is told; the caller's cancel scope ends the wait
        (there is no timer of its own)."""
        ...

    def unanswered(self, node_id: str, why: str) -> None:
        """A vote sent to this peer was not answered in time."""
        ...

    def hello(self, node_id: str, card: NodeCard | None, *, back: bytes | None) -> None:
        """A node that named itself (and maybe showed its card) asked for our status: it
        may have restarted, moved, or be new; ``back`` is the ROUTER connection it says
        we may reach it over if we cannot connect to it."""
        ...

    def from_link(self, ident: bytes, msg: Message, public: str) -> None:
        """A reply or heartbeat arrived at our ROUTER from a member we reach over its own
        link (RemoteProtocolError for one we did not ask or that speaks for another)."""
        ...

    def models(self) -> dict[str, list[Holder]]:
        """Model id -> the ALIVE peers serving it."""
        ...

    def peers(self) -> list[PeerInfo]: ...

    def foreign(self) -> list[str]:
        """Nodes of this swarm's name seen with another swarm key, or none (what and why)."""
        ...


class NoPeers:
    """The swarm of a node without federation: nobody to ask."""

    def peer_loads(self, model_id: str, allowed: Sequence[str] | None, *,
                   loaded: bool = True) -> list[NodeLoad]:
        return []

    def peer_name(self, node_id: str) -> str:
        return node_id

    async def vote(self, node_id: str, request: GenerateRequest, deadline: float,
                   model_id: str | None = None) -> list[Candidate]:
        raise PeerUnavailable(f"peer {node_id} is not known (federation is off)")

    def unanswered(self, node_id: str, why: str) -> None:
        pass

    def hello(self, node_id: str, card: NodeCard | None, *, back: bytes | None) -> None:
        pass

    def from_link(self, ident: bytes, msg: Message, public: str) -> None:
        raise RemoteProtocolError(f"unexpected {type(msg).__name__} (federation is off)",
                                  reason="unexpected")

    def models(self) -> dict[str, list[Holder]]:
        return {}

    def peers(self) -> list[PeerInfo]:
        return []

    def foreign(self) -> list[str]:
        return []
