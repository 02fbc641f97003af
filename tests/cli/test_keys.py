"""`zswarm keygen`, and `zswarm ask` / `zswarm peers` against a node with a swarm key."""

from __future__ import annotations

import json
import os
import secrets

from typer.testing import CliRunner

from tests.helpers import zswarm
from zswarm.cli import app
from zswarm.testing.cluster import NodeProcess, node_config, wait_until

runner = CliRunner()


def test_keygen_writes_a_private_key_once(tmp_path):
    out = tmp_path / "swarm.key"
    result = runner.invoke(app, ["keygen", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o777 == 0o600
    assert "fingerprint" in result.output and "swarm_key_file" in result.output
    secret = out.read_text()
    assert secret.split('secret = "')[1][:40] not in result.output  # never printed
    again = runner.invoke(app, ["keygen", "--out", str(out)])
    assert again.exit_code == 2 and "exists" in again.output
    assert out.read_text() == secret


def test_a_bad_key_file_is_exit_2_naming_it(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text('secret = "short"\n')
    cfg = node_config(tmp_path, "n", swarm="s", answers=["42"],
                      security={"swarm_key_file": str(bad)})
    run = zswarm("ask", "hi", "--config", str(cfg), "--local")
    assert run.returncode == 2 and str(bad) in run.stderr and "zswarm keygen" in run.stderr


def test_ask_and_peers_use_the_key_from_the_config(tmp_path):
    key = tmp_path / "swarm.key"
    assert runner.invoke(app, ["keygen", "--out", str(key)]).exit_code == 0
    swarm = "keys-" + secrets.token_hex(4)
    keyed = node_config(tmp_path, "k", swarm=swarm, answers=["42"],
                        security={"swarm_key_file": str(key)})
    with NodeProcess(keyed) as node:
        info = node.wait_ready()
        # the banner follows the ready file (node.json) by a moment
        wait_until(lambda: "swarm key on (fingerprint" in node.log(), 10, what="the banner")
        asked = zswarm("ask", "6 * 7?", "--config", str(keyed))
        assert asked.returncode == 0 and asked.stdout.strip() == "42", asked.stderr
        peers = zswarm("peers", "--config", str(keyed))
        assert peers.returncode == 0 and "swarm key on (fingerprint" in peers.stdout
        open_cfg = node_config(tmp_path, "o", swarm=swarm, answers=["0"])
        refused = zswarm("peers", "--config", str(open_cfg), "--node", info.rpc_endpoint)
        assert refused.returncode == 1 and "no zswarm node answers" in refused.stderr
        assert "a node of a keyed swarm" in refused.stderr, refused.stderr  # the key is named
        # the same state dir as the keyed node, without its key: running, not "start it again"
        unkeyed = tmp_path / "k" / "unkeyed.toml"
        unkeyed.write_text(keyed.read_text().replace(f'swarm_key_file = "{key}"', ""))
        assert "swarm_key_file" not in unkeyed.read_text()
        for cmd in (("ask", "6 * 7?"), ("peers",)):
            said = zswarm(*cmd, "--config", str(unkeyed))
            assert said.returncode == 1, said.stderr
            assert "the node runs with key" in said.stderr and "this config with no key" \
                in said.stderr, said.stderr
            assert "Start it again" not in said.stderr
        for cfg, verdict in ((keyed, "same swarm, same key"),
                             (open_cfg, "not a peer: it uses a swarm key and this node has none")):
            seen = zswarm("peers", "--config", str(cfg), "--browse", "2", "--json")
            (k,) = [p for p in json.loads(seen.stdout) if p["name"] == "k"]
            assert verdict in k["detail"], k
        seen = zswarm("peers", "--browse", "2", "--json")  # no config: no node to judge for
        (k,) = [p for p in json.loads(seen.stdout) if p["name"] == "k"]
        assert "not a peer" not in k["detail"] and "key on" in k["detail"], k
    with NodeProcess(node_config(tmp_path, "open", swarm=swarm, answers=["42"])) as node:
        node.wait_ready()
        assert "OPEN SWARM" in node.log()
        peers = zswarm("peers", "--config", str(node.config))
        assert "swarm key OFF: an open swarm" in peers.stdout
    assert os.path.exists(key)
