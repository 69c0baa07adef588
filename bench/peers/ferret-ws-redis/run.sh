#!/usr/bin/env bash
# usage: run.sh PORT      build on first use, then run ferret-ws in cluster mode (one node)
#        run.sh --setup   build only
#
# ferret-ws on a private redis-server (started here on a free loopback port, without
# persistence, in the same process group, so that bench/run.sh stops both), with its
# defaults plus --redis. FERRET_WS_ARGS adds flags. Compare with peers/ferret-ws (embedded):
# the difference is the cost of the stream (one more hop per event).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "${1:-}" = "--setup" ]; then
  command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
  exec "$here/../ferret-ws/run.sh" --setup
fi
port="${1:?usage: run.sh PORT}"
redis_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
FERRET_WS_ARGS="--redis redis://127.0.0.1:$redis_port/ ${FERRET_WS_ARGS:-}" exec "$here/../ferret-ws/run.sh" "$port"
