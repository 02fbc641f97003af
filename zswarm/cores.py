"""This machine's cores and the zswarm nodes that share them.

llama.cpp's threads spin while they wait for each other: two workers whose threads add
up to more than the machine's cores do not share it, they crawl (measured here: a vote
between two nodes of 2 threads each on 2 cores took 24-32 s instead of 0.4 s). Owns:
finding the other `zswarm node` processes of this machine (psutil: their command line,
their config as they read it) and the worker threads each one uses, the share a new
node's worker takes when its threads are "auto" (``[model] threads = 0``), and the words
that say what to change. Used by node.py at start, `zswarm join` and doctor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil

from zswarm.config import Config, load_config
from zswarm.errors import ConfigError


@dataclass(frozen=True)
class NodeHere:
    """Another `zswarm node` process of this machine."""

    pid: int
    #: the threads of all its workers (a worker of threads = 0 takes every core)
    threads: int


def cores() -> int:
    return os.cpu_count() or 1


def _is_node(cmdline: list[str]) -> int | None:
    """The index of "node" in a `zswarm node ...` command line, else None."""
    python = bool(cmdline) and Path(cmdline[0]).name.startswith("python")
    for i, arg in enumerate(cmdline[:-1]):
        program = Path(arg).name == "zswarm" and (i == 0 or (python and i == 1))
        module = arg == "zswarm" and python and i >= 2 and cmdline[i - 1] == "-m"
        if (program or module) and cmdline[i + 1] == "node":
            return i + 1
    return None


def node_threads(config: Config) -> int:
    """The threads of a node's workers together."""
    return (config.model.threads or cores()) * config.node.workers


def _threads_of(cmdline: list[str], at: int, cwd: str) -> int:
    """The threads a node's workers run with, from its --config (unknown: all cores)."""
    args = cmdline[at + 1:]
    path = None
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            path = args[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    try:
        cfg = load_config(None if path is None else Path(cwd, path))
    except ConfigError:
        return cores()
    return node_threads(cfg)


def other_nodes() -> list[NodeHere]:
    """The other `zswarm node` processes of this machine (those this user may read)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        at = _is_node(cmdline)
        if at is None or proc.pid == os.getpid():
            continue
        try:
            cwd = proc.cwd()
        except (psutil.Error, OSError):
            cwd = "/"
        found.append(NodeHere(proc.pid, _threads_of(cmdline, at, cwd)))
    return found


def share(others: list[NodeHere], workers: int = 1) -> int:
    """The threads each worker of a node of threads = "auto" takes beside ``others``: what
    they leave, else an equal share of the cores, at least 1."""
    free = cores() - sum(n.threads for n in others)
    total = free if free > 0 else cores() // (len(others) + 1)
    return max(1, total // workers)


def advice(config: Config, others: list[NodeHere]) -> str:
    """What to change when this node's and the others' threads exceed the cores ("" if
    they do not)."""
    total = node_threads(config) + sum(n.threads for n in others)
    if not others or total <= cores():
        return ""
    each = max(1, cores() // (len(others) + 1))
    pids = ", ".join(str(n.pid) for n in others)
    return (f"the zswarm nodes of this machine (pid {pids} and this one) use {total} "
            f"threads on {cores()} cores: llama.cpp's threads spin, so tokens crawl when "
            f"they generate together; give each [model] threads = {each} "
            f"({config.source}) and restart the others")
