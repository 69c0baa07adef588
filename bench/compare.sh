#!/usr/bin/env bash
# compare.sh [--smoke] [--publish] [PEER...]: ferret-ws and its peers, side by side.
#
# Runs every scenario for every peer (default: ferret-ws seed-fastapi node-ws axum-broadcast
# floor), scenario by scenario with the peers interleaved, BENCH_ROUNDS times (default 2),
# then writes, under results/ (git-ignored):
#   compare-STAMP.jsonl   every run's loadgen output
#   compare-STAMP.md      the summary table (the format of docs/BENCHMARKS.md) and one detail
#                         table per scenario
#   compare-STAMP.json    the headline figure of each scenario, what the chart is drawn from
#   compare-STAMP.svg     the chart
#   latest.{md,json,svg}  links to the newest of each
# --publish also copies them into the docs: docs/bench-DATE.md, docs/bench-DATE.json,
# docs/bench.svg, and the summary table between the compare.sh markers of docs/BENCHMARKS.md.
# --smoke runs each scenario small and once (about two minutes for all peers): it proves the
# harness works, its figures mean nothing. Publish only a full run on a quiet machine.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$here"
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

smoke=0 publish=0 peers=()
for a in "$@"; do
  case "$a" in
    --smoke) smoke=1 ;;
    --publish) publish=1 ;;
    -h|--help) usage 0 ;;
    -*) echo "compare.sh: unknown option $a" >&2; usage 64 >&2 ;;
    *) [ -x "peers/$a/run.sh" ] || { echo "compare.sh: no peers/$a/run.sh" >&2; exit 64; }
       peers+=("$a") ;;
  esac
done
[ ${#peers[@]} -gt 0 ] || peers=(ferret-ws seed-fastapi node-ws axum-broadcast floor)

# label | environment of the peer (;-separated assignments, - for none) | loadgen arguments
hb="FERRET_WS_ARGS=--heartbeat-interval 1s --max-connections 20000;HEARTBEAT=1"
if [ "$smoke" = 1 ]; then
  scenarios=(
    "fanout 20x200 max|-|fanout --subscribers 20 --events 200 --rate max --publishers 2 --payload-bytes 100 --timeout-s 20 --stall-s 5"
    "fanout 50x50 @50/s|-|fanout --subscribers 50 --events 50 --rate 50 --publishers 2 --payload-bytes 100 --timeout-s 10 --stall-s 5"
    "idle 300 x 2s|-|idle --connections 300 --seconds 2"
    "slow 20 (2 slow) x500, 4 KiB|-|slow --subscribers 20 --slow 2 --events 500 --rate max --publishers 2 --payload-bytes 4096 --slow-rcvbuf 16384 --timeout-s 20 --stall-s 5 --drain-s 3"
    "bigevent 1 MB to 10|-|bigevent --subscribers 10 --payload-bytes 1000000 --settle-s 2 --timeout-s 20"
    "idle 500 x 3s, 1 s heartbeat|$hb|idle --connections 500 --seconds 3"
  )
  rounds=1
else
  scenarios=(
    "fanout 100x2000 max|-|fanout --subscribers 100 --events 2000 --rate max --publishers 4 --payload-bytes 100 --timeout-s 90 --stall-s 15"
    "fanout 1000x500 max|-|fanout --subscribers 1000 --events 500 --rate max --publishers 4 --payload-bytes 100 --timeout-s 90 --stall-s 15"
    "fanout 1000x200 @100/s|-|fanout --subscribers 1000 --events 200 --rate 100 --publishers 4 --payload-bytes 100 --timeout-s 30 --stall-s 10"
    "idle 5000 x 20s|-|idle --connections 5000 --seconds 20 --connect-concurrency 64"
    "slow 200 (2 slow) x2000, 4 KiB|-|slow --subscribers 200 --slow 2 --events 2000 --rate max --publishers 4 --payload-bytes 4096 --slow-rcvbuf 16384 --timeout-s 60 --stall-s 10 --drain-s 10"
    "bigevent 1 MB to 1000|-|bigevent --subscribers 1000 --payload-bytes 1000000 --settle-s 2 --timeout-s 90"
    "idle 15000 x 20s, 1 s heartbeat|$hb|idle --connections 15000 --seconds 20 --connect-concurrency 64"
  )
  rounds=${BENCH_ROUNDS:-2}
fi

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p results
base="results/compare-$stamp"
out="$base.jsonl"
export BENCH_RUN_TIMEOUT=${BENCH_RUN_TIMEOUT:-240}

# the chart's Python environment
stampfile=".venv/.installed-$(sha1sum requirements.txt | cut -c1-12)"
if [ ! -e "$stampfile" ]; then
  { python3 -m venv .venv && .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt && touch "$stampfile"; } \
    || { echo "compare.sh: could not install bench/requirements.txt into bench/.venv" >&2; exit 1; }
fi
# build / install everything first, outside the measurements
(cd loadgen && cargo build --release --quiet) || exit 1
for p in "${peers[@]}"; do
  peers/$p/run.sh --setup >/dev/null 2>&1 || { echo "compare.sh: setup of $p failed (try peers/$p/run.sh --setup)" >&2; exit 1; }
done

t0=$(date +%s)
for sc in "${scenarios[@]}"; do
  IFS='|' read -r label envs args <<<"$sc"
  assigns=()
  if [ "$envs" != "-" ]; then IFS=';' read -r -a assigns <<<"$envs"; fi
  for round in $(seq "$rounds"); do
    for p in "${peers[@]}"; do
      # shellcheck disable=SC2086  # $args is a list of loadgen arguments
      line="$(env "${assigns[@]}" ./run.sh "$p" $args)"
      json="${line#*$'\t'}"
      [ -n "$json" ] || json='{"outcome":"no output"}'
      echo "[$label r$round] $line" | cut -c1-300 >&2
      python3 - "$p" "$label" "$round" "$envs" "./run.sh SERVER $args" "$json" >>"$out" <<'PY'
import json, sys
server, label, rnd, env, cmd, result = sys.argv[1:]
try:
    result = json.loads(result)
except ValueError:
    result = {"outcome": "unreadable output", "raw": result[:500]}
print(json.dumps({"server": server, "label": label, "round": int(rnd),
                  "env": "" if env == "-" else env.replace(";", " "), "cmd": cmd, "result": result}))
PY
    done
  done
done
t1=$(date +%s)

kind="full run"; [ "$smoke" = 1 ] && kind="SMOKE RUN (small scenarios, one round: proves the harness works, the figures mean nothing)"
machine="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)"
commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet 2>/dev/null || echo '+changes')"
{
  echo "# Benchmark run $(date -u '+%Y-%m-%d %H:%M UTC'): ferret-ws and its peers"
  echo
  echo "$kind. Generated by \`bench/compare.sh\` in $((t1 - t0)) s at commit $commit; raw results: \`bench/$out\` (not committed)."
  echo "Machine: $machine."
  echo "Server pinned to core ${BENCH_SERVER_CORE:-0}, loadgen to core ${BENCH_LOADGEN_CORE:-1}, both at nice ${BENCH_NICE:--10}. Compare ratios within this table, not absolute numbers across runs."
  echo "Each server/scenario pair ran $rounds time(s), peers interleaved; the tables keep, for each pair, the run in which other processes used the least CPU (\`other_cpu_util\`); all runs are in the raw file."
  echo "The \"1 s heartbeat\" scenario runs ferret-ws with \`${hb%%;*}\`"
  echo "and seed-fastapi with \`HEARTBEAT=1\`; the other peers have no heartbeat."
  echo
  echo "## Summary"
  echo
  python3 mktable.py "$out" --summary --bold ferret-ws
  echo
  echo "## Details"
  echo
  python3 mktable.py "$out"
} >"$base.md"
title="ferret-ws and its peers, $(date -u '+%Y-%m-%d') ($(nproc)-core machine, server on core ${BENCH_SERVER_CORE:-0}, load generator on core ${BENCH_LOADGEN_CORE:-1})"
[ "$smoke" = 1 ] && title="SMOKE RUN, figures mean nothing: $title"
python3 mktable.py "$out" --chart-json "$title" >"$base.json"
.venv/bin/python chart.py "$base.json" "$base.svg" || { echo "compare.sh: chart.py failed" >&2; exit 1; }
for ext in md json svg; do ln -sf "compare-$stamp.$ext" "results/latest.$ext"; done
echo "wrote bench/$base.{jsonl,md,json,svg}" >&2

if [ "$publish" = 1 ]; then
  day="$(date -u +%Y-%m-%d)"
  cp "$base.md" "$repo/docs/bench-$day.md"
  cp "$base.json" "$repo/docs/bench-$day.json"
  cp "$base.svg" "$repo/docs/bench.svg"
  python3 - "$repo/docs/BENCHMARKS.md" "$base.md" "$day" <<'PY'
import re, sys
doc, report, day = sys.argv[1:]
text = open(doc, encoding="utf-8").read()
summary = open(report, encoding="utf-8").read().split("## Summary\n", 1)[1].split("## Details", 1)[0].strip()
block = ("<!-- compare.sh: summary (bench/compare.sh --publish rewrites this block) -->\n"
         f"From the run of {day}; full tables: [`bench-{day}.md`](bench-{day}.md).\n\n"
         f"{summary}\n<!-- /compare.sh -->")
new, n = re.subn(r"<!-- compare\.sh: summary.*?<!-- /compare\.sh -->", lambda m: block, text, flags=re.S)
if n != 1:
    sys.exit(f"compare.sh: {doc} has no compare.sh markers; not rewritten")
open(doc, "w", encoding="utf-8").write(new)
PY
  echo "published: docs/bench-$day.md, docs/bench-$day.json, docs/bench.svg and the summary in docs/BENCHMARKS.md" >&2
fi
