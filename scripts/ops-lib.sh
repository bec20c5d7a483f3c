# Helpers shared by the ops check scripts; source it, do not run it.
# Expects $PY (a Python 3.11+) and $INSTALL (yes: apt-get what is missing when root).

step() { printf '\n== %s   [%d s]\n' "$*" "$SECONDS"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() {
    printf '   FAILED: %s\n' "$*" >&2
    exit 1
}

need() { # need <command> <debian package>: install it with apt-get when allowed
    command -v "$1" >/dev/null && return 0
    if [[ ${INSTALL:-no} == yes && $(id -u) == 0 ]]; then
        step "installing $2 (for $1)"
        timeout 600 apt-get update -qq
        DEBIAN_FRONTEND=noninteractive timeout 600 \
            apt-get install -y -qq --no-install-recommends "$2" >/dev/null
        command -v "$1" >/dev/null || fail "$1 still missing after installing $2"
    else
        fail "$1 not found: apt-get install $2 (or run as root with --install)"
    fi
}

free_ports() { # free_ports N: N currently free loopback TCP ports, on one line
    "$PY" -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))' "$1"
}

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

first_event() { # first_event <url> <seconds>: print the first SSE `data:` line, or fail
    timeout "$(($2 + 5))" "$PY" - "$1" "$2" <<'EOF'
import sys, time, urllib.request
url, limit = sys.argv[1], float(sys.argv[2])
with urllib.request.urlopen(url, timeout=limit) as resp:
    assert resp.headers["Content-Type"].startswith("text/event-stream"), resp.headers
    for raw in resp:
        if raw.startswith(b"data:"):
            print(raw.decode().strip())
            break
EOF
}

demo_config() { # demo_config <out> <port> <dir>: examples/demo.toml on <port>, data in <dir>
    sed "s#\"./data/demo.sqlite3\"#\"$3/demo.sqlite3\"#" "$ROOT/examples/demo.toml" >"$1"
    printf '\n[server]\nhost = "127.0.0.1"\nport = %s\nshutdown_timeout = 5.0\n' "$2" >>"$1"
}

sim_config() { # sim_config <out> <port> <dir> [TOML lines for [server]]: one simulated pair, a price a second
    cat >"$1" <<TOML
[server]
host = "127.0.0.1"
port = $2
shutdown_timeout = 5.0
${4:-}
[database]
path = "$3/feed.sqlite3"
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
TOML
}
