#!/usr/bin/env bash
# Benchmark (not a test): abusive clients against one release-built node.
# 2,000 connections that send one byte of a request head every 10 s and
# 1,000 that send nothing, opened at once, while a client downloads a
# SIZE_MIB file (default 256) over and over. Prints the download rate with
# the abusers against the rate without them (same run, same file), and how
# many abusive connections the node had closed 60 s after they opened. As a
# control, the same abusers are then aimed at nginx while the download runs:
# what the download loses then is the abusers' own share of the two cores,
# not the node's work for them.
# Usage: scripts/bench-abuse.sh [SIZE_MIB] [SLOW] [IDLE]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-256}
slow=${2:-2000}
idle=${3:-1000}
. "$root/scripts/bench-lib.sh"
bench_settle
bench_need nginx
(cd "$root" && cargo build --release -q -p ringshare)

work=$(mktemp -d /tmp/ringshare-bench-abuse.XXXXXX)
node_pid=
cleanup() {
  [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$(free_port)
nginx_port=$(free_port)
nginx_start "$work" '{ worker_connections 8192; }' <<CONF
http { access_log off; server { listen 127.0.0.1:$nginx_port; return 204; } }
CONF
"$root/target/release/ringshare" node --amqp none --listen "127.0.0.1:$port" --data "$work/node" --replicas 1 \
  --plugins "$root/target/plugins/default" > "$work/node.out" 2> "$work/node.log" &
node_pid=$!
for _ in $(seq 1 200); do grep -q listening "$work/node.out" 2>/dev/null && break; sleep 0.05; done
head -c "$((size_mib << 20))" /dev/urandom > "$work/payload"
curl -sf -o /dev/null -T "$work/payload" "http://127.0.0.1:$port/files/payload"

python3 - "$port" "$size_mib" "$slow" "$idle" "$nginx_port" <<'PY'
import asyncio, resource, sys, time, urllib.request
port, size_mib, slow, idle, nginx_port = (int(a) for a in sys.argv[1:6])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
url = f"http://127.0.0.1:{port}/files/payload"

def download_rate(seconds):
    """MiB/s over whole downloads for about `seconds`."""
    got, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        with urllib.request.urlopen(url) as r:
            while chunk := r.read(1 << 20):
                got += len(chunk)
    return got / (1 << 20) / (time.perf_counter() - t0)

async def abuser(target, trickle, closed_at, opened):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        closed_at.append(0.0)  # refused at once: never held
        return
    t0 = time.perf_counter()
    opened.append(t0)
    head = b"GET /files HTTP/1.1\r\nhost: x\r\n"
    i = 0
    try:
        while True:
            if trickle:
                writer.write(head[i % len(head):i % len(head) + 1]); i += 1
                await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(1024), timeout=10 if trickle else 90)
            except asyncio.TimeoutError:
                if not trickle:
                    break  # still open after 90 s
                continue
            if not data:
                break  # closed by the node
    except (ConnectionError, OSError):
        pass
    closed_at.append(time.perf_counter() - t0)
    writer.close()

async def flood(target, closed_at, opened):
    tasks = [abuser(target, True, closed_at, opened) for _ in range(slow)]
    tasks += [abuser(target, False, closed_at, opened) for _ in range(idle)]
    await asyncio.gather(*tasks)

baseline = download_rate(10)
closed_at, opened = [], []
import threading
t = threading.Thread(target=lambda: asyncio.run(flood(port, closed_at, opened)))
t.start()
time.sleep(2)
under = download_rate(10)
t.join(timeout=120)
# The control: the same abusers aimed at nginx (which keeps trickling
# connections open: the thread is left behind when the script ends).
control = threading.Thread(target=lambda: asyncio.run(flood(nginx_port, [], [])), daemon=True)
control.start()
time.sleep(2)
aside = download_rate(10)
within = sum(1 for c in closed_at if c <= 60)
total = slow + idle
print(f"download of a {size_mib} MiB file: {baseline:.0f} MiB/s alone, {under:.0f} MiB/s with {slow} slow-header "
      f"and {idle} idle connections open ({under / baseline:.2f}x)")
print(f"abusive connections closed by the node within 60 s: {within} of {total} ({100 * within / total:.1f} %); "
      f"accepted {len(opened)}")
print(f"control, the same abusers aimed at nginx meanwhile: {aside:.0f} MiB/s ({aside / baseline:.2f}x); "
      f"the node's own share of the loss: {under / aside:.2f}x")
PY
