#!/usr/bin/env bash
# Installs what the browser test (tests/page.rs) needs: Debian's Chromium
# and its WebDriver. Idempotent.
set -euo pipefail
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "browser: installing chromium and chromium-driver" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >&2
fi
