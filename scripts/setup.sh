#!/usr/bin/env bash
# Installs what building and testing need and is not on the machine yet.
# Idempotent: does nothing when everything is present.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# ip, bridge and tc: the tests' namespaced hosts (tests/support/hosts.rs).
{ command -v ip && command -v bridge && command -v tc; } >/dev/null 2>&1 || need_apt+=(iproute2)
# A node's clock run ten minutes ahead (host/tests/clock.rs).
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || need_apt+=(libfaketime)
if ! command -v cargo >/dev/null 2>&1; then
  # No rustup toolchain: Debian's recent Rust (also what route B of the
  # plugin build uses).
  need_apt+=(rustc-web cargo-web)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >&2
fi
