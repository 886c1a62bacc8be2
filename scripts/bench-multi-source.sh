#!/usr/bin/env bash
# Downloads from every holder at once against one holder at a time, on
# hosts of their own with limited links, unlimited, and on loopback
# (network namespaces: run as root). See tests/download_sources.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release -p ringshare-tests --example download_sources -- "${1:-128}"
