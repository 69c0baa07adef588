#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and fails on any crash.
#
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_TARGETS   space-separated targets (default: all of them)
#   FUZZ_SANITIZER "none" (default, works on stable) or "address" (needs nightly features:
#                  run with RUSTC_BOOTSTRAP=1 on a stable toolchain)
#
# New inputs go to a scratch corpus under fuzz/target/, so the committed seeds in
# fuzz/corpus/ stay small; a crash is saved in fuzz/artifacts/<target>/ and makes this fail.
# Add it to fuzz/corpus/<target>/ once fixed: the core test `fuzz_corpus` replays it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-none}"
targets="${FUZZ_TARGETS:-parse_message handshake hub_ops}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cd "$root/fuzz"
cargo fuzz build --sanitizer "$sanitizer"

failed=0
for target in $targets; do
  scratch="$root/fuzz/target/scratch-corpus/$target"
  mkdir -p "$scratch"
  log="$root/fuzz/target/fuzz-$target.log"
  echo "fuzz: $target for ${seconds}s"
  if cargo fuzz run --sanitizer "$sanitizer" "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
  else
    failed=1
    echo "fuzz: $target FAILED; the last lines of $log:"
    tail -n 60 "$log"
    ls "$root/fuzz/artifacts/$target" 2>/dev/null || true
  fi
done
exit "$failed"
