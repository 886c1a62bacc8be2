# The two entry points of the README, plus the benchmark.
#   make run    build everything, start RabbitMQ and a ring of NODES (4) nodes on 127.0.0.1 (ringshare devnet)
#   make test   build the plugins and run every test (the 10-minute partition last, alone)
#   make bench  the data path against nginx (1 GiB: local and cross-node downloads, uploads with
#               k = 1 and k = 3, cp + fsync), listings against nginx's JSON autoindex under wrk,
#               20,000 small files PUT and GET against nginx WebDAV (k = 1 and k = 3),
#               3,000 abusive connections against one node while it serves a download,
#               mutual TLS between nodes against plaintext and nginx proxying over TLS,
#               the RabbitMQ bridge (messages/s, live network listing, crash to k copies),
#               plugins swapped every 100 ms under load, writes while 6 namespaced hosts split 3|3,
#               and the ring simulation (hops at N = 64..1024, 50% crash)
#   make soak   the long partition alone: 6 nodes on namespaced hosts split 3|3 for 10 minutes, healed
.PHONY: run test bench soak plugins setup broker browser

CARGO ?= cargo
PORT ?= 8080
NODES ?= 4
DATA ?= data

setup:
	@scripts/setup.sh

plugins: setup
	@scripts/build-plugins.sh

broker:
	@scripts/broker.sh

browser:
	@scripts/browser.sh

run: plugins broker
	$(CARGO) build --release -p ringshare
	target/release/ringshare devnet --nodes $(NODES) --port $(PORT) --data $(DATA) --plugins target/plugins/default

test: plugins broker browser
	@CARGO=$(CARGO) scripts/test.sh

soak: plugins
	$(CARGO) test -p ringshare-tests --test partitions split_for_10_min -- --nocapture

bench: plugins broker
	@scripts/bench-data-path.sh
	@scripts/bench-listing.sh
	@scripts/bench-small-files.sh
	@scripts/bench-abuse.sh
	@scripts/bench-tls.sh
	@scripts/bench-bridge.sh
	@scripts/bench-repair.sh 1000000
	@scripts/bench-plugin-swap.sh
	@scripts/bench-split.sh
	@scripts/bench-multi-source.sh
	@scripts/bench-large-ring.sh
	$(CARGO) bench -p ringshare --bench chord_sim
