#!/usr/bin/env bash
# The README's nginx configuration in front of a real daemon (issue 11, item 8):
#   - SSE through nginx: each price arrives within a second of the same price read from the
#     daemon directly (nginx does not buffer the stream)
#   - WebSocket through nginx: the upgrade succeeds and price messages flow; through a
#     plain `proxy_pass` location it fails with 426, which is why the headers are needed
# The server block is the one in README.md ("Reverse proxy: nginx, ..."), with the upstream
# address and the listen port replaced. nginx runs from a temp prefix on free loopback
# ports in the foreground and is stopped here; missing nginx is installed with apt-get
# under CI or --install, else this says what to install.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
BIN=$(dirname "$PY")/bittrade-feed
INSTALL=${INSTALL:-no}
[[ ${CI:-} == true || ${1:-} == --install ]] && INSTALL=yes
source scripts/ops-lib.sh
need nginx nginx

WORK=$(mktemp -d /tmp/bittrade-nginx.XXXXXX)
chmod 0755 "$WORK" # nginx's workers run as nobody
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        timeout 15 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

step "the daemon (simulated source, one price a second) and nginx in front of it"
read -r PORT PROXY_PORT < <(free_ports 2)
sim_config "$WORK/config.toml" "$PORT" "$WORK"
"$BIN" serve --config "$WORK/config.toml" >"$WORK/daemon.log" 2>&1 &
PIDS+=($!)

# The README's snippet: the ```nginx block of "Reverse proxy: nginx, ...", made local.
server_block=$(sed -n '/^### Reverse proxy: nginx/,/^### /p' README.md |
    sed -n '/^```nginx/,/^```/p' | sed '1d;$d')
[[ $server_block == *"location /api/ws"* ]] || fail "no nginx block with /api/ws in README.md"
server_block=$(sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$PORT/" \
    -e "s/listen 80;/listen 127.0.0.1:$PROXY_PORT;/" \
    -e "s#^\( *\)location / {#\1location /plain/ { proxy_pass http://127.0.0.1:$PORT/; }\n&#" \
    <<<"$server_block")
mkdir -p "$WORK/temp"
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $WORK/temp/client_body;
    proxy_temp_path $WORK/temp/proxy;
    fastcgi_temp_path $WORK/temp/fastcgi;
    uwsgi_temp_path $WORK/temp/uwsgi;
    scgi_temp_path $WORK/temp/scgi;
$server_block
}
EOF
nginx -t -q -p "$WORK" -c "$WORK/nginx.conf" 2>"$WORK/nginx-t.log" ||
    { cat "$WORK/nginx-t.log" "$WORK/nginx.conf"; fail "nginx -t rejects the README's block"; }
nginx -p "$WORK" -c "$WORK/nginx.conf" 2>>"$WORK/error.log" &
PIDS+=($!)
fetch "http://127.0.0.1:$PORT/readyz" "$WORK/readyz.json" || { cat "$WORK/daemon.log"; fail "daemon never ready"; }
fetch "http://127.0.0.1:$PROXY_PORT/readyz" "$WORK/readyz2.json" ||
    { cat "$WORK/error.log"; fail "nginx never proxied /readyz"; }
ok "daemon on :$PORT, nginx $(nginx -v 2>&1 | sed 's#.*/##') on :$PROXY_PORT with the README's block"

step "SSE through nginx: each price arrives within 1 s of the direct stream; WebSocket upgrades"
timeout 60 "$PY" - "http://127.0.0.1:$PORT" "http://127.0.0.1:$PROXY_PORT" <<'EOF'
import asyncio, json, sys, time
import aiohttp

DIRECT, PROXY = sys.argv[1:]
EVENTS = 4


async def sse_arrivals(session, base, seen):
    """Record when each price event id arrives, until EVENTS of them have."""
    async with session.get(base + "/api/price-stream") as resp:
        assert resp.status == 200, resp.status
        assert resp.headers["Content-Type"].startswith("text/event-stream"), resp.headers
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("id:"):
                seen[int(line[3:])] = time.monotonic()
                if len(seen) >= EVENTS:
                    return


async def main():
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        direct, proxied = {}, {}
        await asyncio.gather(sse_arrivals(session, DIRECT, direct), sse_arrivals(session, PROXY, proxied))
        common = sorted(set(direct) & set(proxied))[1:]  # the first is the replayed snapshot
        assert common, (direct, proxied)
        lags = [proxied[i] - direct[i] for i in common]
        print(f"   SSE lag through nginx per event: {', '.join(f'{lag * 1000:.0f} ms' for lag in lags)}")
        assert max(lags) < 1.0, f"nginx held an event back {max(lags):.2f} s"

        # As a browser on the proxied site sends it: its Origin is the proxy's, which the
        # daemon accepts only because the README's block passes the Host on.
        async with session.ws_connect(PROXY + "/api/ws", origin=PROXY) as ws:
            msg = json.loads((await ws.receive(timeout=10)).data)
            assert msg["event"] == "price", msg
            print(f"   WebSocket through nginx (Origin {PROXY}): {msg['event']} {msg['data']['pair']} {msg['data']['price']}")
        try:
            async with session.ws_connect(PROXY + "/api/ws", origin="https://evil.example"):
                raise AssertionError("a foreign Origin upgraded the WebSocket")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 403, exc.status
            print(f"   WebSocket with a foreign Origin through nginx: {exc.status} (refused)")
        try:
            async with session.ws_connect(PROXY + "/plain/api/ws"):
                raise AssertionError("a plain proxy_pass upgraded the WebSocket")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 426, exc.status  # the daemon names the missing headers
            print(f"   WebSocket through a plain proxy_pass location: {exc.status} (refused, as expected)")


asyncio.run(main())
EOF
ok "SSE unbuffered, WebSocket upgraded through the README's nginx block"
step "nginx checks passed"
