#!/usr/bin/env bash
# cluster.sh [--smoke]: ferret-ws embedded, one node on Redis, and three nodes on one Redis.
#
# Writes results/cluster-STAMP.md (and .jsonl), one table:
#   - fanout 1000x500 at max rate and 1000x200 at 100 ev/s for the embedded hub
#     (peers/ferret-ws) and one node on Redis (peers/ferret-ws-redis), through run.sh;
#   - three nodes on one private Redis (all on core 0 with Redis, the load generator on
#     core 1), subscribers and publishers spread over them round robin; the load generator
#     checks that every subscriber saw the same event_id order.
# Needs redis-server (apt-get install redis-server) besides what run.sh needs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
smoke=0; [ "${1:-}" = "--smoke" ] && smoke=1
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$here/results/cluster-$stamp.jsonl"
mkdir -p results/logs
if [ "$smoke" = 1 ]; then
  max="--subscribers 100 --events 100 --rate max --publishers 2 --payload-bytes 100 --timeout-s 30 --stall-s 10"
  steady="--subscribers 100 --events 50 --rate 50 --publishers 2 --payload-bytes 100 --timeout-s 20 --stall-s 10"
else
  max="--subscribers 1000 --events 500 --rate max --publishers 4 --payload-bytes 100 --timeout-s 90 --stall-s 15"
  steady="--subscribers 1000 --events 200 --rate 100 --publishers 4 --payload-bytes 100 --timeout-s 30 --stall-s 10"
fi

for peer in ferret-ws ferret-ws-redis; do
  # shellcheck disable=SC2086
  BENCH_RESULTS="$out" ./run.sh "$peer" fanout $max
  # shellcheck disable=SC2086
  BENCH_RESULTS="$out" ./run.sh "$peer" fanout $steady
done

# Three nodes on one Redis.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
./peers/ferret-ws/run.sh --setup >/dev/null
bin="${CARGO_TARGET_DIR:-$here/..}/target/release/ferret-ws"
[ -x "$bin" ] || bin="$here/../target/release/ferret-ws"
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port="$(free)"
pids=()
cleanup() {
  { for pid in "${pids[@]}"; do kill -KILL "$pid" || true; done; wait; } 2>/dev/null
}
trap cleanup EXIT
taskset -c 0 redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
urls=() spids=()
for n in 1 2 3; do
  port="$(free)"
  taskset -c 0 "$bin" --bind "127.0.0.1:$port" --redis "redis://127.0.0.1:$redis_port/" \
    >"results/logs/cluster-node$n.$stamp.log" 2>&1 &
  pids+=($!); spids+=(--server-pid "$!"); urls+=(--url "http://127.0.0.1:$port")
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.05; done
done
loadgen="$here/loadgen/target/release/loadgen"
# shellcheck disable=SC2086
result="$(taskset -c 1 "$loadgen" fanout "${urls[@]}" "${spids[@]}" $max)"
printf 'ferret-ws x3 on Redis\t%s\n' "$result"
printf '{"server":"ferret-ws x3 on Redis","args":"fanout %s","at":"%s","result":%s}\n' "$max" "$stamp" "$result" >>"$out"
cleanup; pids=()

python3 - "$out" <<'PY' > "results/cluster-$stamp.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| server | scenario | deliveries/s | p50 ms | p99 ms | same order everywhere | outcome |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    res = r["result"]
    lat = res.get("latency_ms") or {}
    rate = res.get("deliveries_per_s") or res.get("throughput_deliveries_per_s")
    order = res.get("same_order", res.get("order_consistent", ""))
    print(f"| {r['server']} | {r['args'].split(' --timeout')[0]} | {rate if rate is not None else ''} | "
          f"{lat.get('p50', '')} | {lat.get('p99', '')} | {order} | {res.get('outcome', '')} |")
PY
cat "results/cluster-$stamp.md"
