#!/usr/bin/env bash
# Benchmark (not a test): a 1 GiB upload and download through a ringshare node
# (release build, default plugins) against nginx serving the same file on
# loopback, in the same run. Prints best-of-N times, ratios and the node's
# peak RSS. Usage: scripts/bench-transfer.sh [SIZE_MIB] [REPS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-1024}
reps=${2:-3}

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
(cd "$root" && cargo build --release -q -p ringshare)

work=$(mktemp -d /tmp/ringshare-bench.XXXXXX)
cleanup() {
  [ -n "${node_pid:-}" ] && kill "$node_pid" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "making a ${size_mib} MiB file" >&2
head -c "$((size_mib << 20))" /dev/urandom > "$work/payload"
want=$(sha256sum "$work/payload" | cut -d' ' -f1)

# nginx with WebDAV PUT, serving and accepting files under $work/www.
nginx_port=$(free_port)
mkdir -p "$work/www" "$work/body"
cat > "$work/nginx.conf" <<CONF
user root;
worker_processes 1;
daemon on;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events {}
http {
  access_log off;
  sendfile on;
  client_body_temp_path $work/body;
  server {
    listen 127.0.0.1:$nginx_port;
    root $work/www;
    client_max_body_size 0;
    location / { dav_methods PUT; create_full_put_path on; }
  }
}
CONF
"$NGINX" -c "$work/nginx.conf" -e "$work/nginx-error.log"

node_port=$(free_port)
"$root/target/release/ringshare" node --listen "127.0.0.1:$node_port" --data "$work/node" \
  --plugins "$root/target/plugins/default" > "$work/node.out" 2> "$work/node.log" &
node_pid=$!
for _ in $(seq 1 200); do grep -q listening "$work/node.out" 2>/dev/null && break; sleep 0.05; done
curl -sf "http://127.0.0.1:$node_port/plugins" >/dev/null

seconds() { curl -s -o /dev/null -w '%{time_total}' "$@"; }
best() { sort -g | head -1; }

for server in nginx node; do
  if [ $server = nginx ]; then base="http://127.0.0.1:$nginx_port/payload"; put_url=$base
  else base="http://127.0.0.1:$node_port/files/payload"; put_url="$base?overwrite=true"; fi
  up=$(for _ in $(seq "$reps"); do seconds -f -T "$work/payload" "$put_url"; echo; done | best)
  down=$(for _ in $(seq "$reps"); do seconds -f "$base"; echo; done | best)
  got=$(curl -sf "$base" | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || { echo "$server returned different bytes" >&2; exit 1; }
  eval "${server}_up=$up ${server}_down=$down"
done

rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$node_pid/status")
mibps() { python3 -c "print(f'{$size_mib / $1:.0f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
cat <<REPORT
file: ${size_mib} MiB, best of ${reps}, loopback, $(nproc) cores
| direction | nginx s (MiB/s) | ringshare s (MiB/s) | ringshare/nginx throughput |
|---|---|---|---|
| upload   | $nginx_up ($(mibps "$nginx_up")) | $node_up ($(mibps "$node_up")) | $(ratio "$nginx_up" "$node_up") |
| download | $nginx_down ($(mibps "$nginx_down")) | $node_down ($(mibps "$node_down")) | $(ratio "$nginx_down" "$node_down") |
node peak RSS (VmHWM): $((rss_kib / 1024)) MiB for a ${size_mib} MiB file
REPORT
