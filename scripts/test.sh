#!/usr/bin/env bash
# make test: every test of the workspace. The 10-minute split of
# tests/partitions.rs mostly waits, so its test binary runs beside the
# others (started directly: cargo runs one test binary at a time) instead
# of adding ten minutes after them. Fails if either part fails.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
LONG=a_ring_split_for_10_min_heals_into_one_with_every_acknowledged_write_kept

$CARGO test --workspace --no-run
binary=$($CARGO test -p ringshare-tests --test partitions --no-run --message-format=json \
    | { grep -o '"executable":"[^"]*/partitions-[^"]*"' || true; } | cut -d'"' -f4 | tail -n 1)
[[ -x "$binary" ]] || { echo "test.sh: no partitions test binary found" >&2; exit 1; }
mkdir -p target/tmp
log=target/tmp/$LONG.log
# Run from the package's folder, as cargo test does.
(cd tests && exec "$binary" "$LONG" --exact --nocapture) > "$log" 2>&1 &
long=$!
trap 'kill "$long" 2>/dev/null || true' EXIT

status=0
$CARGO test --workspace --no-fail-fast -- --skip "$LONG" || status=$?
echo "test.sh: waiting for the 10-minute split (tests/partitions.rs, log: $log)"
if wait "$long" && grep -q "test result: ok. 1 passed" "$log"; then
    grep -E "^split of|test result" "$log"
else
    echo "test.sh: the 10-minute split failed:" >&2
    cat "$log" >&2
    status=1
fi
trap - EXIT
exit $status
