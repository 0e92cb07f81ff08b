#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver, for the console's browser tests (crates/platform/tests/it/
# console.rs), installed once when they are not there yet. Needs root (or sudo) and apt.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
run() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
export DEBIAN_FRONTEND=noninteractive
if ! run apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1; then
  run apt-get update -qq
  run apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null
fi
/usr/bin/chromium --version
