#!/usr/bin/env bash
# make test: every test of the workspace, then the 10-minute split of
# tests/partitions.rs alone. Run beside the other test binaries it made no
# run shorter (its six nodes slow the rest as much as they overlap), and the
# busy machine slowed its heal to the edge of the issue's 60 s. Fails if
# either part fails; after a failed suite the split is skipped (it would
# add ten minutes to an answer that is already "failed"), unless
# RINGSHARE_SPLIT_ANYWAY=1.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
LONG=a_ring_split_for_10_min_heals_into_one_with_every_acknowledged_write_kept

status=0
$CARGO test --workspace --no-fail-fast -- --skip "$LONG" || status=$?
if [ "$status" -ne 0 ] && [ "${RINGSHARE_SPLIT_ANYWAY:-0}" != 1 ]; then
    echo "test.sh: the suite failed (exit $status); the 10-minute split is skipped (RINGSHARE_SPLIT_ANYWAY=1 runs it)" >&2
    exit $status
fi
echo "test.sh: the 10-minute split (tests/partitions.rs), alone"
if ! $CARGO test -q -p ringshare-tests --test partitions -- --exact "$LONG" --list | grep -q "^$LONG: test"; then
    echo "test.sh: tests/partitions.rs has no test $LONG" >&2
    exit 1
fi
$CARGO test -p ringshare-tests --test partitions -- --exact "$LONG" --nocapture || status=$?
exit $status
