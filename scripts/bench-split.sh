#!/usr/bin/env bash
# Writes while the network splits 3|3 and heals, on hosts of their own
# (network namespaces: run as root). See tests/split_writes.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release -p ringshare-tests --example split_writes -- "${1:-20}"
