#!/usr/bin/env bash
# Tries ringshare against a 3-node RabbitMQ cluster on this machine (not a
# test; run by hand): three broker nodes (AMQP 5701-5703, loopback only)
# joined into one cluster, three ringshare nodes given all three URLs. A
# hand-off is queued for a holder that cannot store; the broker node the
# ringshare nodes talk to is stopped; they move to another one, and the
# hand-off (a quorum queue, replicated on the three broker nodes) is still
# delivered when the holder comes back. Leaves nothing running.
# Usage: scripts/rabbit-cluster.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/ringshare-cluster.XXXXXX)
pids=()
nodes=(rs1 rs2 rs3)

broker_env() { # N: environment of broker node N (1-3)
  echo "RABBITMQ_NODENAME=${nodes[$1-1]}@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$((5700 + $1)) \
RABBITMQ_DIST_PORT=$((25700 + $1)) RABBITMQ_MNESIA_BASE=$work/mnesia$1 RABBITMQ_LOG_BASE=$work/log$1 \
RABBITMQ_PID_FILE=$work/mnesia$1/rs.pid ERL_EPMD_ADDRESS=127.0.0.1"
}
ctl() { # N ARGS...: rabbitmqctl against broker node N
  local n=$1; shift
  rabbitmqctl -n "${nodes[$n-1]}@localhost" "$@"
}
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in 1 2 3; do ctl "$n" stop >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

command -v rabbitmq-server >/dev/null || "$root/scripts/broker.sh"
(cd "$root" && cargo build --release -q -p ringshare)

echo "cluster: starting three broker nodes" >&2
# Debian's wrapper runs the broker as the rabbitmq user: its folders are its own.
chmod 755 "$work"
for n in 1 2 3; do
  mkdir -p "$work/mnesia$n" "$work/log$n"
  chown rabbitmq:rabbitmq "$work/mnesia$n" "$work/log$n" 2>/dev/null || true
  env $(broker_env "$n") rabbitmq-server -detached
done
# await_startup fails at once while the node is not registered yet.
for n in 1 2 3; do
  for _ in $(seq 1 120); do ctl "$n" await_startup --timeout 60 >/dev/null 2>&1 && break; sleep 0.5; done
done
for n in 2 3; do
  ctl "$n" stop_app >/dev/null
  ctl "$n" join_cluster rs1@localhost >/dev/null
  ctl "$n" start_app >/dev/null
done
ctl 1 cluster_status | grep -A4 -i "running nodes" >&2

urls="amqp://127.0.0.1:5701/%2f,amqp://127.0.0.1:5702/%2f,amqp://127.0.0.1:5703/%2f"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_node() { # NAME PLUGINS-DIR PORT [JOIN]
  "$root/target/release/ringshare" node --listen "127.0.0.1:$3" --data "$work/$1" --plugins "$2" \
    --amqp "$urls" --repair-ms 3600000 --repair-on-departure false ${4:+--join "$4"} > "$work/$1.out" 2> "$work/$1.log" &
  pids+=($!)
  for _ in $(seq 1 200); do grep -q listening "$work/$1.out" 2>/dev/null && break; sleep 0.05; done
}
bridge() { curl -sf "http://$1/bridge"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
wait_until() { # DESCRIPTION COMMAND...: up to 60 s
  local what=$1; shift
  for _ in $(seq 1 600); do "$@" && return 0; sleep 0.1; done
  echo "cluster: timed out: $what" >&2; exit 1
}

# Three ringshare nodes; the third cannot store (no upload plugin).
mkdir -p "$work/crippled"
cp "$root/target/plugins/default/index.wasm" "$root/target/plugins/default/download.wasm" "$work/crippled/"
pa=$(free_port); pb=$(free_port); pc=$(free_port)
start_node a "$root/target/plugins/default" "$pa"
start_node b "$root/target/plugins/default" "$pb" "127.0.0.1:$pa"
start_node c "$work/crippled" "$pc" "127.0.0.1:$pa"
for p in $pa $pb $pc; do wait_until "node $p connected" sh -c "curl -sf http://127.0.0.1:$p/bridge | grep -q '\"connected\":true'"; done
for p in $pa $pb $pc; do echo "node 127.0.0.1:$p talks to $(bridge "127.0.0.1:$p" | field url)" >&2; done

# A name node a is responsible for (k = 3 on 3 nodes: c is a holder).
name=$(python3 - "$pa" <<'PY'
import json, sys, urllib.request
port = sys.argv[1]
for i in range(5000):
    name = f"clustered-{i}.bin"
    holders = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/lookup/{name}"))["holders"]
    if holders[0]["addr"] == f"127.0.0.1:{port}":
        print(name); break
PY
)
head -c 300000 /dev/urandom > "$work/payload"
curl -sf -T "$work/payload" "http://127.0.0.1:$pa/files/$name" > /dev/null
wait_until "c retries its hand-off" sh -c "curl -sf http://127.0.0.1:$pc/bridge | grep -q '\"retried\":[1-9]'"
echo "cluster: hand-off queued for 127.0.0.1:$pc and retried there" >&2

# Stop the broker node every ringshare node starts on.
ctl 1 stop_app >/dev/null
echo "cluster: broker node rs1 stopped" >&2
for p in $pa $pb; do
  wait_until "node $p on another broker" sh -c "curl -sf http://127.0.0.1:$p/bridge | grep -q '\"connected\":true.*5702\|5702.*\"connected\":true\|\"connected\":true.*5703\|5703.*\"connected\":true'"
  echo "node 127.0.0.1:$p now talks to $(bridge "127.0.0.1:$p" | field url)" >&2
done

# c comes back able to store: it takes the hand-off from the cluster.
kill "${pids[2]}"; wait "${pids[2]}" 2>/dev/null || true
start_node c "$root/target/plugins/default" "$pc" "127.0.0.1:$pa"
wait_until "c applied the hand-off" sh -c "curl -sf http://127.0.0.1:$pc/bridge | grep -q '\"applied\":1'"
cmp "$work/payload" "$work/c/store/files/$name"
echo "cluster: OK - the hand-off survived losing a broker node and was applied; c's copy is identical" >&2
