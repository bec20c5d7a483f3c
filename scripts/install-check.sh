#!/usr/bin/env bash
# The README's install commands, run literally outside the checkout (issue 11, item 3):
#   1. python -m build: the daemon's sdist and wheel (the wheel built from the sdist), and
#      the wheel carries the dashboard's feed.js (pyproject's force-include)
#   2. the wheel (with the `fast` extra) in a fresh venv under a temp dir; the installed
#      daemon, started on the demo config on a free loopback port, serves the dashboard
#      (/ and /dashboard/feed.js) and streams a price
#      the same from a git URL (git+file:// of HEAD): the dashboard files are there too
#   3. the Python client's wheel in its own venv: it imports and its CLI starts
#   4. the JS client's `npm pack` tarball installed with npm into an empty project: it imports
#   5. `make run` in a copy of the checkout installs what running needs and nothing else
# Usage: scripts/install-check.sh [DIST]; with DIST (a directory), the built files are kept
# there for the caller (scripts/ops-checks.sh hands them to the systemd boot test).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
source scripts/ops-lib.sh

WORK=$(mktemp -d /tmp/bittrade-install.XXXXXX)
DIST=${1:-$WORK/dist}
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do # each started in its own session: stop the whole group
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        timeout 15 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL -- "-$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$DIST"
pip_install() { # pip_install <venv> <requirement>: quietly, showing pip's output on failure
    timeout 300 "$1/bin/pip" install --quiet "$2" >"$WORK/pip.log" 2>&1 ||
        { cat "$WORK/pip.log"; fail "pip install $2 failed"; }
}

# -- 1. build -------------------------------------------------------------------------------
step "python -m build (sdist, then the wheel from the sdist)"
timeout 300 "$PY" -m build --outdir "$DIST" . >"$WORK/build.log" 2>&1 ||
    { tail -30 "$WORK/build.log"; fail "python -m build failed"; }
WHEEL=$(ls "$DIST"/bittrade_feed-*.whl)
SDIST=$(ls "$DIST"/bittrade_feed-*.tar.gz)
"$PY" - "$WHEEL" "$ROOT/clients/js/src/index.js" <<'EOF' || fail "the wheel lacks the dashboard files"
import sys, zipfile
wheel, js = sys.argv[1:]
names = set(zipfile.ZipFile(wheel).namelist())
for name in ("index.html", "dashboard.js", "dashboard.css", "feed.js"):
    assert f"bittrade_feed/server/static/{name}" in names, f"{name} not in {wheel}"
packed = zipfile.ZipFile(wheel).read("bittrade_feed/server/static/feed.js")
assert packed == open(js, "rb").read(), "static/feed.js differs from clients/js/src/index.js"
EOF
ok "$(basename "$SDIST"), $(basename "$WHEEL") (static/feed.js = clients/js/src/index.js)"

# -- 2. the daemon from its wheel -----------------------------------------------------------
step "pip install '$(basename "$WHEEL")[fast]' into a fresh venv outside the checkout"
cd "$WORK" # nothing below may see the checkout's sources
python3 -m venv "$WORK/feed"
pip_install "$WORK/feed" "$WHEEL[fast]"
where=$("$WORK/feed/bin/python" -c 'import bittrade_feed.server, uvloop; print(bittrade_feed.server.__file__)')
[[ $where == "$WORK/feed/"* ]] || fail "bittrade_feed imported from $where, not the venv"
ok "installed: $where"

step "start the installed daemon on the demo config, load the dashboard and the stream"
read -r PORT < <(free_ports 1)
demo_config "$WORK/demo.toml" "$PORT" "$WORK"
"$WORK/feed/bin/bittrade-feed" check-config "$WORK/demo.toml"
setsid "$WORK/feed/bin/bittrade-feed" serve --config "$WORK/demo.toml" >"$WORK/daemon.log" 2>&1 &
PIDS+=($!)
BASE=http://127.0.0.1:$PORT
fetch "$BASE/readyz" "$WORK/readyz.json" || { cat "$WORK/daemon.log"; fail "never ready"; }
fetch "$BASE/" "$WORK/index.html"
grep -q 'src="dashboard/dashboard.js"' "$WORK/index.html" || fail "GET / does not load dashboard.js"
fetch "$BASE/dashboard/dashboard.js" "$WORK/dashboard.js"
grep -q "from './feed.js'" "$WORK/dashboard.js" || fail "dashboard.js does not import ./feed.js"
fetch "$BASE/dashboard/feed.js" "$WORK/feed.js"
cmp -s "$WORK/feed.js" "$ROOT/clients/js/src/index.js" ||
    fail "/dashboard/feed.js is not the JS client"
ok "GET /, /dashboard/dashboard.js and /dashboard/feed.js answer 200 from the installed package"
event=$(first_event "$BASE/api/price-stream" 15) || { cat "$WORK/daemon.log"; fail "no event"; }
[[ $event == data:*BTC-USD* ]] || fail "unexpected first event: $event"
ok "/api/price-stream: $event"

step "pip install 'bittrade-feed[fast] @ git+file://localhost/CHECKOUT@HEAD' (as with git+https://)"
python3 -m venv "$WORK/from-git"
# A PEP 508 URL needs a host, as git+https:// has: file://localhost/ is git's local path.
pip_install "$WORK/from-git" "bittrade-feed[fast] @ git+file://localhost$ROOT@$(git -C "$ROOT" rev-parse HEAD)"
"$WORK/from-git/bin/python" -c '
from importlib.resources import files
static = files("bittrade_feed.server").joinpath("static")
missing = [n for n in ("index.html", "dashboard.js", "feed.js") if not static.joinpath(n).is_file()]
assert not missing, f"the git install lacks {missing}"' || fail "the git URL install is incomplete"
ok "installed from git, with the dashboard's files"

# -- 3. the Python client -------------------------------------------------------------------
step "the Python client: build its wheel, install it into a fresh venv, import it"
timeout 300 "$PY" -m build --outdir "$DIST" "$ROOT/clients/python" >"$WORK/build-client.log" 2>&1 ||
    { tail -30 "$WORK/build-client.log"; fail "python -m build clients/python failed"; }
CLIENT_WHEEL=$(ls "$DIST"/bittrade_feed_client-*.whl)
python3 -m venv "$WORK/client"
pip_install "$WORK/client" "$CLIENT_WHEEL"
"$WORK/client/bin/python" -c 'import bittrade_feed_client as c; print("   imported", c.__name__, c.__file__)'
"$WORK/client/bin/bittrade-ticker" --help >/dev/null || fail "bittrade-ticker --help failed"
ok "$(basename "$CLIENT_WHEEL"): imports, bittrade-ticker --help exits 0"

# -- 4. the JS client -----------------------------------------------------------------------
step "the JS client: npm pack, npm install the tarball into an empty project, import it"
need npm npm
TARBALL=$(cd "$ROOT/clients/js" && npm pack --silent --pack-destination "$DIST" | tail -1)
mkdir "$WORK/app"
(cd "$WORK/app" && npm init -y >/dev/null &&
    timeout 120 npm install --silent --no-audit --no-fund "$DIST/$TARBALL") ||
    fail "npm install $TARBALL failed"
(cd "$WORK/app" && node --input-type=module -e '
import * as feed from "bittrade-feed-client";
const names = Object.keys(feed);
if (names.length === 0) throw new Error("no exports");
console.log("   exports:", names.join(", "));') || fail "bittrade-feed-client does not import"
mkdir "$WORK/app2" # and the README's other form: npm install of the checkout's directory
(cd "$WORK/app2" && npm init -y >/dev/null &&
    timeout 120 npm install --silent --no-audit --no-fund "$ROOT/clients/js" &&
    node --input-type=module -e 'import { createPriceFeed } from "bittrade-feed-client"; createPriceFeed.call;') ||
    fail "npm install $ROOT/clients/js does not give an importable client"
ok "$TARBALL installs and imports; so does npm install $ROOT/clients/js"

# -- 5. make run installs only what running needs -------------------------------------------
step "make run in a fresh copy of the checkout: no test or lint tools in its venv"
mkdir "$WORK/clone"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
    xargs -0 tar -cf - --ignore-failed-read 2>/dev/null) | tar -xf - -C "$WORK/clone"
read -r RUN_PORT < <(free_ports 1)
demo_config "$WORK/run.toml" "$RUN_PORT" "$WORK"
setsid make -C "$WORK/clone" run CONFIG="$WORK/run.toml" >"$WORK/make-run.log" 2>&1 &
PIDS+=($!)
fetch_long() { # the first `make run` creates the venv: allow it minutes, not seconds
    for _ in $(seq 30); do fetch "$1" "$2" 2>/dev/null && return 0; done
    return 1
}
fetch_long "http://127.0.0.1:$RUN_PORT/readyz" "$WORK/run-readyz.json" ||
    { tail -20 "$WORK/make-run.log"; fail "make run never served"; }
for tool in pytest mypy ruff playwright hypothesis; do
    [[ ! -e $WORK/clone/.venv/bin/$tool ]] || fail "make run installed $tool"
done
ok "make run serves; its venv has no pytest, mypy, ruff, playwright, hypothesis"

step "install checks passed"
