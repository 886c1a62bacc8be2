#!/usr/bin/env bash
# Benchmark (not a test): a node serving `GET /files` under wrk (-t1 -c16)
# and a steady download of a 256 MiB file (curl, one after another; the
# first of each run hashed by the client, all checked for status and
# length), first
# without plugin swaps, then while its index and download plugins are
# replaced every 100 ms each (a temp file renamed over the old one, the
# way deployments do), alternating, same run. Two swap modes: between two
# versions (the second time a version comes back it is already compiled),
# and a version never seen before at every swap (each one compiled).
# Reports req/s and download MiB/s with their ratios to the run without
# swaps, failed requests and failed or damaged downloads (which must be 0).
# Usage: scripts/bench-plugin-swap.sh [SECONDS] [REPS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-8}
reps=${2:-3}

. "$root/scripts/bench-lib.sh"
bench_settle
bench_need wrk b3sum
(cd "$root" && cargo build --release -q -p ringshare)

work=$(mktemp -d /tmp/ringshare-swap.XXXXXX)
cleanup() {
  [ -n "${swap_pid:-}" ] && kill "$swap_pid" 2>/dev/null || true
  [ -n "${node_pid:-}" ] && kill "$node_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/plugins" "$work/versions"
cp "$root"/target/plugins/default/*.wasm "$work/plugins/"
# A second version of a component: the same code with a custom section
# appended (id 0, size 3, name "v" of length 1, payload = $2).
variant() { cp "$1" "$3"; printf '\000\003\001v%s' "$2" >> "$3"; }
for kind in index download; do
  cp "$work/plugins/$kind.wasm" "$work/versions/$kind-a.wasm"
  variant "$work/plugins/$kind.wasm" b "$work/versions/$kind-b.wasm"
done

port=$(free_port)
base="http://127.0.0.1:$port"
"$root/target/release/ringshare" node --amqp none --listen "127.0.0.1:$port" --data "$work/node" --replicas 1 \
  --plugins "$work/plugins" > "$work/node.out" 2> "$work/node.log" &
node_pid=$!
for _ in $(seq 1 200); do grep -q listening "$work/node.out" 2>/dev/null && break; sleep 0.05; done
seq 0 99 | xargs -P 8 -I{} curl -sf -o /dev/null -X PUT --data-binary "file {}" "$base/files/f{}.txt"
head -c $((256 << 20)) /dev/urandom > "$work/big"
want=$(b3sum --no-names "$work/big")
curl -sf -o /dev/null -T "$work/big" "$base/files/big"
rm "$work/big"

# Swaps every 100 ms for each of index and download, 50 ms apart, from one
# long-lived process (so that the swapping itself costs the machine next to
# nothing). Mode "two": versions a and b alternate; "fresh": a version never
# seen before each time (a custom section with the swap's number).
swapper() {
  exec python3 - "$1" "$work" <<'PY'
import os, sys, time
mode, work = sys.argv[1], sys.argv[2]
versions = {(k, v): open(f"{work}/versions/{k}-{v}.wasm", "rb").read() for k in ("index", "download") for v in "ab"}
n = 0
while True:
    for kind in ("index", "download"):
        n += 1
        if mode == "two":
            data = versions[(kind, "ab"[n // 2 % 2])]
        else:
            content = b"\x01v" + b"%06d" % n
            data = versions[(kind, "a")] + b"\x00" + bytes([len(content)]) + content
        part = f"{work}/plugins/.{kind}.part"
        with open(part, "wb") as f:
            f.write(data)
        os.rename(part, f"{work}/plugins/{kind}.wasm")
        time.sleep(0.05)
PY
}

# One measurement: wrk on GET /files and downloads of big, for $secs.
measure() {
  local label=$1
  local end=$((SECONDS + secs)) bytes=0 ok=0 bad=0 started
  wrk -t1 -c16 -d"${secs}s" "$base/files" > "$work/wrk.out" &
  local wrk_pid=$!
  started=$(date +%s.%N)
  # The first download of each run is hashed by the client too (the node
  # checks every block it sends against the file's hash); the others are
  # checked for status and length, so that hashing does not take the cores.
  local first=1 out
  while [ $SECONDS -lt $end ]; do
    if [ $first = 1 ]; then
      out=$(curl -sf "$base/files/big" | b3sum --no-names) || out=failed
      [ "$out" = "$want" ] && out=$((256 << 20))
      first=0
    else
      out=$(curl -sf -o /dev/null -w '%{size_download}' "$base/files/big") || out=failed
    fi
    if [ "$out" = $((256 << 20)) ]; then
      ok=$((ok + 1)); bytes=$((bytes + (256 << 20)))
    else
      bad=$((bad + 1))
    fi
  done
  local took
  took=$(python3 -c "import time; print(time.time() - $started)")
  wait "$wrk_pid"
  local rps errors
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  errors=$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(/,/,""); n+=$4+$6+$8+$10} END {print n+0}' "$work/wrk.out")
  echo "$label $rps $(python3 -c "print(f'{$bytes / 1048576 / $took:.0f}')") $errors $ok $bad"
}

echo "| swaps | GET /files req/s | ratio | download MiB/s | ratio | failed requests | downloads ok / failed |"
echo "|---|---|---|---|---|---|---|"
rows=()
for _ in $(seq "$reps"); do
  rows+=("$(measure none)")
  swapper two & swap_pid=$!
  rows+=("$(measure two)")
  kill "$swap_pid"; wait "$swap_pid" 2>/dev/null || true
  swapper fresh & swap_pid=$!
  rows+=("$(measure fresh)")
  kill "$swap_pid"; wait "$swap_pid" 2>/dev/null || true
  swap_pid=
done
printf '%s\n' "${rows[@]}" > "$work/rows"
python3 - "$work/rows" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for label, rps, mibs, errors, ok, bad in rows:
    by.setdefault(label, []).append((float(rps), float(mibs), int(errors), int(ok), int(bad)))
def median(xs):
    xs = sorted(xs); return xs[len(xs) // 2]
base_rps = median([r[0] for r in by["none"]]); base_mib = median([r[1] for r in by["none"]])
names = {"none": "none", "two": "every 100 ms, two versions", "fresh": "every 100 ms, a new version each time"}
for label in ["none", "two", "fresh"]:
    rs = by[label]
    rps = median([r[0] for r in rs]); mib = median([r[1] for r in rs])
    print(f"| {names[label]} | {rps:.0f} | {rps / base_rps:.2f} | {mib:.0f} | {mib / base_mib:.2f} | "
          f"{sum(r[2] for r in rs)} | {sum(r[3] for r in rs)} / {sum(r[4] for r in rs)} |")
PY
swaps=$(grep -c "plugin replaced" "$work/node.log" || true)
refused=$(grep -c "refused" "$work/node.log" || true)
echo "(medians of $reps runs of ${secs} s each, alternating; $(nproc) cores; $swaps swaps applied, $refused refused; node peak RSS $(awk '/VmHWM/ {print int($2/1024)}' /proc/$node_pid/status) MiB)"

# How long a swap takes to serve: a new version written (temp file renamed)
# until GET /plugins shows it serving, and the gallery dropped in until its
# route answers (then removed); 20 of each, polled every 2 ms.
python3 - "$base" "$work" "$root/target/plugins/extra/gallery.wasm" <<'PY'
import json, os, shutil, sys, time, urllib.request, urllib.error
base, work, gallery = sys.argv[1:]
def version(file):
    rows = json.load(urllib.request.urlopen(f"{base}/plugins"))
    return next((r.get("version") for r in rows if r["file"] == file and r["loaded"]), None)
def answers(url):
    try:
        return urllib.request.urlopen(url).status == 200
    except urllib.error.URLError:
        return False
def wait(check):
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > 10:
            raise SystemExit("a swap never took effect")
        time.sleep(0.002)
    return (time.perf_counter() - start) * 1000
def put(src_bytes, name):
    part = f"{work}/plugins/.{name}.part"
    with open(part, "wb") as f:
        f.write(src_bytes)
    os.rename(part, f"{work}/plugins/{name}")
original = open(f"{work}/versions/download-a.wasm", "rb").read()
swaps, routes = [], []
for n in range(20):
    before = version("download.wasm")
    put(original + b"\x00\x08\x01w" + b"%06d" % n, "download.wasm")
    swaps.append(wait(lambda: version("download.wasm") not in (None, before)))
    put(open(gallery, "rb").read(), "gallery.wasm")
    routes.append(wait(lambda: answers(f"{base}/x/gallery/")))
    os.remove(f"{work}/plugins/gallery.wasm")
    wait(lambda: not answers(f"{base}/x/gallery/"))
for label, xs in (("a new download version serves", swaps), ("an HTTP plugin dropped in answers on its route", routes)):
    xs.sort()
    print(f"{label}: median {xs[len(xs) // 2]:.0f} ms, slowest {xs[-1]:.0f} ms (20 times)")
PY
