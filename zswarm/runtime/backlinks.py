"""Links members opened to this node, used back: reaching a member that accepts no
inbound connections (a laptop's firewall) over its own connection to our RPC ROUTER.

A ROUTER can send to any connection it holds, by the connection's routing identity,
and the member's DEALER (net/bus.PeerLink with ``on_request``) answers what arrives.
Owns: which connection speaks for which node id - bound only after that node answered
a StatusRequest over that very connection as itself (the Federation asks, in
runtime/federation.py), one node id per connection and one connection per node id,
at most MAX_BACKLINKS of them; requests sent over such a connection and the matching
of their replies (Status, Vote, PeersReply, Error arriving at the ROUTER: an unmatched
one is dropped and counted, never answered, so two nodes cannot bounce errors); and
the rule that a heartbeat arriving over a bound connection speaks only for its node
(``speaks_for``). It decides nothing: the Federation says what to bind and when to let
go. It shares the RPC ROUTER socket with runtime/rpc.py, which receives on it; both
send on it without waiting (net/zmq_trio allows any task to send).
"""

from __future__ import annotations

import trio

from zswarm.core import codec
from zswarm.core.messages import Cancel, Message
from zswarm.errors import PeerUnavailable, RemoteProtocolError, ZswarmError
from zswarm.net.bus import wait_reply
from zswarm.net.guard import DropCounter
from zswarm.net.zmq_trio import TrioSocket

#: members reached only over their own links, at most (each holds one connection of theirs)
MAX_BACKLINKS = 64


class Backlink:
    """One member's connection to our ROUTER, used as a link to it (runtime/connections.Link)."""

    def __init__(self, owner: Backlinks, ident: bytes, name: str) -> None:
        self.owner = owner
        self.ident = ident
        self.name = name

    async def request(self, msg: Message, request_id: str, *, timeout_s: float | None = None
                      ) -> Message:
        """Send over the member's connection and wait for the reply with the same id.

        PeerUnavailable when the connection is gone or unbound meanwhile, or nothing
        came within ``timeout_s``; the peer's Error as its error."""
        key = (self.ident, request_id)
        send, receive = trio.open_memory_channel[Message | ZswarmError](1)
        self.owner.waiting[key] = send
        try:
            self.owner.send(self.ident, msg)
            return await wait_reply(receive, timeout_s, f"{self.name} (over its own link)")
        finally:
            self.owner.waiting.pop(key, None)

    def cancel(self, request_id: str) -> None:
        try:
            self.owner.send(self.ident, Cancel(request_id=request_id))
        except (ZswarmError, trio.ClosedResourceError):
            pass


class Backlinks:
    """The ROUTER connections bound to node ids, and requests over them."""

    def __init__(self, sock: TrioSocket | None, drops: DropCounter) -> None:
        self.sock = sock
        self.drops = drops
        self.node_of: dict[bytes, str] = {}
        self.ident_of: dict[str, bytes] = {}
        self.waiting: dict[tuple[bytes, str], trio.MemorySendChannel[Message | ZswarmError]] = {}

    def send(self, ident: bytes, msg: Message) -> None:
        if self.sock is None:
            raise PeerUnavailable("this node has no RPC socket to reach members back over")
        self.sock.send_multipart([ident, codec.encode(msg)])

    def link(self, ident: bytes, name: str) -> Backlink:
        return Backlink(self, ident, name)

    def bound(self, node_id: str) -> Backlink | None:
        ident = self.ident_of.get(node_id)
        return None if ident is None else Backlink(self, ident, node_id)

    def holds(self, node_id: str) -> bool:
        return node_id in self.ident_of

    def full(self) -> bool:
        return len(self.ident_of) >= MAX_BACKLINKS

    def bind(self, ident: bytes, node_id: str) -> bool:
        """This connection speaks for ``node_id`` from now on (it answered as that node);
        False when MAX_BACKLINKS are bound already. Whatever either was bound to goes."""
        if node_id not in self.ident_of and self.full():
            return False
        self.unbind(node_id, "its link was replaced")
        old = self.node_of.pop(ident, None)
        if old is not None:
            self.unbind(old, "its link now answers as another node")
        self.node_of[ident] = node_id
        self.ident_of[node_id] = ident
        return True

    def unbind(self, node_id: str, why: str) -> None:
        """Let go of the node's connection; requests waiting on it fail at once."""
        ident = self.ident_of.pop(node_id, None)
        if ident is None:
            return
        self.node_of.pop(ident, None)
        for key in [k for k in self.waiting if k[0] == ident]:
            try:
                self.waiting.pop(key).send_nowait(PeerUnavailable(why))
            except (trio.WouldBlock, trio.BrokenResourceError):
                pass

    def speaks_for(self, ident: bytes, node_id: str) -> bool:
        """Whether a message in ``node_id``'s name over this connection may be believed;
        RemoteProtocolError when the connection is bound to another node."""
        bound = self.node_of.get(ident)
        if bound is not None and bound != node_id:
            raise RemoteProtocolError(f"a message of {node_id[:64]!r} over the link of "
                                      f"{bound!r}", reason="wrong-sender")
        return bound is not None

    def reply(self, ident: bytes, msg: Message) -> None:
        """A reply arrived over a member's connection: hand it to the request waiting."""
        rid = getattr(msg, "request_id", None)
        waiter = self.waiting.pop((ident, rid), None) if isinstance(rid, str) else None
        if waiter is None:  # late (gave up), or unasked: counted, never answered
            self.drops.drop("unasked-reply", type(msg).__name__)
            return
        waiter.send_nowait(msg)
