"""Interleaved rounds of scenario b under two daemon configurations (A, B, A, B, ...).

Used by ``bench/auth.py`` (auth off / on) and ``bench/alerts.py`` (alerts off / on with
10,000 rules). Each round is a fresh daemon (``bench/run.py``'s ``Daemon``, simulated
source at 1 tick/s, pinned to one core) and one ``run.loadgen`` phase (load generator on
the other core). Alternating the two variants makes slow drift on the machine (other
work, thermal, the VM's neighbours) hit both alike.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/run.py: Daemon, loadgen, machine, code_version

Round = Callable[[argparse.Namespace, Path, int], dict[str, Any]]
"""One round of a variant: (options, work directory, round number) to a loadgen report."""


def parse(
    doc: str | None,
    default_out: Path,
    argv: list[str] | None,
    extra: Callable[[Any], None],
    settle: float = 3.0,
) -> argparse.Namespace:
    """The common options (and ``extra``'s), with run.py's interpreter and core settings."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n", 1)[0] if doc else None)
    ap.add_argument("--quick", action="store_true", help="600 subscribers, 1 round each")
    ap.add_argument("--n", type=int, default=10_000, help="subscribers")
    ap.add_argument("--window", type=float, default=20.0, help="measured seconds per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each variant")
    ap.add_argument("--settle", type=float, default=settle, help="seconds before the window")
    ap.add_argument("--out", type=Path, default=default_out)
    extra(ap)
    opts, rest = ap.parse_known_args(argv)
    base = run.parse_args(["--servers", "daemon", *rest])
    for key in ("python", "daemon", "server_core", "client_core", "loop"):
        setattr(opts, key, getattr(base, key))
    opts.base = base
    opts.storm_after = opts.storm_delay = 0.0
    if opts.quick:
        opts.n, opts.window, opts.rounds, opts.settle = 600, 4.0, 1, 1.0
    return opts


def scenario_b(
    opts: argparse.Namespace, workdir: Path, tag: str, *, headers: Sequence[str] = (), **daemon: Any
) -> dict[str, Any]:
    """One fresh daemon (``daemon``: ``run.Daemon``'s keywords) and one b phase."""
    with run.Daemon(opts, workdir, 1.0, **daemon) as srv:
        srv.headers = tuple(headers)
        return run.loadgen(opts, srv, workdir, tag, opts.n, opts.window, 1.0, opts.settle)


def interleave(
    opts: argparse.Namespace,
    variants: Sequence[tuple[str, Round]],
    summarize: Callable[[list[dict[str, Any]]], dict[str, Any]],
    prefix: str,
    params: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> int:
    """Run ``opts.rounds`` rounds of every variant in turn; write and print the results."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by every child
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir="/dev/shm"))
    started = time.time()
    results: dict[str, Any] = {
        "params": {
            "n": opts.n,
            "window": opts.window,
            "settle": opts.settle,
            "rounds": opts.rounds,
            **(params or {}),
        },
        "machine": run.machine(opts.base),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "daemon_code_start": run.code_version(),
        **(extra or {}),
        "rounds": [],
    }
    try:
        for i in range(opts.rounds):
            for name, one in variants:
                res = one(opts, workdir, i)
                results["rounds"].append({"variant": name, "result": res})
    except KeyboardInterrupt:
        run.log("interrupted; partial results follow")
    finally:
        results["daemon_code_end"] = run.code_version()
        results["seconds"] = round(time.time() - started, 1)
        results["summary"] = summarize(results["rounds"])
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["summary"], indent=1))
    print(f"results: {opts.out}  ({results['seconds']} s)")
    return 0


def figures(rounds: list[dict[str, Any]], variant: str, *path: str) -> list[Any]:
    """One figure (a path into the loadgen report) of every round of ``variant``."""
    return [run.g(r["result"], *path) for r in rounds if r["variant"] == variant]


def compared(rounds: list[dict[str, Any]], a: str, b: str, goal: float | None) -> dict[str, Any]:
    """Server CPU per delivery of both variants, their medians and ratio (b over a)."""
    path = ("window", "server_cpu_us_per_delivery")
    first = [v for v in figures(rounds, a, *path) if v is not None]
    second = [v for v in figures(rounds, b, *path) if v is not None]
    out: dict[str, Any] = {f"{a}_us_per_delivery": first, f"{b}_us_per_delivery": second}
    if first and second:
        out[f"{a}_median"] = statistics.median(first)
        out[f"{b}_median"] = statistics.median(second)
        out["ratio"] = round(out[f"{b}_median"] / out[f"{a}_median"], 3)
        if goal is not None:
            out["goal"] = goal
            out["met"] = out["ratio"] <= goal
    return out
