#!/usr/bin/env bash
# Benchmark (not a test): many small files, side by side in one run.
# FILES files of SIZE bytes (default 20,000 of 1 KiB) PUT by 8 concurrent
# clients, then read back (every body checked), against:
#
#   nginx WebDAV PUT / GET (sendfile; nginx does not sync what it takes)
#   one ringshare node keeping one copy (k = 1)
#   the same without its read cache (--read-cache-mib 0): what reads of a
#   store larger than the cache get
#   three ringshare nodes keeping three copies (k = 3), uploads spread over the three
#
# Each side (nginx, and each node) writes to an ext4 file system of its
# own, made new for the run (as root; see bench_fresh_fs in bench-lib.sh).
# Prints each side's PUT rate, the rate of its last tenth of files against
# its first tenth (a rate that falls as the store fills is a cost that grows
# with the number of files), and its GET rate, with ratios to nginx. Then a
# mixed load on nginx and on the k = 3 ring: 32 clients for 30 s, half PUTs
# of new files, half GETs of 2,000 files written first: operations per
# second and each kind's p50 and p99 latency.
# Usage: scripts/bench-small-files.sh [FILES] [SIZE]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
files=${1:-20000}
size=${2:-1024}

. "$root/scripts/bench-lib.sh"
bench_settle
bench_need nginx
(cd "$root" && cargo build --release -q -p ringshare && cargo bench -q -p ringshare --bench small_files --no-run)
client=$(cd "$root" && cargo bench -q -p ringshare --bench small_files --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "small_files" and m.get("executable"):
        print(m["executable"])')

work=$(mktemp -d /tmp/ringshare-bench-small.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  bench_unmount_all
  rm -rf "$work"
}
trap cleanup EXIT

# Each side on a file system of its own, new (see bench_fresh_fs).
bench_fresh_fs "$work/nginx-fs"
nginx_port=$(free_port)
mkdir -p "$work/nginx-fs/www/small" "$work/nginx-fs/body"
nginx_start "$work" '{ worker_connections 1024; }' <<CONF
http {
  access_log off;
  sendfile on;
  client_body_temp_path $work/nginx-fs/body;
  server {
    listen 127.0.0.1:$nginx_port;
    root $work/nginx-fs/www;
    client_max_body_size 0;
    location / { dav_methods PUT DELETE; create_full_put_path on; }
  }
}
CONF

start_node() { # name replicas [join] [more options]
  local port; port=$(free_port)
  bench_fresh_fs "$work/fs-$1"
  "$root/target/release/ringshare" node --amqp none --listen "127.0.0.1:$port" --data "$work/fs-$1/data" --replicas "$2" \
    ${3:+--join "$3"} --plugins "$root/target/plugins/default" "${@:4}" > "$work/$1.out" 2> "$work/$1.log" &
  pids+=($!)
  for _ in $(seq 1 200); do grep -q listening "$work/$1.out" 2>/dev/null && break; sleep 0.05; done
  eval "$1=127.0.0.1:$port"
}
start_node a 1
start_node b 1 "" --read-cache-mib 0
start_node c 3; start_node d 3 "$c"; start_node e 3 "$c"
ring_of() { curl -sf "http://$1/nodes" | python3 -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin) if n["alive"]))'; }
for _ in $(seq 1 100); do [ "$(ring_of "$c" 2>/dev/null || echo 0)" = 3 ] && break; sleep 0.1; done

measure() { # label base-urls
  echo "$1: $files files of $size bytes" >&2
  sync
  "$client" --base "$2" --files "$files" --size "$size" --clients 8 --prefix "$1" | tee "$work/$1.json" >&2
}
measure nginx "http://127.0.0.1:$nginx_port/small/"
measure k1 "http://$a/files/"
measure k1nocache "http://$b/files/"
measure k3 "http://$c/files/,http://$d/files/,http://$e/files/"
# The mixed load: 32 clients, half PUTs of new files and half GETs of
# 2,000 files written first, for 30 s.
mixed() { # label base-urls
  echo "$1: mixed load, 32 clients, 30 s" >&2
  sync
  "$client" --base "$2" --files 2000 --size "$size" --clients 32 --prefix "$1" --mixed 30 | tee "$work/$1.json" >&2
}
mixed nginxmixed "http://127.0.0.1:$nginx_port/small/"
mixed k3mixed "http://$c/files/,http://$d/files/,http://$e/files/"

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
r = {k: json.load(open(f"{work}/{k}.json")) for k in ("nginx", "k1", "k1nocache", "k3")}
n = r["nginx"]
print(f"{n['files']} files of {n['size']} bytes, {n['clients']} clients")
print(f"{'':26} {'PUT/s':>9} {'vs nginx':>9} {'last/first tenth':>17} {'GET/s':>9} {'vs nginx':>9}")
rows = (("nginx", "nginx WebDAV"), ("k1", "ringshare k = 1"), ("k1nocache", "  the same, no read cache"),
        ("k3", "ringshare k = 3 (3 nodes)"))
for k, label in rows:
    x = r[k]
    print(f"{label:26} {x['put_per_s']:9.0f} {x['put_per_s']/n['put_per_s']:8.2f}x "
          f"{x['put_last_tenth_per_s']/x['put_first_tenth_per_s']:16.2f}x {x['get_per_s']:9.0f} {x['get_per_s']/n['get_per_s']:8.2f}x")
m = {k: json.load(open(f"{work}/{k}.json")) for k in ("nginxmixed", "k3mixed")}
print("\nmixed load: 32 clients, half PUTs of new files, half GETs, 30 s")
print(f"{'':26} {'ops/s':>9} {'vs nginx':>9} {'PUT p50':>9} {'PUT p99':>9} {'GET p50':>9} {'GET p99':>9}")
for k, label in (("nginxmixed", "nginx WebDAV"), ("k3mixed", "ringshare k = 3 (3 nodes)")):
    x = m[k]
    print(f"{label:26} {x['mixed_ops_per_s']:9.0f} {x['mixed_ops_per_s']/m['nginxmixed']['mixed_ops_per_s']:8.2f}x "
          f"{x['mixed_put_p50_ms']:7.1f}ms {x['mixed_put_p99_ms']:7.1f}ms {x['mixed_get_p50_ms']:7.1f}ms {x['mixed_get_p99_ms']:7.1f}ms")
PY
