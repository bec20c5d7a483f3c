#!/usr/bin/env bash
# Operations checks for CI and for anyone changing the unit, the metrics or the alerts:
#   1. promtool check rules docs/alerts.yml, and unit tests of those rules
#   2. a real daemon (simulated source) whose /metrics passes `promtool check metrics`,
#      on the main listener and on the separate metrics listener, and which stops with 0
#   3. systemd-analyze verify on the unit files: no error, no warning
#   4. systemd-analyze security --offline=yes: exposure at most $MAX_EXPOSURE (2.0)
# Missing tools (promtool from `prometheus`, systemd-analyze from `systemd`) are installed
# with apt-get when running as root under CI=true or with --install; otherwise it stops
# and says what to install. `--tools-only` installs promtool (tests/test_metrics.py needs
# it) and checks nothing. Every step is time-bounded and the daemon is always stopped.
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

step() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() {
    printf '   FAILED: %s\n' "$*" >&2
    exit 1
}

need() { # need <command> <debian package>
    command -v "$1" >/dev/null && return 0
    if [[ $INSTALL == yes && $(id -u) == 0 ]]; then
        step "installing $2 (for $1)"
        timeout 600 apt-get update -qq
        DEBIAN_FRONTEND=noninteractive timeout 600 \
            apt-get install -y -qq --no-install-recommends "$2" >/dev/null
        command -v "$1" >/dev/null || fail "$1 still missing after installing $2"
    else
        fail "$1 not found: apt-get install $2 (or run as root with --install)"
    fi
}

need promtool prometheus
[[ $TOOLS_ONLY == yes ]] && exit 0
need systemd-analyze systemd
[[ -x $BIN ]] || fail "$BIN not found: run 'make test' once to create the venv"

# -- 1. alert rules -------------------------------------------------------------------------
step "promtool check rules docs/alerts.yml"
timeout 60 promtool check rules docs/alerts.yml
ok "alert rules are valid"

step "promtool test rules (each alert fires on the data it is meant for)"
cat >"$WORK/alerts.test.yml" <<EOF
rule_files: [$ROOT/docs/alerts.yml]
evaluation_interval: 30s
tests:
  - interval: 30s
    input_series:
      - series: 'up{job="bittrade-feed",instance="a:8080"}'
        values: '1 1 0x10'
      - series: 'bittrade_feed_stale{job="bittrade-feed",instance="a:8080",pair="BTC-USD"}'
        values: '0 0 1x10'
      - series: 'bittrade_feed_upstream_requests_total{job="bittrade-feed",instance="a:8080",source="kraken",outcome="ok"}'
        values: '0x40'
      - series: 'bittrade_feed_upstream_requests_total{job="bittrade-feed",instance="a:8080",source="kraken",outcome="timeout"}'
        values: '0+1x40'
      - series: 'bittrade_feed_connections_closed_total{job="bittrade-feed",instance="a:8080",transport="sse",reason="slow"}'
        values: '0+5x40'
      - series: 'bittrade_feed_store_write_errors_total{job="bittrade-feed",instance="a:8080"}'
        values: '0 0 1x10'
    alert_rule_test:
      - {eval_time: 1m, alertname: BittradeFeedDown, exp_alerts: []}
      - eval_time: 2m
        alertname: BittradeFeedDown
        exp_alerts:
          - exp_labels: {severity: critical, job: bittrade-feed, instance: "a:8080"}
            exp_annotations:
              summary: "bittrade-feed on a:8080 is down"
              description: >-
                Prometheus could not scrape a:8080 for 1 minute: the daemon is stopped,
                crash-looping or unreachable, and its subscribers get no prices. Check
                \`systemctl status bittrade-feed\` and \`journalctl -u bittrade-feed -p warning\`.
      - {eval_time: 2m, alertname: BittradeFeedStale, exp_alerts: []}
      - eval_time: 3m
        alertname: BittradeFeedStale
        exp_alerts:
          - exp_labels: {severity: critical, job: bittrade-feed, instance: "a:8080", pair: BTC-USD}
            exp_annotations:
              summary: "BTC-USD price is stale on a:8080"
              description: >-
                No quorum of sources has agreed on a BTC-USD price for longer than
                feed.stale_after, and for 2 more minutes. Subscribers were sent a \`stale\`
                status event and should have stopped trading. See /api/sources for each
                source's last error.
      - {eval_time: 9m, alertname: BittradeFeedSourceFailing, exp_alerts: []}
      - eval_time: 20m
        alertname: BittradeFeedSourceFailing
        exp_alerts:
          - exp_labels: {severity: warning, job: bittrade-feed, instance: "a:8080", source: kraken}
            exp_annotations:
              summary: "source kraken fails on a:8080"
              description: >-
                100% of the requests to kraken failed over the last 10 minutes. The feed
                still publishes from the other sources, with less redundancy. The outcome
                label of bittrade_feed_upstream_requests_total says how it fails (timeout,
                rate_limited, bad_body, ...).
      - eval_time: 20m
        alertname: BittradeFeedSlowSubscribersDropped
        exp_alerts:
          - exp_labels: {severity: warning, job: bittrade-feed, instance: "a:8080"}
            exp_annotations:
              summary: "subscribers are being dropped as too slow on a:8080"
              description: >-
                10.0 subscribers a minute are disconnected because their unsent data passed
                stream.max_buffer_bytes. Either the clients or the network path to them
                cannot keep up, or the daemon's host is saturated.
      - eval_time: 2m
        alertname: BittradeFeedStoreWriteErrors
        exp_alerts:
          - exp_labels: {severity: critical, job: bittrade-feed, instance: "a:8080"}
            exp_annotations:
              summary: "bittrade-feed on a:8080 cannot write prices to SQLite"
              description: >-
                1 price commit(s) failed in the last 5 minutes; prices that cannot be stored
                are not published. Check free space and permissions of
                /var/lib/bittrade-feed and the journal for "store failed".
  - interval: 1m
    input_series:
      - series: 'bittrade_feed_source_last_success_timestamp_seconds{job="bittrade-feed",instance="a:8080",source="kraken"}'
        values: '60 120 180 180x20'
      - series: 'bittrade_feed_source_last_success_timestamp_seconds{job="bittrade-feed",instance="a:8080",source="coinbase"}'
        values: '0x23'
      - series: 'bittrade_feed_last_tick_timestamp_seconds{job="bittrade-feed",instance="a:8080",pair="BTC-USD"}'
        values: '60 120 180 180x20'
    alert_rule_test:
      - {eval_time: 10m, alertname: BittradeFeedAllSourcesFailing, exp_alerts: []}
      - eval_time: 11m
        alertname: BittradeFeedAllSourcesFailing
        exp_alerts:
          - exp_labels: {severity: critical, job: bittrade-feed, instance: "a:8080"}
            exp_annotations:
              summary: "every price source is failing on a:8080"
              description: >-
                No exchange has returned a usable quote for over 5 minutes. Check the
                host's outbound network and DNS, and /api/sources for the error of each
                source.
      - {eval_time: 13m, alertname: BittradeFeedNoRecentPrice, exp_alerts: []}
      - eval_time: 14m
        alertname: BittradeFeedNoRecentPrice
        exp_alerts:
          - exp_labels: {severity: critical, job: bittrade-feed, instance: "a:8080", pair: BTC-USD}
            exp_annotations:
              summary: "no new BTC-USD price on a:8080 for 5 minutes"
              description: >-
                The latest published BTC-USD price is 11m 0s old. Either every source is
                failing (see BittradeFeedAllSourcesFailing) or the fetch loop is stalled:
                look for "fetch loop stalled" in the journal.
EOF
timeout 60 promtool test rules "$WORK/alerts.test.yml"
ok "every alert fires when it should and not before"

# -- 2. a live daemon's exposition ----------------------------------------------------------
step "start the daemon (simulated source) and lint its /metrics"
read -r PORT METRICS_PORT < <("$PY" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
cat >"$WORK/config.toml" <<EOF
[server]
port = $PORT
metrics_host = "127.0.0.1"
metrics_port = $METRICS_PORT
shutdown_timeout = 5.0
[database]
path = "$WORK/feed.sqlite3"
[feed]
pairs = ["BTC-USD"]
interval = 1.0
request_timeout = 0.5
[feed.sources]
BTC-USD = ["simulated"]
[aggregation]
quorum = 1
[log]
format = "json"
EOF
"$BIN" check-config "$WORK/config.toml"
"$BIN" serve --config "$WORK/config.toml" >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!

fetch() { # fetch <url> <file>: GET, retrying for up to 20 s; fails on non-200
    timeout 25 "$PY" - "$1" "$2" <<'EOF'
import sys, time, urllib.request
url, out = sys.argv[1:]
deadline = time.monotonic() + 20
while True:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            open(out, "wb").write(resp.read())
            break
    except OSError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"{url}: {exc}")
        time.sleep(0.2)
EOF
}
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

step "all operations checks passed"
