#!/usr/bin/env bash
# Makes sure a RabbitMQ broker answers on 127.0.0.1:5672 (AMQP): installs
# Debian's rabbitmq-server when it is missing, starts it bound to loopback
# when nothing answers on the port, and waits until it is ready.
# Idempotent: does nothing when a broker already answers.
#   scripts/broker.sh          ensure it runs
#   scripts/broker.sh stop     stop the broker this script started
set -euo pipefail

port=5672
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

if [ "${1:-}" = stop ]; then
  rabbitmqctl stop >/dev/null 2>&1 || true
  exit 0
fi

if answers; then
  exit 0
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "broker: installing rabbitmq-server" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >&2
  # The package starts the broker on every interface when it can; run it
  # our way instead.
  rabbitmqctl stop >/dev/null 2>&1 || true
fi

# Loopback only: AMQP, Erlang distribution and its port mapper.
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$port
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
echo "broker: starting rabbitmq-server on 127.0.0.1:$port" >&2
rabbitmq-server -detached >&2
# await_startup needs the node to exist first; then it waits for the app.
for _ in $(seq 1 120); do
  if rabbitmqctl await_startup --timeout 60 >/dev/null 2>&1 && answers; then
    echo "broker: ready" >&2
    exit 0
  fi
  sleep 0.5
done
echo "broker: rabbitmq-server did not become ready; see /var/log/rabbitmq/" >&2
exit 1
