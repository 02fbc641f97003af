"""A short live fuzz run: bench/fuzz_node.py against a `zswarm node` process (scripted engine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fuzz_node.py"


@pytest.mark.timeout(300)
def test_a_live_node_survives_fuzzing_and_answers_every_question():
    run = subprocess.run([sys.executable, str(BENCH), "--frames", "8000", "--http", "400",
                          "--model", "scripted", "--no-results", "--seed", "7"],
                         capture_output=True, text=True, timeout=280)
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, (figures, run.stderr[-3000:])
    assert figures["node_alive"] is True
    assert figures["frames_sent"] >= 8000
    assert figures["http_5xx"] == 0
    assert figures["questions_asked"] >= 1
    assert figures["questions_answered"] == figures["questions_asked"]
