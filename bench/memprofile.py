"""Where a subscriber's memory goes: the daemon app in-process under tracemalloc.

Runs the real app (``create_app``, uvloop, the simulated source at 1 tick/s), lets
``bench/loadgen.py`` (pinned to the other core) open N subscribers, and compares
before/after: RSS/PSS, live objects by type (``gc``), and allocated bytes by source
line (``tracemalloc``), each divided by N. tracemalloc slows the daemon down but does
not change what stays allocated.

    python bench/memprofile.py --n 2000 [--out bench/results/memprofile.json]
    python bench/memprofile.py --gc --n 19000 --window 30   # cyclic GC pauses instead
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

from bittrade_feed import cli
from bittrade_feed.config import parse_config
from bittrade_feed.ops import logs
from bittrade_feed.server.app import create_app

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from loadgen import proc_mem  # noqa: E402


def type_counts() -> Counter[str]:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = parse_config(
        {
            "feed": {
                "pairs": ["BTC-USD"],
                "interval": 1.0,
                "request_timeout": 1.0,
                "sources": {"BTC-USD": ["simulated"]},
            },
            "aggregation": {"quorum": 1},
            # Limits sized for loadgen (30,000 streams over 249 source addresses at once).
            "stream": {
                "max_subscribers": 30000,
                "heartbeat": 15,
                "max_per_address": 200,
                "connect_burst": 200,
                "connect_per_second": 100,
            },
            "server": {"host": "127.0.0.1", "port": port},
            "database": {"path": str(workdir / "feed.sqlite3")},
            "log": {"level": "warning"},
        }
    )
    logs.configure(config.log.level, config.log.format)
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    await asyncio.sleep(2.5)  # a tick or two, so the snapshot and ring exist
    if not args.default_gc:
        # As ``bittrade-feed serve`` does: its collector thresholds, start-up objects frozen.
        tune = getattr(cli, "_tune_gc", None)
        if tune is not None:
            tune()
        gc.freeze()
    mark = workdir / "mark"
    out = workdir / "loadgen.json"
    gc.collect()
    mem0 = proc_mem_self()
    types0 = type_counts()
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    if args.gc:
        started: list[float] = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                pauses[info["generation"]].append(time.perf_counter() - started[0])

        gc.callbacks.append(on_gc)
    else:
        tracemalloc.start(args.frames)
    snap0 = tracemalloc.take_snapshot() if not args.gc else None
    proc = await asyncio.create_subprocess_exec(
        "taskset",
        "-c",
        str(args.client_core),
        sys.executable,
        str(BENCH / "loadgen.py"),
        "subscribe",
        "--url",
        f"http://127.0.0.1:{port}/api/price-stream",
        "--n",
        str(args.n),
        "--settle",
        "2",
        "--window",
        str(args.window),
        "--mark",
        str(mark),
        "--out",
        str(out),
    )
    bound = 120 + args.window
    try:
        deadline = time.monotonic() + bound
        # The load generator marks its window with a file; nothing here can be awaited.
        while not mark.exists() and proc.returncode is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        if args.gc:
            at_window = {g: len(v) for g, v in pauses.items()}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), max(0.0, deadline - time.monotonic()))
            gc.callbacks.clear()
            return gc_report(pauses, at_window, args.n)
        gc.collect()
        snap1 = tracemalloc.take_snapshot()
        mem1 = proc_mem_self()
        types1 = type_counts()
        n = args.n
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), max(0.0, deadline - time.monotonic()))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        await runner.cleanup()
    connected = json.loads(out.read_text())["connect"]["connected"] if out.exists() else n
    n = connected or n
    stats = snap1.compare_to(snap0, "traceback")
    total = sum(s.size_diff for s in stats)
    sites = []
    for st in stats[: args.top]:
        # Most recent frame first: the line that allocated, then its callers.
        frames = [f"{Path(f.filename).name}:{f.lineno}" for f in reversed(st.traceback)]
        sites.append(
            {
                "bytes_per_sub": round(st.size_diff / n, 1),
                "objects_per_sub": round(st.count_diff / n, 2),
                "where": " <- ".join(frames[:4]),
            }
        )
    by_file: Counter[str] = Counter()
    for st in snap1.compare_to(snap0, "filename"):
        by_file[st.traceback[0].filename.split("site-packages/")[-1]] += st.size_diff
    types = [
        (t, round((types1[t] - types0.get(t, 0)) / n, 2))
        for t in types1
        if types1[t] - types0.get(t, 0) >= n // 2
    ]
    types.sort(key=lambda x: -x[1])
    return {
        "n": n,
        "rss_per_sub_bytes": round((mem1["rss"] - mem0["rss"]) / n),
        "pss_per_sub_bytes": round((mem1["pss"] - mem0["pss"]) / n),
        "tracemalloc_per_sub_bytes": round(total / n),
        "by_file_per_sub": [(f, round(b / n)) for f, b in by_file.most_common(15)],
        "gc_objects_per_sub": types[:40],
        "top_sites": sites,
    }


def gc_report(pauses: dict[int, list[float]], at_window: dict[int, int], n: int) -> dict[str, Any]:
    """Collections per generation while N connected and while they were held."""
    out: dict[str, Any] = {"n": n, "tracked_objects_now": len(gc.get_objects())}
    for gen, times in pauses.items():
        k = at_window[gen]
        for label, part in (("connect", times[:k]), ("hold", times[k:])):
            out[f"gen{gen}_{label}"] = {
                "count": len(part),
                "total_ms": round(sum(part) * 1000, 1),
                "max_ms": round(max(part, default=0.0) * 1000, 1),
            }
    return out


def proc_mem_self() -> dict[str, int]:
    import os  # noqa: PLC0415

    return proc_mem(os.getpid())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--frames", type=int, default=12, help="tracemalloc traceback depth")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--client-core", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--gc", action="store_true", help="no tracemalloc: time the cyclic GC's collections instead"
    )
    ap.add_argument("--window", type=float, default=6.0, help="s held after connecting")
    ap.add_argument(
        "--default-gc",
        action="store_true",
        help="Python's default collector settings instead of the daemon's",
    )
    args = ap.parse_args()
    import uvloop  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="bittrade-mem-", dir="/dev/shm") as tmp:
        result = uvloop.run(main_async(args, Path(tmp)))
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
