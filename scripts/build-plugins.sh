#!/usr/bin/env bash
# Builds every plugin in plugins/ as a wasm32-wasip2 component and lays them out:
#   target/plugins/default/{index,upload,download}.wasm   the node's default plugins
#   target/plugins/extra/gallery.wasm                     optional wasi:http/proxy plugins
#   target/plugins/template/{index,upload,download,http}.wasm  the templates for plugin authors
#   target/plugins/testdata/<name>.wasm                   hostile plugins for the tests
# Route A: rustup's wasm32-wasip2 target (installed here if rustup can fetch it).
# Route B: Debian's rustc-web with -Zbuild-std (see shared/TOOLCHAIN.md), used
# when route A is not available.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/target/plugins"
cd "$root/plugins"

have_rustup_target() {
  command -v rustup >/dev/null 2>&1 &&
    rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2
}

if [ "${RINGSHARE_PLUGIN_ROUTE:-}" != debian ] && ! have_rustup_target && command -v rustup >/dev/null 2>&1; then
  echo "build-plugins: adding rustup target wasm32-wasip2" >&2
  timeout 180 rustup target add wasm32-wasip2 >&2 || true
fi

if have_rustup_target && [ "${RINGSHARE_PLUGIN_ROUTE:-}" != debian ]; then
  echo "build-plugins: route A (rustup wasm32-wasip2)" >&2
  cargo build --release --target wasm32-wasip2 --quiet
else
  echo "build-plugins: route B (Debian rustc-web + build-std)" >&2
  if [ ! -x /usr/bin/rustc ] || [ ! -d /usr/lib/wasm32-wasi ]; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      rustc-web cargo-web rust-web-src rust-web-llvm wasi-libc >&2
  fi
  # Debian's rust-lld is a link to the lld of rustc-web's LLVM (lld-22 for
  # 1.96), a package rustc-web does not pull in.
  lld=$(readlink /usr/bin/rust-lld || true)
  if [ -n "$lld" ] && ! command -v "$lld" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$lld" >&2
  fi
  # wasm-component-ld runs `wasm-ld`, which rustup ships and Debian's
  # rustc-web does not: lld picks its flavour from its name, so a link named
  # wasm-ld to rust-lld is one.
  shim="$root/target/route-b-bin"
  if ! command -v wasm-ld >/dev/null 2>&1; then
    mkdir -p "$shim"
    ln -sf /usr/bin/rust-lld "$shim/wasm-ld"
  fi
  PATH="$shim:$PATH" RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc RUSTFLAGS="-L /usr/lib/wasm32-wasi" \
    /usr/bin/cargo build --release --target wasm32-wasip2 --quiet \
    -Zbuild-std=std,panic_abort
fi

built="$root/plugins/target/wasm32-wasip2/release"
mkdir -p "$out/default" "$out/extra" "$out/template" "$out/testdata"
# Copied only when they differ: the host embeds the defaults, and a newer
# file with the same bytes would rebuild it for nothing.
# Through a temp file and a rename: a build reading them never sees half a file.
put() { cmp -s "$1" "$2" || { cp "$1" "$2.tmp" && mv "$2.tmp" "$2"; }; }
for kind in index upload download; do
  put "$built/ringshare_${kind}_plugin.wasm" "$out/default/$kind.wasm"
done
put "$built/ringshare_gallery_plugin.wasm" "$out/extra/gallery.wasm"
for kind in index upload download http; do
  put "$built/ringshare_template_${kind}.wasm" "$out/template/$kind.wasm"
done
for name in spin sleep slow-index hog escape crash liar-index liar-download liar-upload old-contract http-hostile; do
  put "$built/ringshare_test_${name//-/_}.wasm" "$out/testdata/$name.wasm"
done
put "$built/ringshare-test-not-a-plugin.wasm" "$out/testdata/not-a-plugin.wasm"
echo "build-plugins: components in $out" >&2
