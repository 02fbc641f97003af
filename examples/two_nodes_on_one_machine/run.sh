#!/usr/bin/env bash
# Two nodes on one machine find each other over mDNS (on 127.0.0.1 only), then answer one
# question together: `--n 2 --strategy majority` takes one candidate from each node.
# Run from the repository root after ./scripts/install.sh:
#   examples/two_nodes_on_one_machine/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
zswarm="${ZSWARM:-.venv/bin/zswarm}"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait; }
trap cleanup EXIT

"$zswarm" node --config "$here/a.toml" & pids+=($!)
"$zswarm" node --config "$here/b.toml" & pids+=($!)

echo "waiting for a to see b ..."
for _ in $(seq 1 100); do
  if "$zswarm" peers --config "$here/a.toml" --json 2>/dev/null | grep -q '"state": "alive"'; then
    break
  fi
  sleep 0.2
done
"$zswarm" peers --config "$here/a.toml"
"$zswarm" ask "What is the capital of France?" --config "$here/a.toml" \
  --n 2 --strategy majority --temperature 0 --explain
