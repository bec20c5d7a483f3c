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
# The cluster tests (tests/cluster/) start real redis-server and Sentinel processes; the
# listen-backlog tests read the listener's queue with `ss` (iproute2).
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v ss >/dev/null || missing+=(iproute2)
if (( ${#missing[@]} )); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        timeout 600 apt-get update -qq
        DEBIAN_FRONTEND=noninteractive timeout 600 \
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "missing for the tests: ${missing[*]} (apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi
scripts/install-browser.sh
