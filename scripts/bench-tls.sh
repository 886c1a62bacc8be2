#!/usr/bin/env bash
# Benchmark (not a test): what mutual TLS between nodes costs on the data
# path, side by side in one run. Two identical sets of release-built nodes,
# one with certificates (`--tls-dir`: every copy and every fetch between
# nodes over mutual TLS) and one without, and nginx proxying to nginx over
# plain HTTP and over mutual TLS, with a file of SIZE_MIB (default 512 MiB)
# of random bytes, REPS rounds (default 3) alternating:
#
#   download through a non-holder   the bytes cross from the holder to the node asked
#   upload, k = 3, three nodes      the bytes stream to two other nodes as they arrive
#   nginx proxy_pass                to an nginx origin, plain and over TLS (client certificates on)
#
# The client always speaks plain HTTP to the first hop, so only the hop
# between servers changes. Prints best and median times, TLS against plain
# for each, and the CPU seconds all the nodes of a set spent per GiB moved
# (user + system, from /proc). Usage: scripts/bench-tls.sh [SIZE_MIB] [REPS]
# (RINGSHARE_BIN=path runs that binary instead of building one: A/B runs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-512}
reps=${2:-3}
. "$root/scripts/bench-lib.sh"
bench_settle
bench_need nginx b3sum
bin=${RINGSHARE_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release -q -p ringshare)
  bin=$root/target/release/ringshare
fi

work=$(mktemp -d /tmp/ringshare-bench-tls.XXXXXX)
pids=()
cleanup() {
  local status=$?
  if [ "$status" != 0 ]; then
    echo "failed ($status); nginx said:" >&2; tail -5 "$work/nginx-error.log" >&2 || true
    for log in "$work"/*.log; do grep -hE " (WARN|ERROR) " "$log" | tail -5 | sed "s|^|$(basename "$log"): |" >&2 || true; done
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "making a ${size_mib} MiB file and a cluster's certificates" >&2
head -c "$((size_mib << 20))" /dev/urandom > "$work/payload"
want=$(b3sum --no-names "$work/payload")
"$bin" cert ca --out "$work/ca" >/dev/null
"$bin" cert node --ca "$work/ca" --addr 127.0.0.1:1 --out "$work/certs" >/dev/null
certs=$work/certs
# nginx checks an upstream's name against DNS names only: its certificate
# names localhost.
"$bin" cert node --ca "$work/ca" --addr localhost:1 --out "$work/nginx-certs" >/dev/null
web=$work/nginx-certs

# nginx: a plain origin and a TLS origin (client certificates required), and
# a proxy in front of each.
origin=$(free_port); origin_tls=$(free_port); proxy=$(free_port); proxy_tls=$(free_port)
mkdir -p "$work/www" "$work/body"
cp "$work/payload" "$work/www/payload"
nginx_start "$work" <<CONF
http {
  access_log off;
  sendfile on;
  client_body_temp_path $work/body;
  server { listen 127.0.0.1:$origin; root $work/www; }
  server {
    listen 127.0.0.1:$origin_tls ssl;
    ssl_certificate $web/node.crt; ssl_certificate_key $web/node.key;
    ssl_client_certificate $web/ca.crt; ssl_verify_client on;
    root $work/www;
  }
  proxy_buffers 8 1m; proxy_buffer_size 512k; proxy_max_temp_file_size 0;
  server { listen 127.0.0.1:$proxy; location / { proxy_pass http://127.0.0.1:$origin; } }
  server {
    listen 127.0.0.1:$proxy_tls;
    location / {
      proxy_pass https://127.0.0.1:$origin_tls;
      proxy_ssl_certificate $web/node.crt; proxy_ssl_certificate_key $web/node.key;
      proxy_ssl_trusted_certificate $web/ca.crt; proxy_ssl_verify on; proxy_ssl_name localhost;
    }
  }
}
CONF

declare -A set_pids
start_node() { # set name replicas [join] [extra flags...]
  local set=$1 name=$2 replicas=$3 join=${4:-}; shift 4 || shift $#
  local port; port=$(free_port)
  "$bin" node --amqp none --listen "127.0.0.1:$port" --data "$work/$name" --replicas "$replicas" \
    ${join:+--join "$join"} --plugins "$root/target/plugins/default" "$@" > "$work/$name.out" 2> "$work/$name.log" &
  pids+=($!); set_pids[$set]+="$! "
  for _ in $(seq 1 200); do grep -q listening "$work/$name.out" 2>/dev/null && break; sleep 0.05; done
  eval "$name=127.0.0.1:$port"
}
tls=(--tls-dir "$certs")
start_node plain p1 1 ""; start_node plain p2 1 "$p1"
start_node plain p3 3 ""; start_node plain p4 3 "$p3"; start_node plain p5 3 "$p3"
start_node tls t1 1 "" "${tls[@]}"; start_node tls t2 1 "$t1" "${tls[@]}"
start_node tls t3 3 "" "${tls[@]}"; start_node tls t4 3 "$t3" "${tls[@]}"; start_node tls t5 3 "$t3" "${tls[@]}"
alive() { curl -sf "http://$1/nodes" | python3 -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin) if n["alive"]))'; }
for _ in $(seq 1 200); do
  [ "$(alive "$p1" || echo 0)" = 2 ] && [ "$(alive "$p3" || echo 0)" = 3 ] &&
    [ "$(alive "$t1" || echo 0)" = 2 ] && [ "$(alive "$t3" || echo 0)" = 3 ] && break
  sleep 0.1
done

# The file on each two-node ring, and the node that does not hold it.
for pair in "p1 p2" "t1 t2"; do
  read -r first second <<< "$pair"
  curl -sf -o /dev/null -T "$work/payload" "http://${!first}/files/payload"
  holder=$(curl -sf "http://${!first}/lookup/payload" | python3 -c 'import json,sys; print(json.load(sys.stdin)["holders"][0]["addr"])')
  if [ "$holder" = "${!first}" ]; then eval "${first}_other=${!second}"; else eval "${first}_other=${!first}"; fi
done

cpu() { # CPU seconds (user + system) of the nodes of a set so far
  local total=0 pid
  for pid in ${set_pids[$1]:-}; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  python3 -c "import os; print($total / os.sysconf('SC_CLK_TCK'))"
}
seconds() { # the time a request took; a failed one says which, and its status
  local out; out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' "$@") || {
    echo "curl $* failed (status ${out%% *})" >&2; return 1; }
  echo "${out#* }"
}
declare -A times cpus
run() { # key set command...: times the command, and the set's CPU
  local key=$1 set=$2; shift 2
  local before; before=$(cpu "$set")
  times[$key]+="$("$@") "
  cpus[$key]+="$(python3 -c "print($(cpu "$set") - $before)") "
  sync
}
nothing() { echo 0; }
for round in $(seq "$reps"); do
  echo "round $round" >&2
  run cross_plain plain seconds -f "http://$p1_other/files/payload"
  run cross_tls tls seconds -f "http://$t1_other/files/payload"
  run proxy_plain none seconds -f "http://127.0.0.1:$proxy/payload"
  run proxy_tls none seconds -f "http://127.0.0.1:$proxy_tls/payload"
  curl -s -o /dev/null -X DELETE "http://$p3/files/payload"; curl -s -o /dev/null -X DELETE "http://$t3/files/payload"; sync
  run put3_plain plain seconds -f -T "$work/payload" "http://$p3/files/payload"
  run put3_tls tls seconds -f -T "$work/payload" "http://$t3/files/payload"
done
for url in "http://$p1_other/files/payload" "http://$t1_other/files/payload" "http://$p5/files/payload" \
  "http://$t5/files/payload" "http://127.0.0.1:$proxy_tls/payload"; do
  got=$(curl -sf "$url" | b3sum --no-names)
  [ "$got" = "$want" ] || { echo "$url returned different bytes" >&2; exit 1; }
done

stat() { printf '%s\n' ${times[$1]} | sort -g | python3 -c 'import sys; v=[float(x) for x in sys.stdin]; print(f"{v[0]:.3f} {v[len(v)//2]:.3f}")'; }
cpu_per_gib() { printf '%s\n' ${cpus[$1]} | python3 -c "import sys; v=[float(x) for x in sys.stdin]; print(f'{sum(v) / len(v) / ($size_mib / 1024):.2f}')"; }
row() { # label plain-key tls-key [cpu]
  read -r pb pm < <(stat "$2"); read -r tb tm < <(stat "$3")
  local cpu_cells="| – | – |"
  [ -n "${4:-}" ] && cpu_cells="| $(cpu_per_gib "$2") | $(cpu_per_gib "$3") |"
  python3 - "$1" "$pb" "$pm" "$tb" "$tm" "$size_mib" "$cpu_cells" <<'PY'
import sys
label, pb, pm, tb, tm, size, cells = sys.argv[1], *map(float, sys.argv[2:7]), sys.argv[7]
mib = lambda s: f"{size / s:.0f}"
print(f"| {label} | {pb:.2f} s ({mib(pb)} MiB/s), median {pm:.2f} | {tb:.2f} s ({mib(tb)} MiB/s), median {tm:.2f} | **{pb / tb:.2f}** (median {pm / tm:.2f}) {cells}")
PY
}
echo
echo "file: ${size_mib} MiB, best of ${reps} (and median), alternating, loopback, $(nproc) cores"
echo "| path | plain | mutual TLS | TLS / plain throughput | CPU s per GiB, plain | CPU s per GiB, TLS |"
echo "|---|---|---|---|---|---|"
row "ringshare: download through a non-holder" cross_plain cross_tls cpu
row "ringshare: upload, k = 3, three nodes" put3_plain put3_tls cpu
row "nginx proxy_pass to nginx" proxy_plain proxy_tls
read -r xb _ < <(stat cross_tls); read -r nb _ < <(stat proxy_tls)
python3 -c "print(f'ringshare through a non-holder over TLS / nginx proxying over TLS: **{$nb / $xb:.2f}**')"
