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
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ab  # bench/ab.py: interleaved rounds of scenario b
import run  # bench/run.py: BENCH, BENCH_LIMITS

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


def auth_off(opts: argparse.Namespace, workdir: Path, i: int) -> dict[str, Any]:
    """A round with no [auth] and the per-address/credential limits off."""
    return ab.scenario_b(opts, workdir, f"off{i}", limits=LIMITS_OFF)


def auth_on(opts: argparse.Namespace, workdir: Path, i: int) -> dict[str, Any]:
    """A round with [auth] on, every subscriber sending a key, and every limit on."""
    key_file = workdir / f"keys-{i}.toml"
    key = api_key(opts, key_file)
    return ab.scenario_b(
        opts,
        workdir,
        f"on{i}",
        headers=(f"Authorization: Bearer {key}",),
        limits=LIMITS_ON,
        extra=AUTH_ON.format(key_file=key_file),
    )


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out = ab.compared(rounds, "off", "on", 1.1)
    # Where admission's cost shows: once per connection.
    out["off_us_per_connect"] = ab.figures(rounds, "off", "server", "cpu_us_per_connect")
    out["on_us_per_connect"] = ab.figures(rounds, "on", "server", "cpu_us_per_connect")
    return out


def main(argv: list[str] | None = None) -> int:
    default = run.BENCH / "results" / "issue13" / "latest.json"
    opts = ab.parse(__doc__, default, argv, lambda _ap: None)
    variants = [("off", auth_off), ("on", auth_on)]
    return ab.interleave(opts, variants, summary, "bittrade-auth-")


if __name__ == "__main__":
    raise SystemExit(main())
