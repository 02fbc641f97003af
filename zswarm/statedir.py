"""The node's state directory (``[node] state_dir``): the one module that reads and writes it.

What lives there:

- ``node_id``: the node's persistent id, made on first start;
- ``lock``: held (``flock``) by the running node for its whole life, so a second node on
  the same directory is refused at start instead of sharing the first one's id (the
  kernel lets go of it when the holder dies, even by kill -9);
- ``node.json``: where the running node listens (NodeInfo and its pid), written when it
  is ready and removed when it stops; clients on this machine find their node by it;
- ``models/``: model files pulled from the swarm (pull.py).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
from dataclasses import dataclass
from typing import IO

import msgspec

from zswarm.config import Config
from zswarm.core.ids import NodeId, new_node_id
from zswarm.errors import ConfigError


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
    """The node id kept in the state dir, without making one ("" before the first start)."""
    try:
        return (config.state_path / "node_id").read_text().strip()
    except OSError:
        return ""


def load_node_id(config: Config) -> NodeId:
    """The node's persistent id (state_dir/node_id), created on first start."""
    path = config.state_path / "node_id"
    try:
        with path.open("rb") as f:
            text = f.read(100).decode("ascii", errors="replace").strip()
        if text:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
                raise ConfigError(f"{config.source}: node.state_dir: {path} does not hold a "
                                  "node id (damaged?); delete it and a new id is made")
            return NodeId(text)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _problem(config, f"cannot read {path}", exc) from exc
    node_id = new_node_id()
    try:
        config.state_path.mkdir(parents=True, exist_ok=True)
        path.write_text(node_id + "\n")
    except OSError as exc:
        raise _problem(config, f"cannot write {path}", exc) from exc
    return node_id


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
