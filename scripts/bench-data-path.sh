#!/usr/bin/env bash
# Benchmark (not a test): the data path of release-built nodes against what
# people would use instead, on the same machine in the same run, with a
# file of SIZE_MIB (default 1 GiB) of random bytes, REPS rounds (default 3)
# alternating between the two sides; prints best and median of each.
#
#   local download     GET from the holder            vs nginx `sendfile on`
#   upload, k = 1      PUT to a 1-copy ring           vs nginx WebDAV PUT, and cp + sync
#   upload, k = 3      PUT to a 3-node, 3-copy ring   vs nginx taking 3 PUTs at once, and
#                                                     3 copies made and synced at once (the disk's
#                                                     durable floor: nginx does not sync)
#   cross-node         GET through a non-holder       vs nginx proxy_pass to nginx
#
# Each node's resident memory is sampled every 100 ms throughout; the
# largest sample is reported. Usage: scripts/bench-data-path.sh [SIZE_MIB] [REPS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-1024}
reps=${2:-5}

. "$root/scripts/bench-lib.sh"
bench_settle
bench_need nginx b3sum
(cd "$root" && cargo build --release -q -p ringshare)

work=$(mktemp -d /tmp/ringshare-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}" ${sampler:-}; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "making a ${size_mib} MiB file" >&2
head -c "$((size_mib << 20))" /dev/urandom > "$work/payload"
want=$(b3sum --no-names "$work/payload")

# nginx: a WebDAV/sendfile server, and a proxy in front of it.
nginx_port=$(free_port); proxy_port=$(free_port)
mkdir -p "$work/www" "$work/body"
nginx_start "$work" <<CONF
http {
  access_log off;
  sendfile on;
  client_body_temp_path $work/body;
  server {
    listen 127.0.0.1:$nginx_port;
    root $work/www;
    client_max_body_size 0;
    location / { dav_methods PUT DELETE; create_full_put_path on; }
  }
  server {
    listen 127.0.0.1:$proxy_port;
    location / {
      proxy_pass http://127.0.0.1:$nginx_port;
      proxy_buffers 8 1m;
      proxy_buffer_size 512k;
      proxy_max_temp_file_size 0;
    }
  }
}
CONF

# ringshare: a ring of two nodes keeping one copy, and one of three keeping three.
start_node() { # name replicas [join]
  local port; port=$(free_port)
  "$root/target/release/ringshare" node --amqp none --listen "127.0.0.1:$port" --data "$work/$1" --replicas "$2" \
    ${3:+--join "$3"} --plugins "$root/target/plugins/default" > "$work/$1.out" 2> "$work/$1.log" &
  pids+=($!)
  for _ in $(seq 1 200); do grep -q listening "$work/$1.out" 2>/dev/null && break; sleep 0.05; done
  eval "$1=127.0.0.1:$port"
}
start_node a 1; start_node b 1 "$a"
start_node c 3; start_node d 3 "$c"; start_node e 3 "$c"
ring_of() { curl -sf "http://$1/nodes" | python3 -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin) if n["alive"]))'; }
for _ in $(seq 1 100); do [ "$(ring_of "$a" 2>/dev/null || echo 0)" = 2 ] && [ "$(ring_of "$c" 2>/dev/null || echo 0)" = 3 ] && break; sleep 0.1; done

# Resident memory of every node, every 100 ms.
( while sleep 0.1; do for pid in "${pids[@]}"; do awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null; done; done ) > "$work/rss" &
sampler=$!

holder=$(curl -sf "http://$a/lookup/payload" | python3 -c 'import json,sys; print(json.load(sys.stdin)["holders"][0]["addr"])')
if [ "$holder" = "$a" ]; then other=$b; else other=$a; fi

seconds() { curl -s -o /dev/null -w '%{time_total}' "$@"; }
three_at_once() { # URL-PREFIX: three PUTs of the payload started together; wall time
  python3 - "$1" "$work/payload" <<'PY'
import subprocess, sys, time
prefix, payload = sys.argv[1], sys.argv[2]
t = time.perf_counter()
procs = [subprocess.Popen(["curl", "-sf", "-o", "/dev/null", "-T", payload, f"{prefix}{i}"]) for i in range(3)]
assert all(p.wait() == 0 for p in procs)
print(f"{time.perf_counter() - t:.6f}")
PY
}
cp_sync() { # COPIES: that many copies of the payload made at once, each synced; wall time
  python3 - "$work/payload" "$work/copy" "$1" <<'PY'
import os, shutil, sys, threading, time
payload, copy, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def one(i):
    shutil.copyfile(payload, f"{copy}{i}")
    fd = os.open(f"{copy}{i}", os.O_RDONLY); os.fsync(fd); os.close(fd)
t = time.perf_counter()
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
[th.start() for th in threads]; [th.join() for th in threads]
print(f"{time.perf_counter() - t:.6f}")
PY
  rm -f "$work/copy"*
}

declare -A times
# Each measurement starts with nothing dirty in the page cache: nginx does
# not sync what it takes, and its writeback must not be billed to the next
# command (nor ours to nginx).
run() { times[$1]+="$2 "; sync; }
# Every upload stores a new file: the previous one is deleted first, untimed
# (replacing a 1 GiB file makes the filesystem free the old one's pages and
# blocks inside the rename, which costs either side about as much as the
# write itself here and would hide the difference being measured).
fresh() { for url in "$@"; do curl -s -o /dev/null -X DELETE "$url"; done; sync; }
for round in $(seq "$reps"); do
  echo "round $round" >&2
  fresh "http://127.0.0.1:$nginx_port/payload"
  run nginx_put "$(seconds -f -T "$work/payload" "http://127.0.0.1:$nginx_port/payload")"
  fresh "http://$holder/files/payload"
  run node_put1 "$(seconds -f -T "$work/payload" "http://$holder/files/payload")"
  run cp_sync "$(cp_sync 1)"
  run nginx_get "$(seconds -f "http://127.0.0.1:$nginx_port/payload")"
  run node_get "$(seconds -f "http://$holder/files/payload")"
  run nginx_proxy "$(seconds -f "http://127.0.0.1:$proxy_port/payload")"
  run node_cross "$(seconds -f "http://$other/files/payload")"
  fresh "http://127.0.0.1:$nginx_port/three-"{0,1,2}
  run nginx_put3 "$(three_at_once "http://127.0.0.1:$nginx_port/three-")"
  fresh "http://$c/files/payload"
  run node_put3 "$(seconds -f -T "$work/payload" "http://$c/files/payload")"
  run cp_sync3 "$(cp_sync 3)"
done
for url in "http://$holder/files/payload" "http://$other/files/payload" "http://$c/files/payload"; do
  got=$(curl -sf "$url" | b3sum --no-names)
  [ "$got" = "$want" ] || { echo "$url returned different bytes" >&2; exit 1; }
done
kill "$sampler"; sampler=

stat() { printf '%s\n' ${times[$1]} | sort -g | python3 -c 'import sys; v=[float(x) for x in sys.stdin]; print(f"{v[0]:.3f} {v[len(v)//2]:.3f}")'; }
row() { # label baseline-label baseline-key node-key
  read -r bb bm < <(stat "$3"); read -r nb nm < <(stat "$4")
  python3 - "$1" "$2" "$bb" "$bm" "$nb" "$nm" "$size_mib" <<'PY'
import sys
label, base, bb, bm, nb, nm, size = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
mib = lambda s: f"{size / s:.0f}"
print(f"| {label} | {base}: {bb:.2f} s ({mib(bb)} MiB/s), median {bm:.2f} | {nb:.2f} s ({mib(nb)} MiB/s), median {nm:.2f} | **{bb / nb:.2f}** (median {bm / nm:.2f}) |")
PY
}
echo
echo "file: ${size_mib} MiB, best of ${reps} (and median), alternating, loopback, $(nproc) cores"
echo "| path | baseline | ringshare | ringshare / baseline throughput |"
echo "|---|---|---|---|"
row "local download" "nginx sendfile" nginx_get node_get
row "upload, k = 1" "nginx PUT" nginx_put node_put1
row "upload, k = 1" "cp + fsync" cp_sync node_put1
row "upload, k = 3, three nodes" "nginx, 3 PUTs at once" nginx_put3 node_put3
row "upload, k = 3, three nodes" "3 × (cp + fsync) at once" cp_sync3 node_put3
row "download through a non-holder" "nginx proxy_pass" nginx_proxy node_cross
echo "largest resident memory of any node, sampled every 100 ms: $(sort -n "$work/rss" | tail -1 | awk '{print int($1/1024)}') MiB"
