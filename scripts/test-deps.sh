#!/usr/bin/env bash
# Everything `make test` needs beyond the venv: promtool (metrics tests), Chromium (browser
# tests), redis-server (cluster tests; Debian's package also runs Sentinel through
# `redis-server --sentinel`) and the JS client's dev packages. Idempotent; installs only
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    scripts/ops-checks.sh --install --tools-only
fi
# The cluster tests (tests/cluster/) start real redis-server and Sentinel processes.
if ! command -v redis-server >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        timeout 600 apt-get update -qq
        DEBIAN_FRONTEND=noninteractive timeout 600 \
            apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    else
        echo "redis-server not found (tests/cluster needs it): apt-get install redis-server" >&2
        exit 1
    fi
fi
scripts/install-browser.sh
