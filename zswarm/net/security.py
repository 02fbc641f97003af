"""The swarm key: CURVE on every TCP socket and a ZAP handler that admits only the swarm.

Key scheme (see README, "Threat model"): one swarm key per swarm, made by
``zswarm keygen`` and copied to every machine (file mode 0600). It is a CURVE
keypair that every member holds: each node's sockets serve with it (ROUTER, PUB)
and connect with it (DEALER, SUB), and the ZAP handler admits only clients that
prove they hold it. Someone without the file can neither complete a handshake
nor read a byte: no heartbeats, no votes, no questions. CURVE gives each
connection its own short-term keys, so recorded traffic stays unreadable even if
the key leaks later.

Rotation and revoking one machine are the same step: ``zswarm keygen`` a new key,
copy it to the machines that stay, restart them; the old key (and every machine
that only has it) no longer gets in. During a rolling restart the swarm is two
swarms, old key and new, each still working. The mDNS record carries only
``fingerprint`` (public: the first 16 hex digits of the SHA-256 of the public
key), so ``zswarm peers --browse`` and the logs can say "another swarm key".

This module owns reading and writing key files, the socket options, and the one
authenticator per process (it lives on the zmq context). Worker sockets (ipc://,
same machine, same user) are not encrypted.
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

from zswarm.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

#: ZAP domain of zswarm's sockets
ZAP_DOMAIN = "zswarm"


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


def secure_server(sock: zmq.Socket[bytes], key: SwarmKey) -> None:
    """Before bind: serve CURVE with the swarm key; ZAP checks every client."""
    Authenticator.instance(sock.context).allow(key)
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, key.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, key.public)


def secure_client(sock: zmq.Socket[bytes], key: SwarmKey) -> None:
    """Before connect: a CURVE client that expects a server holding the swarm key."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, key.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, key.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, key.public)


class Authenticator:
    """The process's ZAP handler (one per zmq context): admits clients holding a known key."""

    _instances: dict[int, Authenticator] = {}
    _lock = threading.Lock()

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.allowed: set[bytes] = set()
        self.denied = 0
        self._auth = zmq.auth.thread.ThreadAuthenticator(context, log=log.getChild("zap"))
        self._auth.start()
        self._auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self)

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

    def allow(self, key: SwarmKey) -> None:
        self.allowed.add(key.public)

    def callback(self, domain: str, client_key: bytes) -> bool:
        ok = client_key in self.allowed
        if not ok:
            self.denied += 1
            log.debug("ZAP: refused a client with an unknown key")
        return ok
