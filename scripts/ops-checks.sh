#!/usr/bin/env bash
# Operations checks for CI and for anyone changing the unit, the metrics or the alerts:
#   1. promtool check rules docs/alerts.yml, and docs/alerts.test.yml (promtool test rules)
#   2. a real daemon (simulated source) whose /metrics passes `promtool check metrics`,
#      on the main listener and on the separate metrics listener, and which stops with 0
#   3. systemd-analyze verify on the unit files: no error, no warning
#   4. systemd-analyze security --offline=yes: exposure at most $MAX_EXPOSURE (2.0)
#   5. scripts/install-check.sh: the wheel, sdist and both clients install and run outside
#      the checkout; `make run` installs only what running needs
#   6. scripts/nginx-check.sh: the README's nginx block passes SSE unbuffered and WebSocket
#   7. scripts/nspawn-check.sh: the unit booted under systemd in a Debian container (needs
#      root and systemd-nspawn; it says SKIPPED where it cannot run)
# Missing tools (promtool from `prometheus`, systemd-analyze from `systemd`, nginx,
# debootstrap, systemd-nspawn) are installed with apt-get when running as root under
# CI=true or with --install; otherwise it stops and says what to install. `--tools-only`
# installs promtool (tests/test_metrics.py needs it) and checks nothing. Every step is
# time-bounded and every process it starts is stopped.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
BIN=$(dirname "$PY")/bittrade-feed
MAX_EXPOSURE=${MAX_EXPOSURE:-2.0}
INSTALL=no
TOOLS_ONLY=no
[[ ${CI:-} == true ]] && INSTALL=yes
for arg in "$@"; do
    case $arg in
        --install) INSTALL=yes ;;
        --tools-only) TOOLS_ONLY=yes ;; # install what the tests need (promtool), check nothing
        *) echo "usage: $0 [--install] [--tools-only]" >&2 && exit 2 ;;
    esac
done

WORK=$(mktemp -d)
DAEMON_PID=
cleanup() {
    if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

source scripts/ops-lib.sh

need promtool prometheus
[[ $TOOLS_ONLY == yes ]] && exit 0
need systemd-analyze systemd
[[ -x $BIN ]] || fail "$BIN not found: run 'make test' once to create the venv"

# -- 1. alert rules -------------------------------------------------------------------------
step "promtool check rules docs/alerts.yml"
timeout 60 promtool check rules docs/alerts.yml
ok "alert rules are valid"

step "promtool test rules docs/alerts.test.yml (each alert fires at the defaults, once per cause)"
timeout 60 promtool test rules docs/alerts.test.yml
ok "every alert fires when it should and not before"

# -- 2. a live daemon's exposition ----------------------------------------------------------
step "start the daemon (simulated source) and lint its /metrics"
read -r PORT METRICS_PORT < <(free_ports 2)
sim_config "$WORK/config.toml" "$PORT" "$WORK" "metrics_host = \"127.0.0.1\"
metrics_port = $METRICS_PORT"
"$BIN" check-config "$WORK/config.toml"
"$BIN" serve --config "$WORK/config.toml" >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!

fetch "http://127.0.0.1:$PORT/readyz" "$WORK/readyz.json" ||
    { cat "$WORK/daemon.log"; fail "the daemon never became ready"; }
ok "/readyz answers 200: $(cat "$WORK/readyz.json")"
for url in "http://127.0.0.1:$PORT/metrics" "http://127.0.0.1:$METRICS_PORT/metrics"; do
    fetch "$url" "$WORK/metrics.txt"
    lint=$(timeout 60 promtool check metrics <"$WORK/metrics.txt" 2>&1) || fail "$url: $lint"
    [[ -z $lint ]] || fail "$url: promtool check metrics complains: $lint"
    for name in bittrade_feed_build_info bittrade_feed_ticks_total process_cpu_seconds_total \
        bittrade_feed_upstream_requests_total bittrade_feed_store_size_bytes; do
        grep -q "^$name" "$WORK/metrics.txt" || fail "$url: no $name"
    done
    ok "$url: $(grep -vc '^#' "$WORK/metrics.txt") samples, promtool check metrics clean"
done

step "SIGTERM stops the daemon with exit 0"
kill -TERM "$DAEMON_PID"
status=0
timeout 15 tail --pid="$DAEMON_PID" -f /dev/null || fail "still running 15 s after SIGTERM"
wait "$DAEMON_PID" || status=$?
DAEMON_PID=
[[ $status == 0 ]] || { cat "$WORK/daemon.log"; fail "exit status $status after SIGTERM"; }
ok "exit 0"

# -- 3. unit files --------------------------------------------------------------------------
step "systemd-analyze verify systemd/bittrade-feed.{service,socket}"
# verify needs ExecStart's binary to exist: check a copy that points at the venv's.
mkdir "$WORK/units"
sed "s#/usr/local/bin/bittrade-feed#$BIN#" systemd/bittrade-feed.service \
    >"$WORK/units/bittrade-feed.service"
cp systemd/bittrade-feed.socket "$WORK/units/"
out=$(timeout 60 systemd-analyze verify "$WORK/units/bittrade-feed.service" \
    "$WORK/units/bittrade-feed.socket" 2>&1) || fail "systemd-analyze verify: $out"
[[ -z $out ]] || fail "systemd-analyze verify warns: $out"
ok "no errors, no warnings (ExecStart checked as $BIN)"

step "systemd-analyze security --offline=yes systemd/bittrade-feed.service"
report=$(timeout 60 systemd-analyze security --offline=yes systemd/bittrade-feed.service 2>&1) ||
    fail "systemd-analyze security: $report"
score=$(sed -n 's/.*Overall exposure level for bittrade-feed.service: \([0-9.]*\).*/\1/p' <<<"$report")
[[ -n $score ]] || fail "no exposure score in: $report"
grep '✗' <<<"$report" | sed 's/^/   /' || true
awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }' ||
    fail "exposure $score is above $MAX_EXPOSURE"
ok "exposure $score (limit $MAX_EXPOSURE)"

# -- 5-7. installs, the proxy, the boot test ------------------------------------------------
mkdir "$WORK/dist"
INSTALL=$INSTALL scripts/install-check.sh "$WORK/dist"
INSTALL=$INSTALL scripts/nginx-check.sh
INSTALL=$INSTALL scripts/nspawn-check.sh "$WORK/dist"

step "all operations checks passed"
