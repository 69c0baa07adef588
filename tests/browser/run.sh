#!/usr/bin/env bash
# Runs the browser client's unit tests and the real-browser tests of the live event page.
#
#   FERRET_WS_BIN=/path/to/ferret-ws tests/browser/run.sh   (default: target/debug/ferret-ws)
#
# Needs Node 20+. Installs Debian's chromium if /usr/bin/chromium is missing, redis-server if
# it is missing (for the cluster-mode test), playwright-core
# (npm ci) if node_modules is missing, and builds the server if the binary is missing. It never
# downloads a browser of Playwright's own.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

# A relative FERRET_WS_BIN is taken relative to the caller's directory.
FERRET_WS_BIN="${FERRET_WS_BIN:-$repo/target/debug/ferret-ws}"
case "$FERRET_WS_BIN" in
  /*) ;;
  *) FERRET_WS_BIN="$(pwd)/$FERRET_WS_BIN" ;;
esac
export FERRET_WS_BIN
cd "$here"

if [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: installing chromium from Debian" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "run.sh: installing redis-server from Debian (the cluster-mode page test)" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi

if [ ! -d node_modules/playwright-core ]; then
  echo "run.sh: npm ci" >&2
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi

if [ ! -x "$FERRET_WS_BIN" ]; then
  echo "run.sh: $FERRET_WS_BIN not found; building ferret-ws-server" >&2
  (cd "$repo" && cargo build -q -p ferret-ws-server)
fi

mkdir -p artifacts
node --test client.test.js page.test.js
