#!/usr/bin/env bash
# Benchmark (not a test): `GET /files` of a release node against nginx's JSON
# autoindex of the very same folder (the node's store), under `wrk -t2 -c32`,
# for 100 and 10,000 files, alternating, same run.
# Usage: scripts/bench-listing.sh [SECONDS] [REPS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-5}
reps=${2:-3}

. "$root/scripts/bench-lib.sh"
bench_settle
bench_need wrk nginx
(cd "$root" && cargo build --release -q -p ringshare)

work=$(mktemp -d /tmp/ringshare-listing.XXXXXX)
cleanup() {
  [ -n "${node_pid:-}" ] && kill "$node_pid" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

node_port=$(free_port)
"$root/target/release/ringshare" node --amqp none --listen "127.0.0.1:$node_port" --data "$work/node" --replicas 1 \
  --plugins "$root/target/plugins/default" > "$work/node.out" 2> "$work/node.log" &
node_pid=$!
for _ in $(seq 1 200); do grep -q listening "$work/node.out" 2>/dev/null && break; sleep 0.05; done
curl -sf "http://127.0.0.1:$node_port/plugins" >/dev/null

nginx_port=$(free_port)
nginx_start "$work" '{ worker_connections 1024; }' <<CONF
http {
  access_log off;
  server {
    listen 127.0.0.1:$nginx_port;
    location /files/ { alias $work/node/store/files/; autoindex on; autoindex_format json; }
  }
}
CONF

rate() { wrk -t2 -c32 -d"${secs}s" "$1" | awk '/Requests\/sec/ {print $2}'; }
best() { sort -g | tail -1; }
have=0
echo "| files | nginx autoindex req/s | ringshare GET /files req/s | ringshare / nginx |"
echo "|---|---|---|---|"
for count in 100 10000; do
  # Uploaded through the node (so each has its record), 8 at a time.
  seq "$have" "$((count - 1))" | xargs -P 8 -I{} \
    curl -sf -o /dev/null -X PUT --data-binary "file {}" "http://127.0.0.1:$node_port/files/f{}.txt"
  have=$count
  listed=$(curl -sf "http://127.0.0.1:$node_port/files" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [ "$listed" = "$count" ] || { echo "the node lists $listed files, not $count" >&2; exit 1; }
  nginx_rates=() node_rates=()
  for _ in $(seq "$reps"); do
    nginx_rates+=("$(rate "http://127.0.0.1:$nginx_port/files/")")
    node_rates+=("$(rate "http://127.0.0.1:$node_port/files")")
  done
  n=$(printf '%s\n' "${nginx_rates[@]}" | best); r=$(printf '%s\n' "${node_rates[@]}" | best)
  echo "| $count | $n | $r | $(python3 -c "print(f'{$r / $n:.2f}')") |"
done
echo "(best of $reps runs of ${secs} s each, alternating; $(nproc) cores; node peak RSS $(awk '/VmHWM/ {print int($2/1024)}' /proc/$node_pid/status) MiB)"
