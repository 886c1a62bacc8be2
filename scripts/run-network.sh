#!/usr/bin/env bash
# Starts a small local ring: NODES nodes (default 3) on 127.0.0.1, ports
# PORT, PORT+1, ..., each with the default plugins and its own store under
# DATA/node-<port>. The first starts the ring, the others join it. Ctrl-C
# stops them all (each leaves the ring gracefully); a node killed on its own
# leaves the others running.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nodes=${NODES:-3}
port=${PORT:-8080}
data=${DATA:-$root/data}
bin="$root/target/release/ringshare"
plugins="$root/target/plugins/default"

pids=()
stop_all() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait
}
trap stop_all INT TERM EXIT

start_node() { # port [join]
  local p=$1 out="$data/node-$1.out"
  mkdir -p "$data/node-$p"
  "$bin" node --listen "127.0.0.1:$p" --data "$data/node-$p" --plugins "$plugins" ${2:+--join "$2"} \
    > "$out" 2> "$data/node-$p.log" &
  pids+=($!)
  # Ready once it prints its address.
  for _ in $(seq 1 600); do
    grep -q listening "$out" 2>/dev/null && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$data/node-$p.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "node on port $p did not start" >&2
  exit 1
}

start_node "$port"
for i in $(seq 1 $((nodes - 1))); do start_node $((port + i)) "127.0.0.1:$port"; done

echo
echo "ringshare: a ring of $nodes nodes with the default plugins"
for i in $(seq 0 $((nodes - 1))); do
  echo "  node $((i + 1)): http://127.0.0.1:$((port + i))   pid ${pids[$i]}   (log: $data/node-$((port + i)).log)"
done
echo
echo "try:  curl -T FILE http://127.0.0.1:$port/files/NAME"
echo "      curl http://127.0.0.1:$port/nodes      curl http://127.0.0.1:$((port + 1))/lookup/NAME"
echo "      curl -# -o COPY http://127.0.0.1:$((port + 1))/files/NAME   (download elsewhere, with a progress bar)"
echo "Killing one node (kill -9 PID) leaves the others serving. Ctrl-C stops the ring."
# Runs until every node has stopped (or Ctrl-C stops them all).
wait "${pids[@]}" || true
