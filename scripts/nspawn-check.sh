#!/usr/bin/env bash
# The unit under a real systemd (issue 11, item 9): a minimal Debian tree from debootstrap,
# booted with systemd-nspawn --boot, in which scripts/nspawn-inside.sh installs the daemon's
# wheel (built from this checkout) and drives systemd/bittrade-feed.{service,socket} with
# systemctl: READY, STATUS, the dynamic user's StateDirectory, reload, the watchdog, stop,
# exit 78 without a restart loop, the README's log recipes, and socket activation.
#
# The tree is cached in $NSPAWN_CACHE (default /var/cache/bittrade-feed-nspawn/<release>)
# and booted with --volatile=overlay, so each run starts from the same clean tree. The
# container has no network but loopback (--private-network): the daemon runs the offline
# demo config (simulated source). The first debootstrap takes a few minutes; a cached run
# about two. Needs root; without it or without a working systemd-nspawn it says SKIPPED.
# Usage: scripts/nspawn-check.sh [DIST] (DIST holds the wheel; built here if not given)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
INSTALL=${INSTALL:-no}
[[ ${CI:-} == true ]] && INSTALL=yes
source scripts/ops-lib.sh
RELEASE=${NSPAWN_RELEASE:-bookworm}
CACHE=${NSPAWN_CACHE:-/var/cache/bittrade-feed-nspawn}
TREE=$CACHE/$RELEASE
PACKAGES=systemd,systemd-sysv,dbus,python3,python3-venv,iproute2,procps,curl,jq
BOOT_TIMEOUT=${NSPAWN_TIMEOUT:-420}

skip() {
    printf '\n== SKIPPED: the systemd boot test (scripts/nspawn-check.sh): %s\n' "$*"
    exit 0
}
[[ $(id -u) == 0 ]] || skip "needs root (systemd-nspawn and debootstrap)"
command -v systemd-nspawn >/dev/null || [[ $INSTALL == yes ]] ||
    skip "systemd-nspawn not found (apt-get install systemd-container, or --install)"
need systemd-nspawn systemd-container
need debootstrap debootstrap
need unshare util-linux

WORK=$(mktemp -d /tmp/bittrade-nspawn.XXXXXX)
TAIL=
cleanup() {
    [[ -z $TAIL ]] || kill "$TAIL" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mirror() { # the Debian mirror apt uses here (deb822 URIs: or one-line deb), else the default
    local url
    url=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}')
    [[ -n $url ]] || url=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' \
        /etc/apt/sources.list 2>/dev/null || true)
    echo "${url:-http://deb.debian.org/debian}"
}

step "the Debian $RELEASE tree ($TREE)"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock" # one builder at a time; a concurrent run waits for the cache
timeout 900 flock 9 || fail "another run holds $CACHE/.lock for 15 minutes"
if [[ $(cat "$TREE/.bittrade-packages" 2>/dev/null) != "$PACKAGES" ]]; then
    url=$(mirror)
    printf '   building with debootstrap from %s (a few minutes, cached afterwards)\n' "$url"
    rm -rf "$TREE" "$TREE.tmp"
    timeout 900 debootstrap --variant=minbase --include="$PACKAGES" "$RELEASE" "$TREE.tmp" \
        "$url" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -20 "$WORK/debootstrap.log"; fail "debootstrap failed"; }
    echo "$PACKAGES" >"$TREE.tmp/.bittrade-packages"
    mv "$TREE.tmp" "$TREE"
fi
flock -u 9
ok "cached: $(du -sh "$TREE" | cut -f1), packages $PACKAGES"

step "the daemon's wheel and its dependencies"
if [[ -n ${1:-} ]]; then
    WHEEL=$(ls "$1"/bittrade_feed-*.whl)
else
    timeout 300 "$PY" -m build --wheel --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 ||
        { tail -20 "$WORK/build.log"; fail "python -m build failed"; }
    WHEEL=$(ls "$WORK"/dist/bittrade_feed-*.whl)
fi
# The container's Python is Debian's, as the host's: the same wheels fit both.
inner_py=$(ls "$TREE"/usr/bin/python3.* | grep -E 'python3\.[0-9]+$' | head -1)
[[ $(basename "$inner_py") == "python$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" ]] ||
    fail "the container has $(basename "$inner_py"), unlike $PY: cannot share wheels"
timeout 300 "$PY" -m pip wheel --quiet --wheel-dir "$WORK/wheels" "$WHEEL[fast]" \
    >"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log"; fail "pip wheel failed"; }
ok "$(basename "$WHEEL") and $(($(ls "$WORK/wheels" | wc -l) - 1)) dependencies"

step "boot it: systemd-nspawn --boot, the checks run as a unit inside (bound to $BOOT_TIMEOUT s)"
mkdir "$WORK/out"
: >"$WORK/out/log"
cat >"$WORK/ops-test.service" <<'EOF'
[Unit]
Description=bittrade-feed boot test (scripts/nspawn-inside.sh)
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/ops/scripts/nspawn-inside.sh
TimeoutStartSec=infinity
ExecStopPost=/bin/systemctl poweroff --no-block
EOF
tail -n +1 -F "$WORK/out/log" 2>/dev/null &
TAIL=$!
began=$(date +%s)
# nspawn without a host systemd: no machined (--register=no), no scope (--keep-unit). It
# removes its propagation directory when done, which it refuses on a disk /run: give it a
# tmpfs there, in a mount namespace of its own so the host is untouched. stdin must not be
# a pipe that ends: --console=passive, from /dev/null.
status=0
timeout -k 20 "$BOOT_TIMEOUT" unshare --mount --propagation private sh -c '
    mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn && exec "$@"' sh \
    systemd-nspawn --quiet --register=no --keep-unit --private-network --volatile=overlay \
    --directory="$TREE" --machine=bittrade-feed-test \
    --bind-ro="$ROOT:/ops" --bind-ro="$WORK/wheels:/wheels" --bind="$WORK/out:/out" \
    --bind-ro="$WORK/ops-test.service:/etc/systemd/system/ops-test.service" \
    --console=passive --boot systemd.wants=ops-test.service \
    </dev/null >"$WORK/console.log" 2>&1 || status=$?
sleep 0.5 # let tail print the last lines
kill "$TAIL" 2>/dev/null || true
TAIL=
if [[ $(cat "$WORK/out/status" 2>/dev/null) != 0 ]]; then
    echo "--- the container's console:"
    tail -40 "$WORK/console.log"
    [[ $status == 124 ]] && fail "timed out after $BOOT_TIMEOUT s"
    fail "the checks inside the container failed (status $(cat "$WORK/out/status" 2>/dev/null || echo none), nspawn $status)"
fi
ok "booted, checked and powered off in $(($(date +%s) - began)) s"
