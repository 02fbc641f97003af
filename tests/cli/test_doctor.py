"""`zswarm doctor`: a healthy node passes; each kind of trouble gives its own finding.

Everything stays on loopback: the nodes, the static peer that does not answer and
the mDNS records of nodes whose RPC port is closed (the firewall symptom).
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
from pathlib import Path

from zswarm import doctor as doctor_module
from zswarm.core.ids import pinned
from zswarm.core.messages import NodeCard
from zswarm.net.mdns import Mdns
from zswarm.net.security import one_off
from zswarm.testing.cluster import NodeProcess, free_port, node_config
from zswarm.testing.floods import mdns_flood


def doctor(config: Path, *args: str) -> tuple[int, list[dict[str, str]]]:
    run = subprocess.run([sys.executable, "-m", "zswarm", "doctor", "--config", str(config),
                          "--json", *args], capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert run.stdout, run.stderr
    report = json.loads(run.stdout)
    assert report["ok"] == (run.returncode == 0)
    return run.returncode, report["findings"]


def where(findings: list[dict[str, str]], check: str, status: str) -> list[str]:
    return [f["message"] for f in findings if f["check"] == check and f["status"] == status]



def test_a_healthy_node_passes(tmp_path):
    swarm = "doc-" + secrets.token_hex(6)
    cfg = node_config(tmp_path, "well", swarm=swarm, answers=["42"])
    with NodeProcess(cfg) as node, \
            NodeProcess(node_config(tmp_path, "friend", swarm=swarm, answers=["42"])) as friend:
        node.wait_ready(30)
        friend.wait_ready(30)
        code, findings = doctor(cfg)
    assert code == 0, findings
    assert not [f for f in findings if f["status"] == "FAIL"]
    assert where(findings, "bind", "warn")[0].startswith("127.0.0.1 on lo")
    assert where(findings, "mdns", "ok") == ["this machine's node well is advertised (127.0.0.1)"]
    (friendly,) = where(findings, "reachability", "ok")
    assert friendly.startswith("friend (") and "heartbeat port open" in friendly
    assert where(findings, "model", "ok")  # loaded and generated a token in a worker


def test_an_unreachable_static_peer_is_named(tmp_path):
    dead = f"tcp://127.0.0.1:{free_port()}?key={'ab' * 32}"
    cfg = node_config(tmp_path, "n", swarm="doc-" + secrets.token_hex(6), answers=["42"],
                      federation={"discovery": "static", "peers": [dead]})
    code, findings = doctor(cfg, "--no-model")
    assert code == 1
    (message,) = where(findings, "static peers", "FAIL")
    assert message.startswith(f"{dead} did not answer a StatusRequest")


def test_a_port_in_use_names_its_owner(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = node_config(tmp_path, "n", swarm="doc-" + secrets.token_hex(6), answers=["42"],
                          ports={"rpc": port})
        code, findings = doctor(cfg, "--no-model")
    assert code == 1
    (message,) = where(findings, "ports", "FAIL")
    assert message.startswith(f"ports.rpc {port} on 127.0.0.1: Address already in use")
    assert f"taken by pid {__import__('os').getpid()} " in message  # this test process


def test_seen_over_mdns_but_rpc_closed_and_duplicate_ids(tmp_path):
    swarm = "doc-" + secrets.token_hex(6)
    node_id = secrets.token_hex(8)
    cards = [NodeCard(node_id=node_id, name=name, model_id="scripted", workers=1,
                      rpc=f"tcp://127.0.0.1:{free_port()}",
                      pub=f"tcp://127.0.0.1:{free_port()}", swarm=swarm)
             for name in ("walled", "twin")]
    stranger = NodeCard(node_id=secrets.token_hex(8), name="stranger", model_id="scripted",
                        workers=1, rpc="tcp://127.0.0.1:1", pub="tcp://127.0.0.1:2",
                        swarm="another-swarm")
    mdns = Mdns("127.0.0.1")
    try:
        for card in (*cards, stranger):
            mdns.advertise(card)
        cfg = node_config(tmp_path, "n", swarm=swarm, answers=["42"])
        code, findings = doctor(cfg, "--no-model", "--browse", "3")
    finally:
        mdns.close()
    assert code == 1
    unreachable = where(findings, "reachability", "FAIL")
    assert len(unreachable) == 2 and all("the firewall symptom" in m for m in unreachable)
    (dup,) = where(findings, "node ids", "FAIL")
    assert dup.startswith(f"node id {node_id} is used by 2 node(s)")
    assert any(m.startswith("stranger") and "is in swarm 'another-swarm'" in m
               for m in where(findings, "mdns", "info"))


def test_a_worker_that_dies_on_the_first_token_is_the_sigill_trap(tmp_path):
    cfg = node_config(tmp_path, "n", swarm="doc-" + secrets.token_hex(6), answers=["42"],
                      federation={"enabled": False}, script={"die_with": "SIGILL"},
                      scheduler={"restart_backoff_initial_ms": 50})
    code, findings = doctor(cfg)
    assert code == 1
    (message,) = where(findings, "model", "FAIL")
    assert "SIGILL" in message or "signal 4" in message, message
    (fix,) = [f["fix"] for f in findings if f["check"] == "model"]
    assert "./scripts/install.sh" in fix


def test_a_flood_of_records_is_probed_at_once_and_within_one_bound(tmp_path):
    """40 records of this swarm whose RPC ports never answer: probed side by side, within
    doctor's one time bound (one after another, 2 s each, they took 80 s)."""
    swarm = "docflood-" + secrets.token_hex(6)
    cfg = node_config(tmp_path, "n", swarm=swarm, answers=["42"])
    with mdns_flood(40, swarm=swarm, port=free_port()):
        code, findings = doctor(cfg, "--no-model", "--browse", "2")
    probed = [f for f in findings if f["check"] == "reachability"
              and f["message"].startswith("flood")]
    assert code == 1 and len(probed) == 40
    # each probed (and failed after PROBE_TIMEOUT_S) or cut by the bound, and said so
    assert all(f["status"] == "FAIL" or "not checked" in f["message"] for f in probed)
    failed = sum(f["status"] == "FAIL" for f in probed)
    # side by side: more finished within the bound than one at a time could have
    assert failed > doctor_module.PROBES_TOTAL_S / doctor_module.PROBE_TIMEOUT_S, failed


def test_a_node_made_by_join_is_understood_pulled_or_not(tmp_path):
    """`zswarm join` writes [model] path = "swarm:<model id>": doctor reads it before the
    first start pulled it, and after; a member with that model is not "another model"."""
    from zswarm.engines.models import resolve_model

    default = resolve_model("default")
    swarm = "doc-" + secrets.token_hex(6)
    mine = one_off().node
    member = NodeCard(node_id=mine.node_id, name="member", model_id=default.model_id,
                      workers=1, rpc=f"tcp://127.0.0.1:{free_port()}",
                      pub=f"tcp://127.0.0.1:{free_port()}", swarm=swarm, public=mine.public)
    address = pinned(member.rpc, member.public)
    cfg = node_config(tmp_path, "joined", swarm=swarm,
                      model={"path": f"swarm:{default.model_id}"},
                      federation={"peers": [address]})
    mdns = Mdns("127.0.0.1")
    try:
        mdns.advertise(member)
        _, findings = doctor(cfg, "--no-model", "--browse", "3")
    finally:
        mdns.close()
    assert not where(findings, "model", "FAIL"), findings
    (waiting,) = where(findings, "model", "info")
    assert "is not pulled yet" in waiting and f"pulls it from {address}" in waiting
    assert not [f for f in findings if "another model" in f["message"]]
    models = tmp_path / "joined" / "state" / "models"
    models.mkdir(parents=True)
    (models / default.path.name).symlink_to(default.path)  # as a pull leaves it
    code, findings = doctor(cfg)  # the model check too: it loads the pulled file
    assert not where(findings, "model", "FAIL"), findings
    assert where(findings, "model", "ok") and not where(findings, "model", "info")


def test_a_swarm_model_with_nowhere_to_pull_it_from_fails_with_the_fix(tmp_path):
    cfg = node_config(tmp_path, "lost", swarm="doc-" + secrets.token_hex(6),
                      model={"path": "swarm:SmolLM2-135M"}, federation={"discovery": "mdns"})
    code, findings = doctor(cfg, "--no-model", "--browse", "0.5")
    assert code == 1
    (failed,) = [f for f in findings if f["check"] == "model" and f["status"] == "FAIL"]
    assert "no [federation] peers to pull it from" in failed["message"]
    assert "zswarm join writes one" in failed["fix"]


def test_the_fix_for_a_missing_model_works_as_written(tmp_path):
    cfg = node_config(tmp_path, "m", swarm="doc-" + secrets.token_hex(6),
                      model={"path": str(tmp_path / "nope.gguf")}, federation={"enabled": False})
    _, findings = doctor(cfg, "--no-model")
    (failed,) = [f for f in findings if f["check"] == "model" and f["status"] == "FAIL"]
    assert "nope.gguf" in failed["message"] and 'path = "default"' in failed["fix"]
    text = cfg.read_text()
    cfg.write_text(text.replace(f'path = "{tmp_path / "nope.gguf"}"', 'path = "default"'))
    assert 'path = "default"' in cfg.read_text()
    _, findings = doctor(cfg, "--no-model")
    assert not where(findings, "model", "FAIL"), findings
