# The two entry points of the README, plus the benchmark.
#   make run    build everything and start a node on 127.0.0.1 with the default plugins
#   make test   build the plugins and run every test
#   make bench  1 GiB upload/download through a node vs nginx, with the node's peak RSS
.PHONY: run test bench plugins setup

CARGO ?= cargo
PORT ?= 8080
DATA ?= data

setup:
	@scripts/setup.sh

plugins: setup
	@scripts/build-plugins.sh

run: plugins
	$(CARGO) build --release -p ringshare
	target/release/ringshare node --listen 127.0.0.1:$(PORT) --data $(DATA) --plugins target/plugins/default

test: plugins
	$(CARGO) test --workspace --no-fail-fast

bench: plugins
	@scripts/bench-transfer.sh
