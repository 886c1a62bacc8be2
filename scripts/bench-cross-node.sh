#!/usr/bin/env bash
# Benchmark (not a test): download throughput of a file through a node that
# does not hold it (bytes come over gRPC from the holder) against a download
# from the holder itself, in the same run. Two release nodes on loopback with
# k = 1, so exactly one of them holds the file. Prints best-of-N times and the
# cross-node/local throughput ratio (target >= 0.7).
# Usage: scripts/bench-cross-node.sh [SIZE_MIB] [REPS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-1024}
reps=${2:-3}
(cd "$root" && cargo build --release -q -p ringshare)

work=$(mktemp -d /tmp/ringshare-cross.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME PORT [JOIN]: a node with k = 1; waits for its "listening" line.
start() {
  local join=()
  [ -n "${3:-}" ] && join=(--join "$3")
  "$root/target/release/ringshare" node --listen "127.0.0.1:$2" --data "$work/$1" --replicas 1 \
    --plugins "$root/target/plugins/default" "${join[@]}" > "$work/$1.out" 2> "$work/$1.log" &
  pids+=($!)
  for _ in $(seq 1 200); do grep -q listening "$work/$1.out" 2>/dev/null && return; sleep 0.05; done
  echo "node $1 did not start; its log:" >&2; cat "$work/$1.log" >&2; exit 1
}

a_port=$(free_port); start a "$a_port"
b_port=$(free_port); start b "$b_port" "127.0.0.1:$a_port"
# The ring has formed when each node's successor is the other.
for _ in $(seq 1 200); do
  succ=$(curl -sf "http://127.0.0.1:$a_port/ring" | python3 -c 'import json,sys; print(json.load(sys.stdin)["successors"][0]["addr"])' || true)
  [ "$succ" = "127.0.0.1:$b_port" ] && break
  sleep 0.05
done
[ "$succ" = "127.0.0.1:$b_port" ] || { echo "the two nodes never formed a ring" >&2; exit 1; }

echo "making a ${size_mib} MiB file" >&2
head -c "$((size_mib << 20))" /dev/urandom > "$work/payload"
want=$(sha256sum "$work/payload" | cut -d' ' -f1)
curl -sf -T "$work/payload" "http://127.0.0.1:$a_port/files/payload" > /dev/null

holder=$(curl -sf "http://127.0.0.1:$a_port/lookup/payload" | python3 -c 'import json,sys; print(json.load(sys.stdin)["holders"][0]["addr"])')
if [ "$holder" = "127.0.0.1:$a_port" ]; then other="127.0.0.1:$b_port"; else other="127.0.0.1:$a_port"; fi
[ -f "$work/a/files/payload" ] && [ -f "$work/b/files/payload" ] && { echo "both nodes hold the file; k = 1 expected one" >&2; exit 1; }

seconds() { curl -sf -o /dev/null -w '%{time_total}' "$@"; }
local_times=() cross_times=()
for _ in $(seq "$reps"); do
  local_times+=("$(seconds "http://$holder/files/payload")")
  cross_times+=("$(seconds "http://$other/files/payload")")
done
for node in "$holder" "$other"; do
  got=$(curl -sf "http://$node/files/payload" | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || { echo "$node returned different bytes" >&2; exit 1; }
done
# What checking costs: BLAKE3 of the file alone on one thread (b3sum, from
# the page cache); the holder and the receiving node each hash every block.
command -v b3sum >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq b3sum >/dev/null; }
hash_times=()
for _ in $(seq "$reps"); do
  hash_times+=("$(python3 -c 'import subprocess,sys,time; t=time.perf_counter(); subprocess.run(["b3sum","--num-threads","1",sys.argv[1]],check=True,stdout=subprocess.DEVNULL); print(f"{time.perf_counter()-t:.6f}")' "$work/payload")")
done
best() { printf '%s\n' "$@" | sort -g | head -1; }
local_s=$(best "${local_times[@]}"); cross_s=$(best "${cross_times[@]}"); hash_s=$(best "${hash_times[@]}")
mibps() { python3 -c "print(f'{$size_mib / $1:.0f}')"; }
ratio=$(python3 -c "print(f'{$local_s / $cross_s:.2f}')")
rss() { awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$1/status"; }
cat <<REPORT
file: ${size_mib} MiB, k = 1, best of ${reps}, loopback, $(nproc) cores
| download | seconds | MiB/s |
|---|---|---|
| local (from the holder)          | $local_s | $(mibps "$local_s") |
| cross-node (holder is the other) | $cross_s | $(mibps "$cross_s") |
| BLAKE3 of the file alone (b3sum, 1 thread) | $hash_s | $(mibps "$hash_s") |
cross-node/local throughput: $ratio (target >= 0.7)
local time / hash time: $(python3 -c "print(f'{$local_s / $hash_s:.2f}')")
peak RSS (VmHWM): node a $(rss "${pids[0]}") MiB, node b $(rss "${pids[1]}") MiB
REPORT
