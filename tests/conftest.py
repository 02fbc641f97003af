"""Shared fixtures: configs that bind to loopback only, and a leak check for child processes."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from zswarm.config import Config, parse_config

TESTS = Path(__file__).resolve().parent
#: what starts node processes, network namespaces or swarms of real nodes, runs for
#: seconds each: only in the full run. ``pytest -m "not slow"`` is the fast tier (pure
#: and in-process tests, under a minute), for use while working; .ci/run runs everything.
SLOW_PATHS = ("e2e/", "cli/test_doctor.py", "cli/test_keys.py", "cli/test_swarm_view.py",
              "federation/test_federation.py", "federation/test_fuzz.py",
              "federation/test_hostile.py", "http/test_http_behaviour.py",
              "http/test_http_closed.py", "runtime/test_faults.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of SLOW_PATHS, and those of the real model, are marked slow."""
    for item in items:
        where = Path(str(item.fspath)).resolve().relative_to(TESTS).as_posix()
        if where.startswith(SLOW_PATHS) or item.get_closest_marker("model") is not None:
            item.add_marker(pytest.mark.slow)


def _children() -> set[int]:
    pid = os.getpid()
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(entry))
    return found


@pytest.fixture(autouse=True)
def no_leaked_children():
    """Fail a test that leaves child processes (workers, nodes) behind."""
    before = _children()
    yield
    leaked = _children() - before
    assert not leaked, f"test left child processes behind: {sorted(leaked)}"


def make_config(tmp_path: Path, **sections: dict) -> Config:
    data: dict = {"node": {"name": "test", "bind": "127.0.0.1", "state_dir": str(tmp_path / "state")},
                  "ports": {"rpc": 0, "pub": 0, "http": 0},
                  # a private swarm: other nodes on this host (other test runs) stay apart
                  "federation": {"swarm": f"test-{secrets.token_hex(6)}"}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return parse_config(data, source="test.toml")


@pytest.fixture
def config_factory(tmp_path: Path):
    def factory(**sections: dict) -> Config:
        return make_config(tmp_path, **sections)

    return factory
