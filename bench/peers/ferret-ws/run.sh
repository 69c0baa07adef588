#!/usr/bin/env bash
# usage: run.sh PORT      build (release) on first use, then exec the server in the foreground
#        run.sh --setup   build only
#
# ferret-ws itself, built from this work tree (`cargo build --release -p ferret-ws-server`),
# run with its defaults on 127.0.0.1:PORT. FERRET_WS_ARGS adds flags, e.g.
#   FERRET_WS_ARGS="--heartbeat-interval 1s --max-connections 20000" ../run.sh ferret-ws idle ...
# FERRET_WS_BIN runs another binary instead (no build).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
bin="${FERRET_WS_BIN:-}"
if [ -z "$bin" ]; then
  bin="${CARGO_TARGET_DIR:-$repo/target}/release/ferret-ws"
  # --setup (run before every measurement, unpinned) lets cargo decide whether anything
  # changed; a start only builds when there is no binary at all
  if [ "${1:-}" = "--setup" ] || [ ! -x "$bin" ]; then
    (cd "$repo" && cargo build --release --quiet -p ferret-ws-server) >&2
  fi
fi
[ "${1:-}" = "--setup" ] && exit 0
port="${1:?usage: run.sh PORT}"
# shellcheck disable=SC2086  # FERRET_WS_ARGS is a list of flags
exec "$bin" --bind "127.0.0.1:$port" ${FERRET_WS_ARGS:-}
