#!/usr/bin/env bash
# The crates meant for crates.io package cleanly. `cargo package --no-verify` for each of them
# (together, so that crates depending on unpublished siblings resolve them from the local
# packages), then a look inside every .crate: the published manifest has a version on each
# ferret-ws dependency, a readme that is in the package, documentation, keywords, categories and
# rust-version. Also fails when a crate that is not in the list below could be published (mark it
# `publish = false`, or add it here). Works offline once the registry index is cached.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

crates=(ferret-ws-async-std ferret-ws-core ferret-ws-runtime ferret-ws-server ferret-ws-tokio)

publishable="$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null || cargo metadata --no-deps --format-version 1)"
publishable="$(python3 -c 'import json, sys
m = json.load(sys.stdin)
print(" ".join(sorted(p["name"] for p in m["packages"] if p.get("publish") is None)))' <<<"$publishable")"
if [ "$publishable" != "${crates[*]}" ]; then
  echo "publishable crates are: $publishable"
  echo "expected:               ${crates[*]}"
  echo "(a new crate that is not for crates.io needs publish = false; one that is goes into .ci/package.sh)"
  exit 1
fi

args=()
for c in "${crates[@]}"; do args+=(-p "$c"); done
cargo package --no-verify --allow-dirty --offline "${args[@]}" 2>/dev/null \
  || cargo package --no-verify --allow-dirty "${args[@]}"

target="$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
for c in "${crates[@]}"; do
  version="$(cargo pkgid -p "$c" --offline 2>/dev/null | sed 's/.*[#@]//')"
  crate="$target/package/$c-$version.crate"
  python3 - "$crate" "$c-$version" <<'PY'
import sys, tarfile, tomllib
path, root = sys.argv[1:]
with tarfile.open(path) as t:
    names = set(t.getnames())
    manifest = tomllib.loads(t.extractfile(f"{root}/Cargo.toml").read().decode())
pkg = manifest["package"]
problems = [f"no {k}" for k in ("description", "license", "repository", "documentation", "readme",
                                "keywords", "categories", "rust-version") if not pkg.get(k)]
if pkg.get("readme") and f"{root}/{pkg['readme']}" not in names:
    problems.append(f"readme {pkg['readme']} is not in the package")
for table in ("dependencies", "build-dependencies"):
    for name, dep in manifest.get(table, {}).items():
        if name.startswith("ferret-ws") and (not isinstance(dep, dict) or "version" not in dep):
            problems.append(f"{table}.{name} has no version")
if problems:
    sys.exit(f"{path}: " + "; ".join(problems))
print(f"ok  {root}.crate  ({len(names)} files; readme {pkg['readme']}, rust-version {pkg['rust-version']})")
PY
done
