"""Issue 12's benchmark: 1 and 2 daemons on one port (``SO_REUSEPORT``), one Redis.

Each phase starts a private ``redis-server`` on a free loopback port (no persistence,
temporary directory), then N daemons (``bench/run.py``'s ``Daemon``) with the same port,
``server.reuse_port = true`` and ``[cluster] redis_url`` pointing at it, the simulated
source at 1 tick/s. The load generator is ``bench/loadgen.py`` through ``run.loadgen``;
with 2 daemons its server CPU and memory are summed over both processes. Scenarios:

  a  hold:  ``--n-hold`` subscribers (38,000 with 2 daemons; 1 daemon gets at most
            ``--n-hold-single``, its fd limit) for ``--hold`` s: missed events, disconnects.
            More subscribers than one load-generator process can hold (its fd limit) are
            split over several load generators running at once.
  b  cpu:   server CPU per delivery at ``--n-cpu`` subscribers, summed over the daemons.
  e  storm: run.py's scenario e (10,000 of 12,000 drop and reconnect with Last-Event-ID).

With 1 daemon it is pinned to ``--server-core`` and the load generator to ``--client-core``
(as in run.py); with 2 daemons, daemon i is pinned to core i and the load generator may run
on both cores (there is no free core left for it). Only 127.0.0.0/8 is used; every process
started here is stopped here, and every phase is bounded in time.

    python bench/cluster.py --quick
    python bench/cluster.py --out bench/results/issue12/cluster.json
    python bench/cluster.py --scenarios e --processes 1,2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import run  # bench/run.py: Daemon, loadgen, machine, code_version

from tests.cluster.redisproc import REDIS_SERVER, RedisServer

FULL = {
    "n_hold": 38_000,
    "n_hold_single": 19_000,
    "hold": 60.0,
    "n_cpu": 10_000,
    "cpu_window": 20.0,
    "n_storm": 10_000,
    "n_storm_steady": 2_000,
    "storm_window": 20.0,
    "storm_after": 4.0,
    "storm_delay": 3.0,
    "settle": 3.0,
    "shard": 19_000,
}
QUICK = {
    "n_hold": 1_200,
    "n_hold_single": 600,
    "hold": 5.0,
    "n_cpu": 600,
    "cpu_window": 4.0,
    "n_storm": 400,
    "n_storm_steady": 100,
    "storm_window": 6.0,
    "storm_after": 1.0,
    "storm_delay": 1.2,
    "settle": 1.0,
    "shard": 700,
}


class Redis:
    """A private redis-server on a free loopback port, without persistence.

    The command line is the cluster tests' (``tests/cluster/redisproc.py``): the same flags
    (``--save "" --appendonly no``, ``noeviction``, its own directory), run synchronously here.
    """

    def __init__(self, workdir: Path) -> None:
        if REDIS_SERVER is None:
            raise SystemExit("cluster.py: redis-server not found (scripts/test-deps.sh)")
        spec = RedisServer(Path(tempfile.mkdtemp(prefix="redis-", dir=workdir)))
        self.port = spec.port
        self.url = spec.url
        self.proc = subprocess.Popen(spec.args(), stdout=subprocess.DEVNULL, start_new_session=True)
        try:
            run.wait_for(lambda: run._port_open(self.port), 10, "redis-server to listen")
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        run.stop_process(self.proc, 10)


class Cluster(run.Server):
    """N daemons on one port with ``reuse_port``, all on one private Redis."""

    def __init__(self, opts: argparse.Namespace, workdir: Path, processes: int) -> None:
        self.name = f"cluster{processes}"
        self.redis = Redis(workdir)
        self.daemons: list[run.Daemon] = []
        port = run.free_port()
        try:
            for i in range(processes):
                extra = (
                    "[cluster]\n"
                    f'redis_url = "{self.redis.url}"\n'
                    f'node_name = "bench{i}"\n'
                    f'feed_key = "bench{port}"\n'
                )
                self.daemons.append(
                    run.Daemon(
                        opts,
                        workdir,
                        1.0,
                        port=port,
                        extra=extra,
                        reuse_port=True,
                        core=str(opts.server_core if processes == 1 else i % 2),
                        ready=False,
                    )
                )
            self.url = self.daemons[0].url
            self.pids = [d.pid for d in self.daemons]
            self.pid = self.pids[0]
            self.wait_ready({f"bench{i}" for i in range(processes)})
        except Exception:
            self.stop()
            raise

    def wait_ready(self, names: set[str]) -> None:
        """Until every node has said ready on ``/api/cluster`` (connections land at random)."""
        ready: set[str] = set()

        def poll() -> bool:
            for d in self.daemons:
                if d.proc.poll() is not None:
                    raise RuntimeError("a daemon exited:\n" + d.tail_log())
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(self.daemons[0].base + "/api/cluster", timeout=2) as r:
                    view = json.loads(r.read())
                if view.get("ready") and view.get("position"):
                    ready.add(str(view.get("node")))
            return ready >= names

        run.wait_for(poll, 40, f"nodes {sorted(names)} ready")

    def stop(self) -> None:
        for d in self.daemons:
            d.stop()
        self.redis.stop()


def sharded_loadgen(
    opts: argparse.Namespace, srv: Cluster, workdir: Path, tag: str, n: int, window: float
) -> dict[str, Any]:
    """``n`` subscribers over as many load generators as their fd limit needs, at once."""
    shards = -(-n // opts.params["shard"])
    sizes = [n // shards + (1 if i < n % shards else 0) for i in range(shards)]
    if shards == 1:
        return run.loadgen(opts, srv, workdir, tag, n, window, 1.0, opts.params["settle"])

    def shard(i: int) -> dict[str, Any]:
        if opts.stagger and i > 0:
            # Staggered: connect only once the previous shard holds all of its subscribers
            # (its measured window has begun), so connects do not compete with each other.
            mark = workdir / f"{srv.name}-{tag}{i - 1}.mark"
            run.wait_for(mark.exists, 120 + sizes[i - 1] / 200, f"shard {i - 1}'s window")
        return run.loadgen(opts, srv, workdir, f"{tag}{i}", sizes[i], window + lead(i), 1.0, settle)

    def lead(i: int) -> float:
        # Earlier shards keep measuring while later ones connect: every window then
        # covers the last shard's whole window, when all n subscribers are held.
        return opts.stagger * (shards - 1 - i)

    settle = opts.params["settle"]
    with concurrent.futures.ThreadPoolExecutor(shards) as pool:
        parts = list(pool.map(shard, range(shards)))
    return {"shards": parts, "summary": merge_hold(parts), "stagger": opts.stagger}


def merge_hold(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The hold figures summed over load-generator shards."""

    def total(*path: str) -> Any:
        vals = [run.g(p, *path) for p in parts]
        return sum(vals) if all(isinstance(v, int | float) for v in vals) else None

    return {
        "connected": total("connect", "connected"),
        "connect_failed": total("connect", "failed"),
        "deliveries": total("window", "deliveries"),
        "disconnects_total": total("disconnects_total"),
        "missed_events": total("clients", "missed_events"),
        "clients": [p.get("clients") for p in parts],
        "server_cpu_us_per_delivery": [
            run.g(p, "window", "server_cpu_us_per_delivery") for p in parts
        ],
    }


def phases(opts: argparse.Namespace, workdir: Path, processes: int) -> dict[str, Any]:
    """Every selected scenario with ``processes`` daemons, each on a fresh cluster."""
    p = opts.params
    scen = opts.scen
    res: dict[str, Any] = {}
    one = processes == 1
    opts.client_core = opts.single_client_core if one else "0,1"
    if "b" in scen:
        with Cluster(opts, workdir, processes) as srv:
            res["cpu"] = run.loadgen(
                opts, srv, workdir, "cpu", p["n_cpu"], p["cpu_window"], 1.0, p["settle"]
            )
    if "a" in scen:
        n = min(p["n_hold"], p["n_hold_single"]) if one else p["n_hold"]
        with Cluster(opts, workdir, processes) as srv:
            res["hold"] = sharded_loadgen(opts, srv, workdir, "hold", n, p["hold"])
    if "e" in scen:
        with Cluster(opts, workdir, processes) as srv:
            res["storm"] = storm(opts, srv, workdir)
    return res


def storm(opts: argparse.Namespace, srv: run.Server, workdir: Path) -> dict[str, Any]:
    """Scenario e against ``srv``: the storm clients drop and reconnect with Last-Event-ID."""
    p = opts.params
    n = p["n_storm"] + p["n_storm_steady"]
    return run.loadgen(
        opts, srv, workdir, "storm", n, p["storm_window"], 1.0, p["settle"], storm=p["n_storm"]
    )


def nchan_storm(opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The same storm against nginx+nchan (one worker, on the first daemon's core)."""
    p = opts.params
    bound = p["storm_window"] + (p["n_storm"] + p["n_storm_steady"]) / 200 + 120
    opts.client_core = opts.single_client_core
    with run.Nchan(opts, workdir, 1.0, bound=bound) as srv:
        return {"storm": storm(opts, srv, workdir)}


def summary(results: dict[str, Any]) -> list[list[Any]]:
    """Rows of the comparison table: metric, then one value per process count."""
    counts = [k for k in results if k.startswith("processes_") or k == "nchan"]

    def col(*path: str) -> list[Any]:
        return [run.g(results, k, *path) for k in counts]

    def hold(key: str) -> list[Any]:
        out = []
        for k in counts:
            h = run.g(results, k, "hold") or {}
            s = h.get("summary")
            if s is not None:
                out.append(s.get(key))
            else:
                flat = {
                    "connected": run.g(h, "connect", "connected"),
                    "disconnects_total": run.g(h, "disconnects_total"),
                    "missed_events": run.g(h, "clients", "missed_events"),
                }
                out.append(flat.get(key))
        return out

    return [
        ["", *counts],
        ["a connected", *hold("connected")],
        ["a missed events", *hold("missed_events")],
        ["a disconnects", *hold("disconnects_total")],
        ["b server CPU us/delivery", *col("cpu", "window", "server_cpu_us_per_delivery")],
        ["b server CPU util", *col("cpu", "window", "server_cpu_util")],
        ["b server CPU us/connect", *col("cpu", "server", "cpu_us_per_connect")],
        ["e reconnect headers s", *col("storm", "storm", "reconnect_all_headers_s")],
        ["e caught up s", *col("storm", "storm", "caught_up_s")],
        ["e server CPU util reconnect", *col("storm", "storm", "server_cpu_util_reconnect")],
        ["e missed served", *col("storm", "storm", "missed_ticks_served")],
        ["e missed expected", *col("storm", "storm", "missed_ticks_expected")],
        ["e gaps", *col("storm", "storm", "storm_missed_events")],
        ["e dups", *col("storm", "storm", "storm_duplicates")],
        ["e reconnect failed", *col("storm", "storm", "reconnect_failed")],
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    # run.py's options (interpreter, daemon, cores) plus this script's own.
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--scenarios", default="a,b,e", help="any of a,b,e")
    ap.add_argument("--processes", default="1,2", help="daemon counts to run, e.g. 1,2")
    ap.add_argument("--out", type=Path, default=run.BENCH / "results" / "issue12" / "latest.json")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument(
        "--stagger",
        type=float,
        default=0.0,
        help="a: start each load-generator shard once the previous one holds its clients;"
        " earlier shards measure this many seconds longer (0: all shards at once)",
    )
    ap.add_argument("--nchan", action="store_true", help="e: the storm against nginx+nchan too")
    for key, value in FULL.items():
        ap.add_argument("--" + key.replace("_", "-"), type=type(value), default=None)
    opts, rest = ap.parse_known_args(argv)
    base = run.parse_args(["--servers", "daemon", *rest])
    for key in ("python", "daemon", "server_core", "client_core", "loop", "nginx"):
        setattr(opts, key, getattr(base, key))
    opts.single_client_core = base.client_core
    params = QUICK if opts.quick else FULL
    opts.params = {
        k: getattr(opts, k) if getattr(opts, k) is not None else v for k, v in params.items()
    }
    opts.storm_after = opts.params["storm_after"]
    opts.storm_delay = opts.params["storm_delay"]
    opts.scen = {s.strip() for s in opts.scenarios.split(",") if s.strip()}
    if not opts.scen <= set("abe"):
        raise SystemExit("cluster.py: --scenarios takes a,b,e")
    opts.counts = [int(x) for x in opts.processes.split(",") if x]
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by every child
    workdir = Path(tempfile.mkdtemp(prefix="bittrade-cluster-", dir="/dev/shm"))
    started = time.time()
    results: dict[str, Any] = {
        "params": opts.params,
        "scenarios": sorted(opts.scen),
        "machine": run.machine(opts),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "daemon_code_start": run.code_version(),
    }
    try:
        for count in opts.counts:
            results[f"processes_{count}"] = phases(opts, workdir, count)
        if opts.nchan and "e" in opts.scen:
            results["nchan"] = nchan_storm(opts, workdir)
    except KeyboardInterrupt:
        run.log("interrupted; partial results follow")
    finally:
        results["daemon_code_end"] = run.code_version()
        results["seconds"] = round(time.time() - started, 1)
        results["summary"] = summary(results)
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(results, indent=1) + "\n")
        if opts.keep:
            run.log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    for row in results["summary"]:
        print(" | ".join(str(v) for v in row))
    print(f"\nresults: {opts.out}  ({results['seconds']:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
