"""Debian packages some tests need (chromium, avahi), installed by the test set-up.

``need(packages, binaries)`` returns when every binary is on PATH, installing the
packages with apt-get when it can (root, apt-get present); otherwise it skips the
test with the reason. The install runs once per session and package set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache

import pytest

#: apt-get may download a few hundred MB (chromium): generous, but bounded
INSTALL_TIMEOUT_S = 900


@cache
def _install(packages: tuple[str, ...]) -> str:
    """'' once installed, else why not."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available (not a Debian-like system)"
    if os.geteuid() != 0:
        return "installing needs root (run: sudo apt-get install -y " + " ".join(packages) + ")"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                              *packages], env=env, capture_output=True, text=True,
                             timeout=INSTALL_TIMEOUT_S)
        if run.returncode != 0:  # maybe a stale package index: refresh once and retry
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True,
                           timeout=INSTALL_TIMEOUT_S)
            run = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                                  *packages], env=env, capture_output=True, text=True,
                                 timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"apt-get install {' '.join(packages)} took over {INSTALL_TIMEOUT_S} s"
    if run.returncode != 0:
        tail = " ".join(run.stderr.strip().splitlines()[-2:])
        return f"apt-get install {' '.join(packages)} failed: {tail}"
    return ""


def need(packages: tuple[str, ...], binaries: tuple[str, ...]) -> dict[str, str]:
    """Binary name -> path; installs ``packages`` if a binary is missing, or skips the test."""
    if any(shutil.which(b) is None for b in binaries):
        why = _install(packages)
        if why:
            pytest.skip(f"needs {', '.join(packages)}: {why}")
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found after installing {', '.join(packages)}")
    return {b: str(shutil.which(b)) for b in binaries}
