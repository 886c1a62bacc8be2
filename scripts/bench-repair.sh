#!/usr/bin/env bash
# Benchmark (not a test): anti-entropy over a large store. Three real node
# processes (release build, k = 3) each holding FILES small files: an idle
# repair pass (bytes on loopback, CPU) against the per-file pass it
# replaced, and a node catching up on 1,000 writes it missed. See
# scripts/repair_pass.py.
# Usage: scripts/bench-repair.sh [FILES]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
files=${1:-1000000}

. "$root/scripts/bench-lib.sh"
bench_settle
bench_need b3sum
(cd "$root" && cargo build --release -q -p ringshare)

work=$(mktemp -d /tmp/ringshare-repair.XXXXXX)
trap 'rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true
python3 "$root/scripts/repair_pass.py" "$root/target/release/ringshare" "$root/target/plugins/default" "$work" "$files"
