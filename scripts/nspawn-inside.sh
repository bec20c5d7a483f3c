#!/bin/bash
# Runs inside the booted Debian container of scripts/nspawn-check.sh, as a oneshot unit,
# with the checkout under /ops and the wheels under /wheels (read-only), results in /out. Installs the wheel
# as the README's Install section does and drives the shipped unit with systemctl.
set -euo pipefail
exec >>/out/log 2>&1
trap 'echo $? >/out/status' EXIT
ROOT=/ops
PY=/opt/bittrade-feed/bin/python
source /ops/scripts/ops-lib.sh
UNIT=bittrade-feed
CONF=/etc/bittrade-feed/config.toml
API=http://127.0.0.1:8080

show() { systemctl show -P "$1" "$UNIT"; } # show <property>
cursor() { journalctl -q -n1 -o json | jq -r .__CURSOR; }
events_since() { # events_since <cursor> <event>: the daemon's JSON lines with that event
    journalctl -q -u "$UNIT" --after-cursor="$1" -o cat |
        jq -R -c --arg e "$2" 'fromjson? | select(.event == $e)'
}
wait_for() { # wait_for <seconds> <description> <command...>: poll every 0.5 s
    local limit=$1 what=$2
    shift 2
    for _ in $(seq $((limit * 2))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    fail "not within $limit s: $what"
}
has_event() { [[ -n $(events_since "$1" "$2") ]]; }
write_config() { # write_config [extra sed]: the offline demo config, database in $STATE_DIRECTORY
    sed -e '/^path = /d' ${1:+-e "$1"} /ops/examples/demo.toml >"$CONF.new"
    chmod 0644 "$CONF.new"
    mv "$CONF.new" "$CONF"
}

step "install the wheel and the unit (README: Install)"
python3 -m venv /opt/bittrade-feed
/opt/bittrade-feed/bin/pip install --quiet --no-index --find-links /wheels \
    "$(ls /wheels/bittrade_feed-*.whl)[fast]"
ln -sf /opt/bittrade-feed/bin/bittrade-feed /usr/local/bin/bittrade-feed
install -d -m 0755 /etc/bittrade-feed
write_config
bittrade-feed check-config "$CONF"
install -m 0644 /ops/systemd/bittrade-feed.service /etc/systemd/system/
systemctl daemon-reload
ok "$(bittrade-feed --version), systemd $(systemctl --version | sed -n '1s/systemd \([0-9]*\).*/\1/p')"

step "systemctl start returns after READY=1: the API answers at once, with a price"
began=$(date +%s%N)
systemctl start "$UNIT"
took=$((($(date +%s%N) - began) / 1000000))
[[ $(show ActiveState) == active ]] || fail "not active after start: $(show ActiveState)"
curl -sf --max-time 2 "$API/api/price" >/tmp/price.json || fail "no price right after start"
ok "active; /api/price at once: $(cat /tmp/price.json) (start took ${took} ms)"

step "the STATUS= line in systemctl status"
status=$(show StatusText)
[[ $status =~ ^BTC-USD\ [0-9.]+\ \([0-9]+\ s\ old\)\;\ ETH-USD\ [0-9.]+\ \([0-9]+\ s\ old\)\;\ [0-9]+\ subscribers?$ ]] ||
    fail "unexpected STATUS: $status"
systemctl status "$UNIT" --no-pager | grep -q '^ *Status: "BTC-USD' ||
    fail "systemctl status shows no Status: line"
ok "Status: \"$status\""

step "the database: under the StateDirectory, owned by the dynamic user"
pid=$(show MainPID)
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
db=/var/lib/private/bittrade-feed/bittrade-feed.sqlite3
[[ -f $db ]] || fail "no $db: $(ls -la /var/lib/private/bittrade-feed 2>&1)"
[[ $(readlink /var/lib/bittrade-feed) == private/bittrade-feed ]] ||
    fail "/var/lib/bittrade-feed is not the DynamicUser= symlink"
(( uid >= 61184 && uid <= 65519 )) || fail "the daemon runs as uid $uid, not a dynamic user"
[[ $(stat -c %u "$db") == "$uid" ]] || fail "$db is owned by $(stat -c %u "$db"), not $uid"
[[ $(stat -c %a /var/lib/private/bittrade-feed) == 700 ]] || fail "state directory not 0700"
ok "$db, owner uid $uid (the daemon's, in the dynamic range), directory 0700"

step "systemctl reload: a good config applies, a bad one is refused and the daemon runs on"
pid=$(show MainPID)
c=$(cursor)
write_config 's/^interval = 2.0/interval = 1.0/'
systemctl reload "$UNIT"
wait_for 15 "config reloaded" has_event "$c" "config reloaded"
c=$(cursor)
write_config 's/^interval = 2.0/interval = -1/'
systemctl reload "$UNIT"
wait_for 15 "reload refused" has_event "$c" "reload refused, keeping the running config"
wait_for 10 "STATUS says reload failed" bash -c "systemctl show -P StatusText $UNIT | grep -q '^reload failed: feed.interval'"
[[ $(show MainPID) == "$pid" && $(show ActiveState) == active ]] || fail "the reload restarted it"
ok "good: \"config reloaded\"; bad: \"$(show StatusText)\"; same PID $pid, still active"
write_config
systemctl reload "$UNIT"

step "the watchdog: a wedged daemon (SIGSTOP) is aborted and Restart= brings it back"
pid=$(show MainPID)
restarts=$(show NRestarts)
began=$(date +%s)
systemctl kill -s SIGSTOP "$UNIT"
wait_for 120 "a restart after the watchdog fired" \
    bash -c "[[ \$(systemctl show -P NRestarts $UNIT) -gt $restarts && \$(systemctl show -P ActiveState $UNIT) == active ]]"
new=$(show MainPID)
[[ $new != "$pid" ]] || fail "same PID after the watchdog restart"
journalctl -q -u "$UNIT" | grep -q "Watchdog timeout" || fail "systemd logged no watchdog timeout"
curl -sf --max-time 2 "$API/api/price" >/dev/null || fail "no price after the restart"
ok "\"Watchdog timeout\" logged; PID $pid -> $new after $(($(date +%s) - began)) s; serving"

step "systemctl stop: exit 0"
systemctl stop "$UNIT"
[[ $(show Result) == success && $(show ExecMainStatus) == 0 ]] ||
    fail "stop: Result=$(show Result), exit $(show ExecMainStatus)"
ok "Result=success, ExecMainStatus=0"

step "a bad config: exit 78, no restart loop, the reason at error priority"
write_config 's/^interval = 2.0/interval = -1/'
c=$(cursor)
if systemctl start "$UNIT" 2>/dev/null; then fail "start succeeded on a bad config"; fi
[[ $(show ExecMainStatus) == 78 ]] || fail "exit status $(show ExecMainStatus), not 78"
invocation=$(show InvocationID)
sleep 8 # RestartSec=5s: a restart would have happened by now
[[ $(show InvocationID) == "$invocation" && $(show ActiveState) == failed ]] ||
    fail "restarted after exit 78 (state $(show ActiveState))"
journalctl -q -u "$UNIT" --after-cursor="$c" -p err -o cat | grep -q "feed.interval: -1 is out of range" ||
    fail "journalctl -p err does not show the bad key: $(journalctl -q -u "$UNIT" --after-cursor="$c" -o cat)"
ok "ExecMainStatus=78, still failed 8 s later; journalctl -p err: \"$(journalctl -q -u "$UNIT" --after-cursor="$c" -p err -o cat | grep feed.interval)\""
write_config
systemctl reset-failed "$UNIT"

step "the README's log recipes, literally (journalctl ... | jq)"
systemctl start "$UNIT" # a few fetch lines beside systemd's own non-JSON lines
sleep 3
mapfile -t recipes < <(sed -n '/^### Logs/,/^### /p' /ops/README.md | grep '^journalctl .*| *jq ' | sed 's/ *#.*$//')
(( ${#recipes[@]} >= 2 )) || fail "found ${#recipes[@]} jq recipes in README's Logs section"
for recipe in "${recipes[@]}"; do
    out=$(bash -o pipefail -c "$recipe" 2>/tmp/recipe.err) || fail "$recipe: exit $?: $(cat /tmp/recipe.err)"
    [[ ! -s /tmp/recipe.err ]] || fail "$recipe printed: $(head -3 /tmp/recipe.err)"
    [[ -n $out ]] || fail "$recipe printed nothing"
    ok "$recipe -> $(wc -l <<<"$out") lines, nothing on stderr"
done
journalctl -u "$UNIT" -p warning -o cat | grep -q "SIMULATED SOURCE ENABLED" ||
    fail "journalctl -p warning lacks the simulated-source warning"
ok "journalctl -u $UNIT -p warning shows the warnings and the config errors"

step "socket activation in the README's order; the daemon keeps the socket's Backlog="
mapfile -t commands < <(sed -n '/^### Socket activation/,/^### /p' /ops/README.md |
    sed -n '/^```sh/,/^```/p' | grep '^sudo ' | sed 's/^sudo //')
(( ${#commands[@]} >= 4 )) || fail "found ${#commands[@]} commands in README's Socket activation"
for command in "${commands[@]}"; do
    printf '   $ %s\n' "$command"
    (cd /ops && bash -c "$command") || fail "README: '$command' failed"
done
[[ $(systemctl is-active "$UNIT.socket") == active && $(show ActiveState) == active ]] ||
    fail "socket $(systemctl is-active "$UNIT.socket"), service $(show ActiveState)"
[[ $(show TriggeredBy) == *bittrade-feed.socket* ]] || fail "the service is not socket-activated"
curl -sf --max-time 2 "$API/api/price" >/dev/null || fail "no price on the activated socket"
activated() {
    journalctl -q -u "$UNIT" -o cat |
        jq -R -c 'fromjson? | select(.event == "listening" and .socket_activated)' | grep -q .
}
wait_for 10 "the daemon logs listening with socket_activated" activated
backlog=$(ss -Hltn 'sport = :8080' | awk '{print $3}')
ok "socket and service active; ss -ltn: 127.0.0.1:8080 Send-Q (backlog) $backlog"
[[ $backlog == 4096 ]] || fail "the daemon reset the socket's backlog from 4096 to $backlog"
systemctl restart "$UNIT"
curl -sf --max-time 5 "$API/api/price" >/dev/null || fail "no price after a restart"
ok "systemctl restart keeps the socket; backlog $(ss -Hltn 'sport = :8080' | awk '{print $3}')"

step "auth under the shipped unit (README: API keys): key file 0644, LoadCredential= secret"
AUTH=/etc/bittrade-feed/auth
install -d -m 0755 "$AUTH"
head -c 32 /dev/urandom | base64 | install -m 0600 /dev/stdin "$AUTH/session.secret"
install -d "/etc/systemd/system/$UNIT.service.d"
printf '[Service]\nLoadCredential=session.secret:%s/session.secret\n' "$AUTH" \
    >"/etc/systemd/system/$UNIT.service.d/auth.conf"
systemctl daemon-reload
key=$(bittrade-feed keys add --key-file "$AUTH/keys.toml" --pairs 'BTC-*' --history)
other=$(bittrade-feed keys add --key-file "$AUTH/keys.toml" --pairs '*')
[[ $(stat -c %a "$AUTH/keys.toml") == 644 ]] || fail "key file mode $(stat -c %a "$AUTH/keys.toml")"
grep -qF "${key#btk_*_}" "$AUTH/keys.toml" && fail "the key file holds a secret"
write_config
printf '[auth]\nenabled = true\nkey_file = "%s/keys.toml"\nsession_secret_file = "%s"\n' \
    "$AUTH" '$CREDENTIALS_DIRECTORY/session.secret' >>"$CONF"
bittrade-feed check-config "$CONF"
systemctl restart "$UNIT"
wait_for 20 "the daemon with auth on answers /readyz" curl -sf --max-time 2 "$API/readyz"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$API/api/price-stream")
[[ $code == 401 ]] || fail "a stream without a credential got $code, not 401"
curl -sN --max-time 3 -H "Authorization: Bearer $key" "$API/api/price-stream" >/tmp/keyed.sse || true
grep -q '"pair": *"BTC-USD"' /tmp/keyed.sse || fail "no BTC-USD price with the key: $(head -c 300 /tmp/keyed.sse)"
grep -q '"pair": *"ETH-USD"' /tmp/keyed.sse && fail "a BTC-* key was sent ETH-USD"
code=$(curl -s -o /dev/null -w '%{http_code}' -c /tmp/jar -H 'Content-Type: application/json' \
    -d "{\"key\": \"$other\"}" "$API/api/login")
[[ $code == 204 ]] || fail "POST /api/login answered $code"
curl -sN --max-time 3 -b /tmp/jar "$API/api/price-stream" >/tmp/cookie.sse || true
grep -q '"pair": *"ETH-USD"' /tmp/cookie.sse || fail "no price over the session cookie"
bittrade-feed keys revoke --key-file "$AUTH/keys.toml" "$(cut -d_ -f2 <<<"$key")" >/dev/null
systemctl reload "$UNIT"
revoked() { [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
    -H "Authorization: Bearer $key" "$API/api/price-stream") == 401 ]]; }
wait_for 10 "the revoked key refused after systemctl reload" revoked
journalctl -q -u "$UNIT" -o cat | grep -qF -e "${key#btk_*_}" -e "${other#btk_*_}" &&
    fail "a key's secret is in the journal"
ok "401 without a credential; key stream BTC-USD only; login cookie stream; revoked on reload; no secret in the journal"
rm -f "/etc/systemd/system/$UNIT.service.d/auth.conf"
systemctl daemon-reload

step "all checks inside the container passed"
