"""Keys on every TCP socket: each node's own (its identity), and the swarm key
(membership), with the one ZAP handler per process that tells servers who connected.

Node keys (docs/architecture.md, "Identity"): every node serves CURVE with its own
keypair (``serve_as``), and a client pins the key of the node it connects to, per
connect (``pin``), so only the holder of that key completes the handshake. A ROUTER
admits any client key and learns it from ZAP (User-Id, hex), so every message's
sender is known; a PUB admits, in a keyed swarm, only subscribers holding the swarm key.

The swarm key (``zswarm keygen``, copied to every machine, mode 0600) is membership: a
DEALER shows a ticket (``ticket``: HMAC of its public key under the swarm secret) in its
connection's metadata, and a keyed node serves no message without a good one
(``Membership``); a SUB subscribes with the swarm keypair itself. Someone without the
file gets nothing served and reads no heartbeat. CURVE gives each connection its own
short-term keys, so recorded traffic stays unreadable even if a key leaks later.

Rotation and revoking one machine are the same step: ``zswarm keygen`` a new key,
copy it to the machines that stay, restart them; the old key (and every machine
that only has it) no longer gets in. During a rolling restart the swarm is two
swarms, old key and new, each still working. The mDNS record carries only
``fingerprint`` (public: the first 16 hex digits of the SHA-256 of the public
key), so ``zswarm peers --browse`` and the logs can say "another swarm key".

This module owns reading and writing swarm key files, the socket options, tickets, and
the one authenticator per process (it lives on the zmq context). Worker sockets
(ipc://, same machine, same user) are not encrypted.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth.thread
from zmq.utils import z85

from zswarm.core.ids import NodeKey, is_public
from zswarm.errors import ConfigError, PeerUnavailable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwarmKey:
    public: bytes  # z85, 40 bytes
    secret: bytes  # z85, 40 bytes

    @property
    def fingerprint(self) -> str:
        """Public: names the key in mDNS records and `zswarm peers`, reveals nothing."""
        return hashlib.sha256(self.public).hexdigest()[:16]

    def __repr__(self) -> str:  # never print the secret
        return f"SwarmKey(fingerprint={self.fingerprint})"


def http_token(key: SwarmKey) -> str:
    """The HTTP API key every member of a keyed swarm accepts (``zswarm http-token``).

    Derived from the swarm secret (HMAC-SHA256), so it needs no file of its own and
    changes when the key is rotated; it reveals nothing about the secret.
    """
    digest = hmac.new(key.secret, b"zswarm http token v1", hashlib.sha256).hexdigest()
    return f"zswarm-{digest[:40]}"


def new_key_text() -> str:
    """The contents of a new swarm key file."""
    public, secret = zmq.curve_keypair()
    fingerprint = SwarmKey(public, secret).fingerprint
    return ("# zswarm swarm key: keep it secret. Copy this file to every machine of the swarm\n"
            "# (mode 0600) and set [security] swarm_key_file to its path.\n"
            f"# fingerprint {fingerprint}\n"
            f'secret = "{secret.decode()}"\n')


def write_key_file(path: Path) -> SwarmKey:
    """Create a new key file (mode 0600); ConfigError if it exists or cannot be written."""
    text = new_key_text()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path}: exists already; remove it first (a new key locks out every "
                          "machine that has the old one)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the key file: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return load_key_file(path)


def load_key_file(path: Path, *, source: str = "") -> SwarmKey:
    """Read a swarm key file; ConfigError naming the file and the problem."""
    where = f"{source}: security.swarm_key_file: " if source else ""
    try:
        info = path.stat()
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{where}cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}{path} is not a zswarm key file ({exc})") from exc
    secret = data.get("secret")
    if not isinstance(secret, str) or len(secret) != 40:
        raise ConfigError(f"{where}{path}: expected secret = \"<40 z85 characters>\" "
                          "(make one with `zswarm keygen --out FILE`)")
    try:
        public = zmq.curve_public(secret.encode())
    except (ValueError, zmq.ZMQError) as exc:
        raise ConfigError(f"{where}{path}: the secret is not a CURVE key: {exc}") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s can be read by other users (mode %o): chmod 600 it", path,
                    stat.S_IMODE(info.st_mode))
    return SwarmKey(public=public, secret=secret.encode())


def swarm_key(path: str, *, source: str) -> SwarmKey | None:
    """The key named by ``[security] swarm_key_file`` ("" = none: an open swarm)."""
    if not path:
        return None
    return load_key_file(Path(os.path.expanduser(path)), source=source)


#: ZAP domain of every node's RPC ROUTER: any client key completes the handshake (its
#: key, proven by CURVE, is the sender's identity: ZAP's User-Id); in a keyed swarm each
#: message must also carry the sender's membership ticket (``Membership``)
RPC_DOMAIN = "zswarm-rpc"
#: the metadata property a DEALER sends its membership ticket in (ZMQ_METADATA)
TICKET_PROPERTY = "X-Member"


def pub_domain(swarm: SwarmKey | None) -> str:
    """ZAP domain of a node's heartbeat PUB: in a keyed swarm only subscribers holding
    the swarm key are admitted (they subscribe with it as their client key)."""
    return f"zswarm-pub-{swarm.fingerprint}" if swarm is not None else "zswarm-pub-open"


def ticket(swarm: SwarmKey, public: str) -> str:
    """The proof that a key holder of the swarm vouches for the node key ``public``
    (hex): HMAC-SHA256 of it under the swarm secret. Public: it proves nothing for any
    other key, and a key is used only by the holder of its secret (CURVE)."""
    return hmac.new(swarm.secret, b"zswarm member v1\0" + public.encode(),
                    hashlib.sha256).hexdigest()[:32]


class Membership:
    """Checks the tickets senders show at a keyed node's ROUTER (per message, before
    anything is served); remembers the keys it checked, at most MAX_CHECKED."""

    MAX_CHECKED = 4096

    def __init__(self, swarm: SwarmKey) -> None:
        self.swarm = swarm
        self._ok: dict[str, str] = {}

    def admits(self, user_id: str, shown: str) -> bool:
        good = self._ok.get(user_id)
        if good is None:
            if len(self._ok) >= self.MAX_CHECKED:
                self._ok.clear()
            good = self._ok[user_id] = ticket(self.swarm, user_id)
        return hmac.compare_digest(good, shown)


@dataclass(frozen=True)
class Credentials:
    """What this process's sockets show: a node's key (or a client's one-off key) and
    the swarm key (None: an open swarm)."""

    node: NodeKey
    swarm: SwarmKey | None = None


def one_off(swarm: SwarmKey | None = None) -> Credentials:
    """Credentials of a client (``zswarm ask``, probes of the CLI): a fresh key."""
    public, secret = zmq.curve_keypair()
    return Credentials(NodeKey(z85.decode(public).hex(), z85.decode(secret).hex()), swarm)


def serve_as(sock: zmq.Socket[bytes], creds: Credentials, kind: int) -> None:
    """Before bind: a CURVE server with the node's own key (clients pin it), its ZAP
    domain the socket's (a ROUTER: any key; a PUB: the swarm's members)."""
    domain = RPC_DOMAIN if kind != zmq.PUB else pub_domain(creds.swarm)
    members = None if kind != zmq.PUB or creds.swarm is None else creds.swarm.public
    Authenticator.instance(sock.context).allow(domain, members)
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, bytes.fromhex(creds.node.secret))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, bytes.fromhex(creds.node.public))


def connect_as(sock: zmq.Socket[bytes], creds: Credentials, kind: int) -> None:
    """Before connect: a CURVE client. A DEALER shows the node's key (its identity) and,
    in a keyed swarm, its ticket; a SUB shows the swarm key (a PUB admits members), or
    the node's key in an open swarm. The server's key is pinned per connect
    (``pin``)."""
    if kind == zmq.SUB and creds.swarm is not None:
        sock.setsockopt(zmq.CURVE_SECRETKEY, creds.swarm.secret)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, creds.swarm.public)
        return
    sock.setsockopt(zmq.CURVE_SECRETKEY, bytes.fromhex(creds.node.secret))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, bytes.fromhex(creds.node.public))
    if creds.swarm is not None:
        sock.setsockopt(zmq.METADATA, f"{TICKET_PROPERTY}:"
                        f"{ticket(creds.swarm, creds.node.public)}".encode())


def pin(sock: zmq.Socket[bytes], public: str) -> None:
    """The key the next ``connect`` must be answered with (libzmq reads it per connect):
    only the holder of its secret completes the handshake."""
    if not is_public(public):
        raise PeerUnavailable(f"no key to reach that node with ({public[:80]!r}: an "
                              "address names it as tcp://HOST:PORT?key=<64 hex digits>)")
    sock.setsockopt(zmq.CURVE_SERVERKEY, bytes.fromhex(public))


class Authenticator:
    """The process's ZAP handler (one per zmq context): admits, per domain, any key or
    only the swarm's, and tells the server each client's key (User-Id, hex)."""

    _instances: dict[int, Authenticator] = {}
    _lock = threading.Lock()

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        #: domain -> the client keys (z85) it admits; None: any
        self.domains: dict[str, set[bytes] | None] = {}
        self.denied = 0
        self._auth = _HexUserIds(context, log=log.getChild("zap"))
        self._auth.start()

    @classmethod
    def instance(cls, context: zmq.Context[zmq.Socket[bytes]]) -> Authenticator:
        with cls._lock:
            auth = cls._instances.get(id(context))
            if auth is None:
                auth = cls._instances[id(context)] = cls(context)
            return auth

    @classmethod
    def stop_all(cls) -> None:
        """Stop the handlers (before the zmq context is terminated)."""
        with cls._lock:
            for auth in cls._instances.values():
                auth._auth.stop()
            cls._instances.clear()

    def allow(self, domain: str, key: bytes | None) -> None:
        """``domain`` admits ``key`` (z85) too, or any key (None)."""
        with self._lock:
            if domain not in self.domains:
                self.domains[domain] = None if key is None else set()
                self._auth.configure_curve_callback(domain=domain, credentials_provider=self)
            admitted = self.domains[domain]
            if admitted is not None and key is not None:
                admitted.add(key)

    def callback(self, domain: str, client_key: bytes) -> bool:
        admitted = self.domains.get(domain, set())
        ok = admitted is None or client_key in admitted
        if not ok:
            self.denied += 1
            log.debug("ZAP: refused a client with an unknown key (%s)", domain)
        return ok


class _HexUserIds(zmq.auth.thread.ThreadAuthenticator):
    """pyzmq's ZAP thread, telling servers each CURVE client's key in hex (User-Id)."""

    def curve_user_id(self, client_public_key: bytes) -> str:
        return bytes(client_public_key).hex()
