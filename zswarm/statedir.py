"""The node's state directory (``[node] state_dir``): the one module that reads and writes it.

What lives there:

- ``node.key``: the node's CURVE keypair (mode 0600), made on first start; the node
  id derives from its public key (core/ids.py);
- ``lock``: held (``flock``) by the running node for its whole life, so a second node on
  the same directory is refused at start instead of sharing the first one's id (the
  kernel lets go of it when the holder dies, even by kill -9);
- ``node.json``: where the running node listens (NodeInfo and its pid), written when it
  is ready and removed when it stops; clients on this machine find their node by it;
- ``models/``: model files pulled from the swarm (pull.py);
- ``members.json``: the members this node verified, found again after a restart
  (runtime/members.py keeps it; at most MAX_REMEMBERED, written atomically).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import msgspec
import zmq
from zmq.utils import z85

from zswarm.config import Config
from zswarm.core.ids import NodeKey, is_public
from zswarm.errors import ConfigError

log = logging.getLogger(__name__)

#: the node's keypair, in its state dir
KEY_FILE = "node.key"


@dataclass(frozen=True)
class NodeInfo:
    """A ready node, as node.json says (``pid`` 0 until written)."""

    node_id: str
    name: str
    host: str
    rpc_endpoint: str
    pub_endpoint: str
    http_port: int
    model_id: str
    workers: int
    federation: bool
    #: fingerprint of the swarm key ("" = an open swarm)
    swarm_key: str = ""
    pid: int = 0


def _problem(config: Config, what: str, exc: OSError) -> ConfigError:
    return ConfigError(f"{config.source}: node.state_dir: {what}: {exc.strerror or exc}")


def node_id(config: Config) -> str:
    """The node id the state dir's key derives, without making one ("" before the first
    start)."""
    try:
        return _read_key(config.state_path / KEY_FILE).node_id
    except (OSError, ValueError):
        return ""


def load_node_key(config: Config) -> NodeKey:
    """The node's keypair (state_dir/node.key, mode 0600), made on first start; its id
    derives from it. A state dir from before ids were keys gets a new id, said once."""
    path = config.state_path / KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    except ValueError as exc:
        raise ConfigError(f"{config.source}: node.state_dir: {path} is not a node key "
                          f"({exc}); delete it and a new key (and id) is made") from None
    except OSError as exc:
        raise _problem(config, f"cannot read {path}", exc) from exc
    public, secret = zmq.curve_keypair()
    key = NodeKey(public=z85.decode(public).hex(), secret=z85.decode(secret).hex())
    try:
        config.state_path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# this node's key: its id derives from it; keep it secret\n"
                    f'secret = "{key.secret}"\n')
    except OSError as exc:
        raise _problem(config, f"cannot write {path}", exc) from exc
    old = config.state_path / "node_id"  # before ids were keys: a random id
    try:
        before = old.read_text(errors="replace").strip()[:64]
        old.unlink()
        log.warning("this node's id is now %s, derived from its new key (%s); it was %s: "
                    "[consensus.weights] by the old id no longer apply", key.node_id,
                    path, before)
    except OSError:
        pass
    return key


def _read_key(path: Path) -> NodeKey:
    with path.open("rb") as f:
        text = f.read(1000).decode("ascii", errors="replace")
    secret = next((line.split("=", 1)[1].strip().strip('"') for line in text.splitlines()
                   if line.startswith("secret")), "")
    if not is_public(secret):  # the secret has the shape of a public key: 64 hex digits
        raise ValueError("expected secret = \"<64 hex digits>\"")
    public = z85.decode(zmq.curve_public(z85.encode(bytes.fromhex(secret)))).hex()
    return NodeKey(public=public, secret=secret)


def lock(config: Config) -> IO[bytes]:
    """Hold the state dir for this node (close the returned file to let go).

    ConfigError if another running node holds it, naming that node and what to do.
    """
    path = config.state_path
    try:
        path.mkdir(parents=True, exist_ok=True)
        held = (path / "lock").open("ab")
    except OSError as exc:
        raise _problem(config, f"cannot write {path / 'lock'}", exc) from exc
    try:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        held.close()
        other = read(config)
        who = f"node {other.name} (pid {other.pid}, {other.rpc_endpoint})" if other else \
            "another zswarm node"
        raise ConfigError(f"{config.source}: node.state_dir {path} is in use by {who}: two "
                          "nodes on one machine need a state dir each ([node] state_dir, "
                          "or zswarm join --state-dir DIR)") from None
    return held


def in_use(config: Config) -> bool:
    """Does a running node hold this config's state dir?"""
    try:
        with (config.state_path / "lock").open("rb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return False


def write(config: Config, info: NodeInfo) -> None:
    """Tell local clients where this node listens (a few bytes: written synchronously)."""
    path = config.state_path / "node.json"
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(dataclasses.asdict(
            dataclasses.replace(info, pid=os.getpid()))))
        tmp.replace(path)
    except OSError as exc:  # disk full, read-only, not a directory: say which file
        raise _problem(config, f"cannot write {tmp}", exc) from exc


def read(config: Config) -> NodeInfo | None:
    """The node.json of the node started with this config (None if absent or unreadable;
    it may name a node that has since died: check ``pid``)."""
    try:
        return msgspec.json.decode((config.state_path / "node.json").read_bytes(),
                                   type=NodeInfo)
    except (OSError, msgspec.DecodeError):
        return None


def remove(config: Config) -> None:
    """Remove node.json if this process wrote it."""
    path = config.state_path / "node.json"
    info = read(config)
    if info is not None and info.pid == os.getpid():
        try:
            path.unlink()
        except OSError:
            pass


# --- the members this node has verified (runtime/members.py keeps them) ----------------

MEMBERS_FILE = "members.json"


class Member(msgspec.Struct, frozen=True, kw_only=True):
    """A member this node verified: its id (its key's), name, address (RPC endpoint with
    its key: a probe of it is pinned) and when it was last seen alive (unix time)."""

    node_id: str
    name: str = ""
    address: str
    last_seen: float


def read_members(config: Config) -> list[Member]:
    """The remembered members ([] when there are none, or the file is damaged: said)."""
    path = config.state_path / MEMBERS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot read %s: %s; the members it lists are not probed", path, exc)
        return []
    try:
        return msgspec.json.decode(data[:1_000_000], type=list[Member])
    except msgspec.DecodeError as exc:
        log.warning("%s is damaged (%s): it is written anew from the members seen", path,
                    exc)
        return []


def write_members(config: Config, members: list[Member]) -> None:
    """Replace the file at once (written aside, then renamed; mode 0600)."""
    path = config.state_path / MEMBERS_FILE
    tmp = path.with_suffix(".tmp")
    try:
        config.state_path.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(members))
        tmp.replace(path)
    except OSError as exc:
        raise _problem(config, f"cannot write {tmp}", exc) from exc
