#!/usr/bin/env bash
# Benchmark (not a test): a large network on one machine. NODES real node
# processes (release build) on loopback: ring convergence, memory per idle
# node, lookup hops through /lookup, and a network listing of FILES files
# against nginx's JSON autoindex of them. See scripts/large_ring.py.
# Usage: scripts/bench-large-ring.sh [NODES] [FILES]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nodes=${1:-64}
files=${2:-100000}

. "$root/scripts/bench-lib.sh"
bench_settle
bench_need nginx b3sum
(cd "$root" && cargo build --release -q -p ringshare)

work=$(mktemp -d /tmp/ringshare-large.XXXXXX)
cleanup() {
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

nginx_port=$(free_port)
nginx_start "$work" <<CONF
http {
  access_log off;
  server {
    listen 127.0.0.1:$nginx_port;
    location /flat/ { alias $work/flat/; autoindex on; autoindex_format json; }
  }
}
CONF

python3 "$root/scripts/large_ring.py" "$root/target/release/ringshare" "$root/target/plugins/default" "$work" \
  "$nodes" "$files" "$nginx_port"
