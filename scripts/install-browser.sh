#!/usr/bin/env bash
# Set up what the browser and JS client tests need; safe to run again.
#   - Debian's chromium at /usr/bin/chromium (Playwright drives it; it downloads no browser)
#   - the JS client's dev dependencies (npm ci in clients/js, from package-lock.json)
# Runs as root in CI (CI=true on a fresh Debian machine); elsewhere it uses sudo if needed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "install-browser: need root (or sudo) for apt-get" >&2; exit 1; }
        SUDO="sudo"
    fi
    echo "install-browser: installing Debian chromium" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation fonts-dejavu-core >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null | grep -v "unexpected operator" || true

command -v npm >/dev/null || { echo "install-browser: npm not found (install nodejs and npm)" >&2; exit 1; }
if [ ! -d clients/js/node_modules ] || [ clients/js/package-lock.json -nt clients/js/node_modules/.package-lock.json ]; then
    (cd clients/js && npm ci --no-audit --no-fund --loglevel=error)
fi
