"""Issue 13's benchmark: scenario b's CPU per delivery with auth and limits off and on.

Admission (credential check, scope intersection, per-address and per-credential limits)
runs once per connection, never per tick, so with auth on the server CPU per delivery at
``--n`` subscribers must stay within 1.1x of auth off. Each round starts a fresh daemon
(``bench/run.py``'s ``Daemon``, simulated source at 1 tick/s) and runs ``bench/loadgen.py``
through ``run.loadgen``; rounds alternate off, on, off, on... so slow drift on the machine
hits both. With auth on, every subscriber sends ``Authorization: Bearer`` with an API key
made by ``bittrade-feed keys add`` (scope ``*``), and the limits are on at values the load
(10,000 subscribers over source addresses 127.0.0.2-250) stays under.

    python bench/auth.py --quick
    python bench/auth.py --out bench/results/issue13/auth.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/run.py: Daemon, loadgen, machine, code_version

AUTH_ON = """
[auth]
enabled = true
key_file = "{key_file}"
"""
LIMITS_ON = run.BENCH_LIMITS + "max_per_credential = 20000\n"
"""[stream] limits: every one enforced (per address, connect rate, per credential), none
reached by this load (10,000 streams over 249 addresses, all on one key)."""
LIMITS_OFF = "max_per_address = 0\nmax_per_credential = 0\nconnect_burst = 0\n"
"""[stream] limits all off (0): only the global cap, as before issue 13."""


def api_key(opts: argparse.Namespace, key_file: Path) -> str:
    """A new key for every pair, made with the daemon's own CLI (printed once, on stdout)."""
    out = subprocess.run(
        [opts.daemon, "keys", "add", "--key-file", str(key_file), "--pairs", "*"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.strip()


def one_round(opts: argparse.Namespace, workdir: Path, auth: bool, i: int) -> dict[str, Any]:
    """One daemon, one load-generator phase; its report."""
    extra, headers = "", ()
    if auth:
        key_file = workdir / f"keys-{i}.toml"
        key = api_key(opts, key_file)
        extra = AUTH_ON.format(key_file=key_file)
        headers = (f"Authorization: Bearer {key}",)
    limits = LIMITS_ON if auth else LIMITS_OFF
    with run.Daemon(opts, workdir, 1.0, limits=limits, extra=extra) as srv:
        srv.headers = headers
        tag = f"{'on' if auth else 'off'}{i}"
        return run.loadgen(opts, srv, workdir, tag, opts.n, opts.window, 1.0, opts.settle)


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def per(auth: bool) -> list[float]:
        return [
            r["result"]["window"]["server_cpu_us_per_delivery"]
            for r in rounds
            if r["auth"] == auth and "window" in r["result"]
        ]

    def connect(auth: bool) -> list[Any]:
        return [
            run.g(r["result"], "server", "cpu_us_per_connect") for r in rounds if r["auth"] == auth
        ]

    off, on = per(False), per(True)
    out: dict[str, Any] = {
        "off_us_per_delivery": off,
        "on_us_per_delivery": on,
        # Where admission's cost shows: once per connection.
        "off_us_per_connect": connect(False),
        "on_us_per_connect": connect(True),
    }
    if off and on:
        out["off_median"] = statistics.median(off)
        out["on_median"] = statistics.median(on)
        out["ratio"] = round(out["on_median"] / out["off_median"], 3)
        out["goal"] = 1.1
        out["met"] = out["ratio"] <= 1.1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="600 subscribers, 1 round each")
    ap.add_argument("--n", type=int, default=10_000, help="subscribers")
    ap.add_argument("--window", type=float, default=20.0, help="measured seconds per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each (off, on)")
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=run.BENCH / "results" / "issue13" / "latest.json")
    opts, rest = ap.parse_known_args(argv)
    base = run.parse_args(["--servers", "daemon", *rest])
    for key in ("python", "daemon", "server_core", "client_core", "loop"):
        setattr(opts, key, getattr(base, key))
    opts.storm_after = opts.storm_delay = 0.0
    if opts.quick:
        opts.n, opts.window, opts.rounds, opts.settle = 600, 4.0, 1, 1.0
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by every child
    workdir = Path(tempfile.mkdtemp(prefix="bittrade-auth-", dir="/dev/shm"))
    started = time.time()
    results: dict[str, Any] = {
        "params": {"n": opts.n, "window": opts.window, "rounds": opts.rounds},
        "machine": run.machine(base),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "daemon_code_start": run.code_version(),
        "rounds": [],
    }
    try:
        for i in range(opts.rounds):
            for auth in (False, True):
                res = one_round(opts, workdir, auth, i)
                results["rounds"].append({"auth": auth, "result": res})
    except KeyboardInterrupt:
        run.log("interrupted; partial results follow")
    finally:
        results["daemon_code_end"] = run.code_version()
        results["seconds"] = round(time.time() - started, 1)
        results["summary"] = summary(results["rounds"])
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["summary"], indent=1))
    print(f"results: {opts.out}  ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
