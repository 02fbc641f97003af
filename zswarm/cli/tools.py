"""The machine's and the key's tools: `zswarm keygen`, `zswarm http-token`, `zswarm doctor`
(its checks are zswarm/doctor.py's). Exit codes: cli/common.py's policy.
"""

from __future__ import annotations

from pathlib import Path

import typer

from zswarm.cli.common import ConfigOpt, app, fail, failed, key_of, load
from zswarm.errors import ZswarmError
from zswarm.net.security import http_token, write_key_file
from zswarm.views import say

KeyOutOpt = typer.Option(..., "--out", "-o", metavar="FILE", help="the key file to create")


@app.command()
def keygen(out: Path = KeyOutOpt) -> None:
    """Make a new swarm key: CURVE encryption and membership for every node and client."""
    try:
        key = write_key_file(out)
    except ZswarmError as exc:
        failed(exc)
    say(f"wrote {out} (mode 0600), fingerprint {key.fingerprint}\n"
               "Next, on every machine of the swarm:\n"
               f"  1. copy the file, keeping it private:  scp -p {out} HOST:~/.config/zswarm/\n"
               "  2. in swarm.toml:  [security]\n"
               '                     swarm_key_file = "~/.config/zswarm/'
               f'{out.name}"\n'
               "  3. restart zswarm node. Nodes and clients without this key can no longer\n"
               "     join, read, vote or ask. To rotate the key or revoke one machine, make a\n"
               "     new key and copy it to the machines that stay.")


@app.command("http-token")
def http_token_cmd(config: Path | None = ConfigOpt) -> None:
    """Print the HTTP API key of a keyed swarm (derived from the swarm key; every member
    accepts it): for the status page, curl and OpenAI clients."""
    key = key_of(load(config))
    if key is None:
        fail("this config has no [security] swarm_key_file: its HTTP API takes the keys in "
             "[http] api_keys", 2)
    say(http_token(key))


@app.command()
def doctor(
    config: Path | None = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="one JSON object (ok, findings)"),
    browse: float = typer.Option(2.0, "--browse", metavar="SECONDS",
                                 help="how long to listen for other nodes over mDNS"),
    model: bool = typer.Option(True, "--model/--no-model",
                               help="load the model and generate one token (a few seconds)"),
) -> None:
    """Check this machine for the swarm: address, multicast, mDNS, ports, peers, model.

    Each finding says what is wrong and how to fix it; the exit code is 1 when
    something is wrong (warnings alone give 0).
    """
    cfg = load(config)
    from zswarm import doctor as checks  # late: `zswarm --help` stays quick

    try:
        findings = checks.run_checks(cfg, browse_s=browse, check_model=model)
    except ZswarmError as exc:
        failed(exc)
    say(checks.to_json(findings) if as_json else
               f"zswarm doctor ({cfg.source})\n{checks.render(findings)}")
    raise typer.Exit(1 if checks.failed(findings) else 0)
