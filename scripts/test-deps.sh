#!/usr/bin/env bash
# Everything `make test` needs beyond the venv: promtool (metrics tests), Chromium (browser
# tests) and the JS client's dev packages. Idempotent; installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    scripts/ops-checks.sh --install --tools-only
fi
scripts/install-browser.sh
