#!/usr/bin/env bash
# Peer script for the shared benchmark harness (shared/bench): builds ferret-ws in release and
# runs it on the port the harness gives. Install it as shared/bench/peers/ferret-ws/run.sh:
#
#   mkdir -p ../shared/bench/peers/ferret-ws
#   ln -s "$PWD/bench/ferret-ws-peer.sh" ../shared/bench/peers/ferret-ws/run.sh
#   (cd ../shared/bench && ./baseline.sh ferret-ws seed-fastapi node-ws axum-broadcast floor)
set -euo pipefail
repo="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
if [ "${1:-}" = "--setup" ]; then
  (cd "$repo" && cargo build --release -q -p ferret-ws-server)
  exit 0
fi
exec "$repo/target/release/ferret-ws" --bind "127.0.0.1:$1"
