#!/usr/bin/env bash
# Benchmark (not a test) of what the RabbitMQ bridge brings, same machine,
# same run (release build, broker on loopback):
#   1. messages/s through the bridge vs lapin straight to the broker
#      (cargo bench --bench bridge);
#   2. GET /files?scope=network from the live index vs this node's own
#      listing vs asking every node (walk=true), 4 nodes, FILES files, wrk;
#   3. time from kill -9 of a holder to k = 3 live copies of all its files,
#      repair woken by the departure vs the periodic repair loop alone.
# Usage: scripts/bench-bridge.sh [FILES=1000]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
files=${1:-1000}

. "$root/scripts/bench-lib.sh"
bench_settle
bench_need wrk
"$root/scripts/broker.sh"
(cd "$root" && cargo build --release -q -p ringshare)

work=$(mktemp -d /tmp/ringshare-bench-bridge.XXXXXX)
vhost="ringshare-bench-$$"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rabbitmqctl delete_vhost "$vhost" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
rabbitmqctl add_vhost "$vhost" >/dev/null
rabbitmqctl set_permissions -p "$vhost" guest ".*" ".*" ".*" >/dev/null
amqp="amqp://guest:guest@127.0.0.1:5672/$vhost"

echo "## 1. messages through the bridge" >&2
(cd "$root" && cargo bench -q -p ringshare --bench bridge 2>/dev/null)

start_ring() { # NAME N EXTRA-ARGS...: N nodes under $work/NAME, addresses in $work/NAME.addrs
  local name=$1 n=$2; shift 2
  : > "$work/$name.addrs"
  local first=""
  for i in $(seq 1 "$n"); do
    local port; port=$(free_port)
    "$root/target/release/ringshare" node --listen "127.0.0.1:$port" --data "$work/$name/n$i" \
      --plugins "$root/target/plugins/default" ${first:+--join "$first"} "$@" \
      > "$work/$name.n$i.out" 2> "$work/$name.n$i.log" &
    pids+=($!)
    echo "127.0.0.1:$port $! $work/$name/n$i" >> "$work/$name.addrs"
    for _ in $(seq 1 200); do grep -q listening "$work/$name.n$i.out" 2>/dev/null && break; sleep 0.05; done
    first=${first:-127.0.0.1:$port}
  done
  local addr; addr=$(head -1 "$work/$name.addrs" | cut -d' ' -f1)
  for _ in $(seq 1 200); do
    [ "$(curl -sf "http://$addr/nodes" | python3 -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin) if n["alive"]))' 2>/dev/null || echo 0)" = "$n" ] && break
    sleep 0.1
  done
}

upload_many() { # ADDR COUNT SIZE PREFIX
  python3 - "$@" <<'PY'
import http.client, os, sys
addr, count, size, prefix = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
host, port = addr.split(":")
conn = http.client.HTTPConnection(host, int(port))
for i in range(count):
    conn.request("PUT", f"/files/{prefix}{i:05d}.bin", body=os.urandom(size))
    r = conn.getresponse(); r.read()
    assert r.status == 201, (r.status, i)
PY
}

echo "## 2. network listing, $files files on 4 nodes" >&2
start_ring listing 4 --amqp "$amqp" --replicas 3
a=$(head -1 "$work/listing.addrs" | cut -d' ' -f1)
upload_many "$a" "$files" 100 f
# The live index has every file once the events are in.
for _ in $(seq 1 300); do
  [ "$(curl -sf "http://$a/files?scope=network" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = "$files" ] && break
  sleep 0.1
done
rps() { wrk -t2 -c32 -d"$2" "$1" 2>/dev/null | awk '/Requests\/sec/ {print $2}'; }
local_rps=$(rps "http://$a/files" 5s)
live_rps=$(rps "http://$a/files?scope=network" 5s)
walk_rps=$(rps "http://$a/files?scope=network&walk=true" 5s)

echo "## 3. crash to k copies" >&2
crash_to_copies() { # NAME EXTRA-ARGS...: seconds from kill -9 of a holder to 3 live copies of each file
  local name=$1; shift
  start_ring "$name" 5 --replicas 3 --repair-ms 30000 "$@"
  local addr; addr=$(head -1 "$work/$name.addrs" | cut -d' ' -f1)
  upload_many "$addr" 30 1048576 c
  python3 - "$work/$name.addrs" <<'PY'
import os, signal, sys, time
nodes = [line.split() for line in open(sys.argv[1])]
names = [f"c{i:05d}.bin" for i in range(30)]
def copies(live):
    return {n: sum(os.path.exists(os.path.join(d, "files", n)) for _, _, d in live) for n in names}
deadline = time.time() + 60
while min(copies(nodes).values()) < 3:
    assert time.time() < deadline, "copies never settled before the kill"
    time.sleep(0.1)
victim = max(nodes, key=lambda n: len(os.listdir(os.path.join(n[2], "files"))))
live = [n for n in nodes if n is not victim]
os.kill(int(victim[1]), signal.SIGKILL)
start = time.time()
while min(copies(live).values()) < 3:
    assert time.time() - start < 120, "not repaired within 120 s"
    time.sleep(0.05)
print(f"{time.time() - start:.2f}")
PY
  # (This runs in a command substitution: its nodes are not the caller's to stop.)
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
periodic=$(crash_to_copies periodic --amqp none --repair-on-departure false)
woken=$(crash_to_copies woken --amqp "$amqp" --repair-on-departure true)

echo
python3 - "$files" "$local_rps" "$live_rps" "$walk_rps" "$periodic" "$woken" <<'PY'
import sys
files, local, live, walk, periodic, woken = sys.argv[1], *map(float, sys.argv[2:])
print(f"network listing, {files} files on 4 nodes, wrk -t2 -c32 (req/s)")
print("| listing | req/s | / this node's own listing |")
print("|---|---|---|")
print(f"| GET /files (this node's own) | {local:.0f} | 1.00 |")
print(f"| GET /files?scope=network (live index) | {live:.0f} | {live / local:.2f} |")
print(f"| GET /files?scope=network&walk=true (asks every node) | {walk:.0f} | {walk / local:.2f} |")
print()
print("kill -9 of the fullest of 5 nodes (k = 3, 30 files of 1 MiB, --repair-ms 30000) to 3 live copies of every file")
print("| repair | seconds | / periodic |")
print("|---|---|---|")
print(f"| periodic loop alone | {periodic:.2f} | 1.00 |")
print(f"| woken by the departure | {woken:.2f} | {woken / periodic:.2f} |")
PY
