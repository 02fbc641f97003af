"""Helpers to run several nodes for tests, benches and examples.

- ``node_config(...)``: a swarm.toml for a node on loopback (or a given address) with
  ephemeral ports and, optionally, the scripted engine with known answers.
- ``NodeProcess``: ``zswarm node`` in a child process (optionally inside a network
  namespace via ``ip netns exec``), ready once its RPC endpoint answers; stopped
  with SIGTERM (a clean leave) and killed by PID only if it does not exit.
- ``wait_until`` / ``wait_until_async``: wait for a condition with a timeout (never
  a bare sleep as synchronisation).
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w
import trio
import zmq

from zswarm import statedir
from zswarm.config import Config, load_config, parse_config
from zswarm.core.ids import NodeKey, pinned, unpinned
from zswarm.errors import ConfigError
from zswarm.net.security import SwarmKey, one_off
from zswarm.net.zmq_trio import TrioSocket
from zswarm.statedir import NodeInfo
from zswarm.testing.scripted import write_script


def to_toml(data: dict[str, dict[str, Any]]) -> str:
    """swarm.toml text of ``data`` ([section] and [section.table])."""
    return tomli_w.dumps(data)


def node_config(directory: Path, name: str, *, swarm: str, answers: list[str] | None = None,
                delay_ms: float = 0, model_id: str = "scripted", bind: str = "127.0.0.1",
                script: dict[str, Any] | None = None, **sections: dict[str, Any]) -> Path:
    """Write ``directory/name/swarm.toml`` and return its path."""
    home = directory / name
    home.mkdir(parents=True, exist_ok=True)
    data: dict[str, dict[str, Any]] = {
        "node": {"name": name, "bind": bind, "state_dir": str(home / "state"),
                 "drain_timeout_ms": 3000},
        "ports": {"rpc": 0, "pub": 0, "http": 0},
        "federation": {"swarm": swarm, "heartbeat_interval_ms": 200},
    }
    if answers is not None:
        path = write_script(home / "script.json", answers, delay_ms=delay_ms, model_id=model_id,
                            **(script or {}))
        data["model"] = {"backend": "scripted", "path": str(path)}
    for key, values in sections.items():
        if isinstance(values, list):  # an array of tables: [[models]]
            data[key] = values
        else:
            data.setdefault(key, {}).update(values)
    path = home / "swarm.toml"
    path.write_text(to_toml(data))
    return path


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (for "closed" and fixed-port tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout_s: float, *, what: str = "condition",
               interval_s: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; TimeoutError after timeout_s."""
    end = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"{what} not reached within {timeout_s} s")
        time.sleep(interval_s)


async def wait_until_async(predicate: Callable[[], Any], timeout_s: float, *,
                           what: str = "condition", interval_s: float = 0.02) -> Any:
    with trio.move_on_after(timeout_s):
        while True:
            value = predicate()
            if value:
                return value
            await trio.sleep(interval_s)
    raise TimeoutError(f"{what} not reached within {timeout_s} s")


class NodeProcess:
    """``python -m zswarm node --config PATH [ARGS]`` as a child process."""

    def __init__(self, config: Path, *, netns: str | None = None, log_path: Path | None = None,
                 env: dict[str, str] | None = None, args: tuple[str, ...] = (),
                 max_fds: int | None = None, command: str = "node",
                 cpus: set[int] | None = None) -> None:
        """``max_fds``: the child's RLIMIT_NOFILE, soft and hard (a desktop's 1,024, say);
        ``command``: ``join`` runs `zswarm join --config PATH ARGS`, which ends in a node;
        ``cpus``: the cores the node and its workers may run on (benches: one machine's
        share)."""
        self.config = config
        self.netns = netns
        cmd = [sys.executable, "-m", "zswarm", command, "--config", str(config), *args]
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.log_path = log_path or config.with_name("node.log")
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        def limits() -> None:  # in the child, before it runs
            if max_fds is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (max_fds, max_fds))
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                     preexec_fn=None if max_fds is None and cpus is None
                                     else limits)
        self.info: NodeInfo | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def rpc(self) -> str:
        assert self.info is not None, "wait_ready() first"
        return self.info.rpc_endpoint

    def wait_ready(self, timeout_s: float = 60.0) -> NodeInfo:
        """The node's node.json (in its config's state dir), once this process wrote it (in
        a namespace, whichever process did: ``ip netns exec`` runs it under another pid).
        The config may not exist yet: `zswarm join` writes it."""

        configs: list[Config] = []  # parsed once it exists

        def ready() -> NodeInfo | None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}: {self.log()}")
            if not configs:
                try:
                    configs.append(load_config(self.config))
                except ConfigError:
                    return None
            info = statedir.read(configs[0])
            return info if info is not None and (info.pid == self.proc.pid or self.netns) \
                else None

        self.info = wait_until(ready, timeout_s, what=f"node {self.config.parent.name} ready")
        return self.info

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM (clean leave with goodbyes), then SIGKILL if it does not exit."""
        try:
            if self.proc.poll() is None:
                self.signal(signal.SIGCONT)
                self.signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dealer(address: str, key: SwarmKey | None = None, *, kind: int = zmq.DEALER,
           **options: Any) -> TrioSocket:
    """A raw client socket to a node's address (tcp://host:port?key=KEY): a key of its
    own, the swarm's ticket with ``key``, pinned to the node's key (hostile tests send
    what they like over it)."""
    endpoint, public = unpinned(address)
    sock = TrioSocket.open(kind, role="client", creds=one_off(key), **options)
    try:
        sock.connect(endpoint, public)
    except BaseException:
        sock.close()
        raise
    return sock


def address_of(directory: Path, name: str, endpoint: str) -> str:
    """The address (``endpoint?key=KEY``) of the node ``name`` that ``node_config(directory,
    name, ...)`` writes: its key is made now, in its state dir, as its first start would
    (so nodes can list each other as static peers before any of them starts)."""
    return pinned(endpoint, node_key_of(directory, name).public)


def node_key_of(directory: Path, name: str) -> NodeKey:
    """The key (and so the id) of the node ``name`` that ``node_config(directory, name,
    ...)`` writes, made now in its state dir if it has none yet."""
    state = parse_config({"node": {"state_dir": str(directory / name / "state")}})
    return statedir.load_node_key(state)
