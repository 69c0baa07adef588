#!/usr/bin/env bash
# The declared rust-version (workspace.package.rust-version) holds: the workspace resolves to
# dependency versions that all declare support for it, and, where the toolchain can be
# installed, `cargo +MSRV check` passes on that resolution.
#
# The committed Cargo.lock follows the newest versions (some need a newer Rust than our MSRV,
# e.g. time 0.3.4x+), so the check works on a scratch copy of the tracked files whose lock file
# is re-resolved with CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback: what a user on the
# MSRV gets from cargo's MSRV-aware resolver. The work tree and its Cargo.lock are not touched.
# Our own code's use of newer std APIs is caught by clippy's incompatible_msrv lint (clippy
# reads rust-version), which CI runs with -D warnings.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"

msrv="$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json, sys
m = json.load(sys.stdin)
v = {p["rust_version"] for p in m["packages"] if p.get("rust_version")}
assert len(v) == 1, f"crates declare different rust-versions: {v}"
print(v.pop())')"
echo "declared rust-version: $msrv"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$scratch"
cd "$scratch"
CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo update --quiet

# every package of the resolution (normal, build and dev dependencies, all features) declares
# a rust-version no newer than ours, or none
cargo metadata --format-version 1 --all-features | python3 -c '
import json, sys
msrv = tuple(int(x) for x in sys.argv[1].split("."))
norm = lambda v: tuple(int(x) for x in v.split("."))[:len(msrv)] + (0,) * (len(msrv) - len(v.split(".")))
m = json.load(sys.stdin)
ids = {n["id"] for n in m["resolve"]["nodes"]}
over = sorted((p["name"], p["version"], p["rust_version"]) for p in m["packages"]
              if p["id"] in ids and p.get("rust_version") and norm(p["rust_version"]) > msrv)
top = max((norm(p["rust_version"]) for p in m["packages"] if p["id"] in ids and p.get("rust_version")), default=())
for name, version, rv in over:
    print(f"  {name} {version} needs Rust {rv}")
print("newest rust-version in the MSRV resolution:", ".".join(map(str, top)))
sys.exit(1 if over else 0)
' "$msrv"

if rustup toolchain install "$msrv" --profile minimal >/dev/null 2>&1; then
  CARGO_TARGET_DIR="$repo/target/msrv" cargo "+$msrv" check --workspace --all-features --locked --quiet
  echo "cargo +$msrv check --workspace --all-features: ok"
else
  echo "the $msrv toolchain cannot be installed here: checked the dependency resolution only"
fi
