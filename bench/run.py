"""Broadcast benchmark: the daemon against nginx+nchan, same machine, same run.

Each phase starts a fresh server pinned to one core (``taskset``), drives it with
``bench/loadgen.py`` pinned to the other core, stops everything, and keeps the JSON.
Scenarios (issue 3, "Benchmark"):

  a  hold:   19,000 SSE subscribers for 60 s at 1 tick/s (no miss, no disconnect)
  b  cpu:    server CPU per delivery at 10,000 subscribers, 1 tick/s
  c  memory: server RSS/PSS growth per idle subscriber (measured in the b phase,
             before any tick is counted; the a phase gives a second figure at 19,000)
  d  tput:   1,000 subscribers at 100 ticks/s, deliveries per second
  e  storm:  10,000 of the subscribers drop at once and reconnect with Last-Event-ID

The daemon runs the ``simulated`` source; nchan gets the same ~150-byte JSON from a
publisher in the harness at the same rate. Only 127.0.0.0/8 is used; every phase is
bounded in time and every process started here is stopped here.

    python bench/run.py --quick            # about a minute, small N
    python bench/run.py                    # full scale (about 8-9 minutes)
    python bench/run.py --scenarios b,d --servers daemon --profile
    python bench/run.py --tput-coalesce-ms 0     # skip the coalesced throughput phase
    python bench/run.py --servers daemon --no-uvloop --out bench/results/asyncio.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOADGEN = BENCH / "loadgen.py"
NGINX_TEMPLATE = BENCH / "nginx-nchan.conf"
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
SERVERS = ("daemon", "nchan")

FULL = {
    "n_hold": 19_000,
    "hold": 60.0,
    "n_cpu": 10_000,
    "cpu_window": 20.0,
    "n_tput": 1_000,
    "tput_rate": 100.0,
    "tput_window": 20.0,
    "tput_coalesce_ms": 20,
    "n_storm": 10_000,
    "n_storm_steady": 2_000,
    "storm_window": 20.0,
    "storm_after": 4.0,
    "storm_delay": 3.0,
    "settle": 3.0,
    "profile_secs": 15.0,
}
QUICK = {
    "n_hold": 1_000,
    "hold": 5.0,
    "n_cpu": 600,
    "cpu_window": 4.0,
    "n_tput": 100,
    "tput_rate": 100.0,
    "tput_window": 3.0,
    "tput_coalesce_ms": 20,
    "n_storm": 400,
    "n_storm_steady": 100,
    "storm_window": 5.0,
    "storm_after": 1.0,
    "storm_delay": 1.2,
    "settle": 1.0,
    "profile_secs": 4.0,
}


# --------------------------------------------------------------------------- processes


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(
    proc: subprocess.Popen[bytes], timeout: float = 15.0, sig: int = signal.SIGTERM
) -> None:
    """Signal one process we started, then kill it if it does not go."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def wait_for(check: Any, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


class Server:
    """A server under test: started fresh for each phase."""

    name: str
    url: str
    pid: int  # the process whose CPU and memory are measured
    pids: list[int]  # every such process (summed); [pid] but for bench/cluster.py
    headers: tuple[str, ...] = ()  # request headers every subscriber sends (bench/auth.py)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        raise NotImplementedError


BENCH_LIMITS = "max_per_address = 200\nconnect_burst = 200\nconnect_per_second = 100\n"
"""Limits on, as in production, but sized for the load generator: it spreads up to 30,000
streams over 249 source addresses and opens them all at once."""


class Daemon(Server):
    """``bittrade-feed serve`` with the simulated source at a fixed tick rate."""

    name = "daemon"

    def __init__(
        self,
        opts: argparse.Namespace,
        workdir: Path,
        interval: float,
        coalesce_ms: int = 0,
        *,
        port: int = 0,
        extra: str = "",
        core: str = "",
        ready: bool = True,
        reuse_port: bool = False,
        limits: str = BENCH_LIMITS,
        database: Path | None = None,
    ) -> None:
        # port/extra/core/ready let bench/cluster.py start several daemons on one port;
        # limits ([stream] keys) lets bench/auth.py compare limits off and on; database
        # (a prepared SQLite file, copied) lets bench/alerts.py start with rules loaded.
        self.dir = Path(tempfile.mkdtemp(prefix="daemon-", dir=workdir))
        if database is not None:
            shutil.copyfile(database, self.dir / "feed.sqlite3")
        port = port or free_port()
        config = self.dir / "bench.toml"
        config.write_text(
            "[feed]\n"
            'pairs = ["BTC-USD"]\n'
            f"interval = {interval}\n"
            f"request_timeout = {interval}\n"
            "[feed.sources]\n"
            'BTC-USD = ["simulated"]\n'
            "[aggregation]\nquorum = 1\n"
            "[stream]\nmax_subscribers = 30000\nheartbeat = 15\n"
            + limits
            + (f"coalesce_ms = {coalesce_ms}\n" if coalesce_ms else "")
            + f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
            + ("reuse_port = true\n" if reuse_port else "")
            + f'[database]\npath = "{self.dir / "feed.sqlite3"}"\n'
            '[log]\nlevel = "warning"\n' + extra
        )
        self.url = f"http://127.0.0.1:{port}/api/price-stream"
        self.logfile = (self.dir / "daemon.log").open("wb")
        self.proc = subprocess.Popen(
            [
                "taskset",
                "-c",
                core or str(opts.server_core),
                str(opts.daemon),
                "serve",
                "--config",
                str(config),
            ],
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # cli._run honours it: "asyncio" under --no-uvloop, else uvloop when installed.
            env={**os.environ, "BITTRADE_FEED_LOOP": opts.loop},
        )
        self.pid = self.proc.pid  # taskset execs the daemon: same PID
        self.pids = [self.pid]
        self.base = base = f"http://127.0.0.1:{port}"
        try:
            wait_for(
                lambda: (
                    self.proc.poll() is not None
                    or not ready
                    or http_status(base + "/readyz") == 200
                ),
                20,
                "the daemon to be ready",
            )
            if self.proc.poll() is not None:
                raise RuntimeError("the daemon exited:\n" + self.tail_log())
        except Exception:
            self.stop()
            raise

    def tail_log(self) -> str:
        self.logfile.flush()
        return (self.dir / "daemon.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        stop_process(self.proc)
        self.logfile.close()


class Nchan(Server):
    """nginx (1 worker) with nchan, and the harness publisher feeding it."""

    name = "nchan"

    def __init__(self, opts: argparse.Namespace, workdir: Path, rate: float, bound: float) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nchan-", dir=workdir))
        self.dir.chmod(0o755)
        port = free_port()
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        conf = NGINX_TEMPLATE.read_text()
        for key, value in {
            "module": NCHAN_MODULE,
            "nofile": str(nofile),
            "dir": str(self.dir),
            "connections": str(2 * nofile),
            "port": str(port),
            "buffer": "2000",
        }.items():
            conf = conf.replace("{" + key + "}", value)
        (self.dir / "nginx.conf").write_text(conf)
        self.url = f"http://127.0.0.1:{port}/sub"
        self.publisher: subprocess.Popen[bytes] | None = None
        self.proc = subprocess.Popen(
            [
                "taskset",
                "-c",
                str(opts.server_core),
                opts.nginx,
                "-p",
                str(self.dir),
                "-c",
                str(self.dir / "nginx.conf"),
                "-e",
                str(self.dir / "error.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "stderr.log").open("wb"),
            start_new_session=True,
        )
        try:
            wait_for(
                lambda: self.proc.poll() is None and children(self.proc.pid), 10, "the nginx worker"
            )
            self.pid = children(self.proc.pid)[0]
            self.pids = [self.pid]
            wait_for(lambda: _port_open(port), 10, "nginx to listen")
            self.pub_out = self.dir / "publisher.json"
            self.publisher = subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    str(opts.client_core),
                    opts.python,
                    str(LOADGEN),
                    "publish",
                    "--url",
                    f"http://127.0.0.1:{port}/pub",
                    "--rate",
                    str(rate),
                    "--duration",
                    str(bound),
                    "--out",
                    str(self.pub_out),
                ],
                start_new_session=True,
            )
            # Subscribers get the newest message on connect, like the daemon's snapshot.
            time.sleep(max(1.2 / rate, 0.3))
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        if self.publisher is not None:
            stop_process(self.publisher, 10, signal.SIGTERM)
            self.publisher = None
        worker = children(self.proc.pid)
        stop_process(self.proc, 15, signal.SIGTERM)
        for pid in worker:  # the master waits for its worker; belt and braces
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def published(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(self.pub_out.read_text())
        return {}


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------- phases


def loadgen(
    opts: argparse.Namespace,
    server: Server,
    workdir: Path,
    tag: str,
    n: int,
    window: float,
    interval: float,
    settle: float,
    storm: int = 0,
    profile: float = 0.0,
) -> dict[str, Any]:
    """Run one load-generator phase against ``server``; its JSON report."""
    out = workdir / f"{server.name}-{tag}.json"
    mark = workdir / f"{server.name}-{tag}.mark"
    cmd = [
        "taskset",
        "-c",
        str(opts.client_core),
        opts.python,
        str(LOADGEN),
        "subscribe",
        "--url",
        server.url,
        "--n",
        str(n),
        "--window",
        str(window),
        "--interval",
        str(interval),
        "--settle",
        str(settle),
        "--server-pid",
        ",".join(map(str, server.pids)),
        "--label",
        f"{server.name}-{tag}",
        "--out",
        str(out),
        "--mark",
        str(mark),
    ]
    for header in server.headers:
        cmd += ["--header", header]
    if storm:
        cmd += [
            "--storm",
            str(storm),
            "--storm-after",
            str(opts.storm_after),
            "--storm-delay",
            str(opts.storm_delay),
        ]
    bound = 120 + window + n / 200  # connects are >1,000/s; this is only a safety net
    log(
        f"{server.name} {tag}: {n} subscribers, window {window:g} s"
        + (f", storm {storm}" if storm else "")
    )
    net0 = tcp_counters()
    proc = subprocess.Popen(cmd, start_new_session=True)
    spy: subprocess.Popen[bytes] | None = None
    try:
        if profile:
            wait_for(lambda: mark.exists() or proc.poll() is not None, bound, "the window")
            spy = start_profiler(opts, server, workdir, tag, profile)
        proc.wait(bound)
    except (subprocess.TimeoutExpired, RuntimeError):
        log(f"{server.name} {tag}: load generator over its time bound; stopping it")
        stop_process(proc, 5)
    finally:
        if spy is not None:
            try:
                spy.wait(profile + 30)
            except subprocess.TimeoutExpired:
                stop_process(spy, 5, signal.SIGINT)
    if proc.returncode != 0 or not out.exists():
        return {"error": f"loadgen exited {proc.returncode}"}
    result: dict[str, Any] = json.loads(out.read_text())
    net1 = tcp_counters()
    result["kernel_tcp"] = {k: net1[k] - net0.get(k, 0) for k in net1 if net1[k] != net0.get(k, 0)}
    if profile:
        result["profile"] = summarize_profile(workdir / f"{server.name}-{tag}.pyspy.txt")
        result["profile"]["files"] = [
            str(opts.out.parent / p.name)
            for p in sorted(workdir.glob(f"{server.name}-{tag}.pyspy.*"))
        ]
    return result


TCP_COUNTERS = (
    "ListenOverflows",
    "ListenDrops",
    "SyncookiesSent",
    "SyncookiesRecv",
    "TCPReqQFullDrop",
    "TCPReqQFullDoCookies",
    "TCPAbortOnData",
    "TCPAbortOnClose",
    "TCPTimeouts",
    "TCPSynRetrans",
    "TCPBacklogDrop",
    "ActiveOpens",
    "PassiveOpens",
    "AttemptFails",
    "RetransSegs",
)


def tcp_counters() -> dict[str, int]:
    """Selected kernel TCP counters (this network namespace): listen-queue drops etc."""
    out: dict[str, int] = {}
    for name in ("/proc/net/netstat", "/proc/net/snmp"):
        with contextlib.suppress(OSError):
            lines = Path(name).read_text().splitlines()
            for keys, values in zip(lines[::2], lines[1::2], strict=False):
                for k, v in zip(keys.split()[1:], values.split()[1:], strict=False):
                    if k in TCP_COUNTERS and v.lstrip("-").isdigit():
                        out[k] = int(v)
    return out


def start_profiler(
    opts: argparse.Namespace, server: Server, workdir: Path, tag: str, secs: float
) -> subprocess.Popen[bytes]:
    """py-spy on the server for ``secs`` (collapsed stacks, pinned to the client core)."""
    out = workdir / f"{server.name}-{tag}.pyspy.txt"
    cmd = [
        "taskset",
        "-c",
        str(opts.client_core),
        opts.py_spy,
        "record",
        "--pid",
        str(server.pid),
        "--duration",
        str(int(secs)),
        "--rate",
        "200",
        "--format",
        "raw",
        "--threads",
        "--output",
        str(out),
    ]
    if not opts.no_native:
        cmd.append("--native")  # C frames: uvloop's write(2), the cyclic GC, the parser
    log(f"py-spy on {server.name} for {secs:g} s")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


PROFILE_CATEGORIES = (
    # (label, every substring must be in the stack, or a tuple: any of them)
    ("Hub._broadcast, all", ("Hub._broadcast",)),
    ("  its write(2) calls (kernel send)", ("Hub._broadcast", ("try_write", "writev"))),
    (
        "accepting/serving new streams",
        (
            (
                "RequestHandler.start",
                "connection_made",
                "RequestHandler._handle_request",
                "uv__server_io",
            ),
        ),
    ),
    ("  price_stream + Hub.subscribe", ("price_stream",)),
    (
        "closing streams (connection_lost, task teardown)",
        (("connection_lost", "uv__stream_close", "TaskObj_dealloc", "detach"),),
    ),
    ("cyclic GC (gc_collect_main)", ("gc_collect_main",)),
    ("fetch loop + store (broadcast excluded)", (("Fetcher.", "Store."), "!Hub._broadcast")),
    ("heartbeat timer (Hub.tick_timer)", ("Hub.tick_timer",)),
)


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Main-thread self/inclusive shares per function, and shares per category."""
    if not path.exists():
        return {"error": "no profile written (py-spy missing or not permitted?)"}
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    total = other_threads = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        if stack.startswith("thread (") and "MainThread" not in stack.split(";", 1)[0]:
            other_threads += n  # aiosqlite's db-w / db-r threads: not the event loop
            continue
        total += n
        if "epoll" in stack.rsplit(";", 1)[-1]:
            idle += n
        frames = [_short(f) for f in stack.split(";") if not f.startswith("thread (")]
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
        for label, needles in PROFILE_CATEGORIES:
            if all(_matches(stack, nd) for nd in needles):
                cats[label] += n

    def share(c: Counter[str]) -> list[list[Any]]:
        return [[f, round(100 * k / max(total, 1), 1)] for f, k in c.most_common(top)]

    busy = max(total - idle, 1)
    return {
        "samples_main_thread": total,
        "samples_other_threads": other_threads,
        "samples_idle": idle,
        # Shares of the samples where the event loop was not waiting in epoll.
        "categories_pct_of_busy": [
            [label, round(100 * cats[label] / busy, 1)]
            for label, _ in PROFILE_CATEGORIES
            if label != "waiting in epoll"
        ],
        "self_pct": share(own),
        "inclusive_pct": share(incl),
    }


def _matches(stack: str, needle: str | tuple[str, ...]) -> bool:
    if isinstance(needle, tuple):
        return any(x in stack for x in needle)
    if needle.startswith("!"):
        return needle[1:] not in stack
    return needle in stack


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{name} ({file})" if file else name


def run_server_phases(
    opts: argparse.Namespace, kind: str, workdir: Path, scen: set[str]
) -> dict[str, Any]:
    """Every selected phase for one server kind."""
    p = opts.params
    res: dict[str, Any] = {}

    def start(interval: float, window: float, n: int, coalesce_ms: int = 0) -> Server:
        if kind == "daemon":
            return Daemon(opts, workdir, interval, coalesce_ms)
        return Nchan(opts, workdir, 1.0 / interval, bound=window + n / 200 + 120)

    if scen & {"b", "c"}:
        with start(1.0, p["cpu_window"], p["n_cpu"]) as srv:
            res["cpu"] = loadgen(
                opts, srv, workdir, "cpu", p["n_cpu"], p["cpu_window"], 1.0, p["settle"]
            )
    if "a" in scen:
        with start(1.0, p["hold"], p["n_hold"]) as srv:
            res["hold"] = loadgen(
                opts, srv, workdir, "hold", p["n_hold"], p["hold"], 1.0, p["settle"]
            )
    if "e" in scen:
        n = p["n_storm"] + p["n_storm_steady"]
        with start(1.0, p["storm_window"], n) as srv:
            res["storm"] = loadgen(
                opts,
                srv,
                workdir,
                "storm",
                n,
                p["storm_window"],
                1.0,
                p["settle"],
                storm=p["n_storm"],
            )
    if "d" in scen:
        interval = 1.0 / p["tput_rate"]
        with start(interval, p["tput_window"], p["n_tput"]) as srv:
            res["tput"] = loadgen(
                opts, srv, workdir, "tput", p["n_tput"], p["tput_window"], interval, p["settle"]
            )
            if isinstance(srv, Nchan):
                srv.stop()
                res["tput"]["publisher"] = srv.published()
        if kind == "daemon" and p["tput_coalesce_ms"]:
            # The same load with the daemon's optional write coalescing ([stream] coalesce_ms).
            with start(interval, p["tput_window"], p["n_tput"], p["tput_coalesce_ms"]) as srv:
                res["tput_coalesced"] = loadgen(
                    opts,
                    srv,
                    workdir,
                    "tput-coalesced",
                    p["n_tput"],
                    p["tput_window"],
                    interval,
                    p["settle"],
                )
    if opts.profile and kind == "daemon":
        # The same shapes again under py-spy (not the measured runs: sampling costs CPU).
        secs = p["profile_secs"]
        if scen & {"a", "b", "c"}:
            with start(1.0, secs, p["n_cpu"]) as srv:
                res["profile_cpu"] = loadgen(
                    opts, srv, workdir, "profile-cpu", p["n_cpu"], secs, 1.0, 1.0, profile=secs
                )
        if "d" in scen:
            interval = 1.0 / p["tput_rate"]
            with start(interval, secs, p["n_tput"]) as srv:
                res["profile_tput"] = loadgen(
                    opts,
                    srv,
                    workdir,
                    "profile-tput",
                    p["n_tput"],
                    secs,
                    interval,
                    1.0,
                    profile=secs,
                )
        if "e" in scen:
            n = p["n_storm"] + p["n_storm_steady"]
            with start(1.0, p["storm_window"], n) as srv:
                res["profile_storm"] = loadgen(
                    opts,
                    srv,
                    workdir,
                    "profile-storm",
                    n,
                    p["storm_window"],
                    1.0,
                    1.0,
                    storm=p["n_storm"],
                    profile=p["storm_window"],
                )
    return res


# --------------------------------------------------------------------------- report


def g(d: Any, *path: str) -> Any:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return round(a / b, 3)
    return None


def evaluate(results: dict[str, Any], p: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: the daemon's figure, nchan's, the ratio, met or not."""
    d, n = results.get("daemon", {}), results.get("nchan", {})
    rows: list[dict[str, Any]] = []

    def row(
        target: str,
        metric: str,
        dv: Any,
        nv: Any,
        goal: str,
        met: bool | None,
        rat: float | None = None,
    ) -> None:
        rows.append(
            {
                "target": target,
                "metric": metric,
                "daemon": dv,
                "nchan": nv,
                "ratio": rat,
                "goal": goal,
                "met": met,
            }
        )

    def side(r: Any, paths: tuple[Any, ...]) -> Any:
        """One path's value, or two paths' values shown as "a / b"."""
        if paths and isinstance(paths[0], tuple):
            return _pair(g(r, *paths[0]), g(r, *paths[1]))
        return g(r, *paths)

    def info(target: str, metric: str, *paths: Any, with_ratio: bool = False) -> None:
        """A row without a goal: the same path(s) read from the daemon's and nchan's results."""
        dv, nv = side(d, paths), side(n, paths)
        row(target, metric, dv, nv, "-", None, ratio(dv, nv) if with_ratio else None)

    if "hold" in d or "hold" in n:

        def hold_missed(r: Any) -> Any:
            c = g(r, "clients")
            return None if c is None else c["missed_events"] + c["tail_missed_events"]

        dm, nm = hold_missed(d.get("hold")), hold_missed(n.get("hold"))
        dd, nd = g(d, "hold", "disconnects_total"), g(n, "hold", "disconnects_total")
        dc, nc = g(d, "hold", "connect", "connected"), g(n, "hold", "connect", "connected")
        goal_n = p["n_hold"]
        row(
            "a",
            f"connected of {goal_n}",
            dc,
            nc,
            f"= {goal_n}",
            None if dc is None else dc == goal_n,
        )
        info("a", "connect time, all (s)", "hold", "connect", "seconds")
        row(
            "a", f"missed events over {p['hold']:g} s", dm, nm, "0", None if dm is None else dm == 0
        )
        row("a", "disconnects", dd, nd, "0", None if dd is None else dd == 0)
        row(
            "a",
            "duplicates",
            g(d, "hold", "clients", "duplicates"),
            g(n, "hold", "clients", "duplicates"),
            "0",
            None
            if g(d, "hold", "clients", "duplicates") is None
            else g(d, "hold", "clients", "duplicates") == 0,
        )
        for q in ("p50_ms", "p99_ms", "max_ms"):
            info("a", f"latency {q[:-3]} (ms)", "hold", "window", "latency", q)
        first = ("hold", "window", "per_tick", "to_first_delivery")
        info("a", "publish->first delivery p50/max (ms)", (*first, "p50_ms"), (*first, "max_ms"))
        spread = ("hold", "window", "per_tick", "fanout_spread")
        info(
            "a", "fan-out spread first->last p50/max (ms)", (*spread, "p50_ms"), (*spread, "max_ms")
        )
        info(
            "a",
            "server CPU us/delivery",
            "hold",
            "window",
            "server_cpu_us_per_delivery",
            with_ratio=True,
        )
    if "cpu" in d or "cpu" in n:
        dv = g(d, "cpu", "window", "server_cpu_us_per_delivery")
        nv = g(n, "cpu", "window", "server_cpu_us_per_delivery")
        r = ratio(dv, nv)
        row(
            "b",
            f"server CPU us/delivery @ {p['n_cpu']}",
            dv,
            nv,
            "ratio <= 1.0",
            None if r is None else r <= 1.0,
            r,
        )
        spread = ("cpu", "window", "per_tick", "fanout_spread")
        info(
            "b",
            "fan-out spread first->last, p50/max (ms)",
            (*spread, "p50_ms"),
            (*spread, "max_ms"),
        )
        info(
            "b",
            "server CPU us per new connection",
            "cpu",
            "server",
            "cpu_us_per_connect",
            with_ratio=True,
        )
        for q in ("p50_ms", "p99_ms"):
            info("b", f"latency {q[:-3]} (ms)", "cpu", "window", "latency", q)
        for key, label in (("pss_per_sub_bytes", "PSS"), ("rss_per_sub_bytes", "RSS")):
            dv = g(d, "cpu", "server", key)
            nv = g(n, "cpu", "server", key)
            row(
                "c",
                f"{label} growth per idle subscriber (KiB) @ {p['n_cpu']}",
                None if dv is None else round(dv / 1024, 2),
                None if nv is None else round(nv / 1024, 2),
                "<= 10 KiB",
                None if dv is None else dv <= 10 * 1024,
                ratio(dv, nv),
            )
    if "hold" in d or "hold" in n:
        dv = g(d, "hold", "server", "pss_per_sub_bytes")
        nv = g(n, "hold", "server", "pss_per_sub_bytes")
        row(
            "c",
            f"PSS growth per idle subscriber (KiB) @ {p['n_hold']}",
            None if dv is None else round(dv / 1024, 2),
            None if nv is None else round(nv / 1024, 2),
            "<= 10 KiB",
            None if dv is None else dv <= 10 * 1024,
            ratio(dv, nv),
        )
    if "tput" in d or "tput" in n:
        dv = g(d, "tput", "window", "deliveries_per_s")
        nv = g(n, "tput", "window", "deliveries_per_s")
        r = ratio(dv, nv)
        need = 0.9 * p["n_tput"] * p["tput_rate"]
        row(
            "d",
            f"deliveries/s, {p['n_tput']} subs @ {p['tput_rate']:g}/s",
            dv,
            nv,
            f">= {need:,.0f} and ratio >= 0.9",
            None if dv is None else dv >= need and (r is None or r >= 0.9),
            r,
        )
        info("d", "ticks/s delivered", "tput", "window", "ticks_per_s")
        first_q = ("tput", "window", "per_tick", "to_first_delivery_first_quarter", "p50_ms")
        last_q = ("tput", "window", "per_tick", "to_first_delivery_last_quarter", "p50_ms")
        row(
            "d",
            "publish->first delivery p50, 1st/4th quarter (ms)",
            _pair(g(d, *first_q), g(d, *last_q)),
            _pair(g(n, *first_q), g(n, *last_q)),
            "no growth",
            None,
        )
        info(
            "d",
            "server CPU util / load generator CPU util",
            ("tput", "window", "server_cpu_util"),
            ("tput", "window", "loadgen_cpu_util"),
        )
        for q in ("p50_ms", "p99_ms"):
            info("d", f"latency {q[:-3]} (ms)", "tput", "window", "latency", q)
        info(
            "d",
            "server CPU us/delivery",
            "tput",
            "window",
            "server_cpu_us_per_delivery",
            with_ratio=True,
        )
        if "tput_coalesced" in d:
            nd = g(n, "tput", "window", "deliveries_per_s")
            cv = g(d, "tput_coalesced", "window", "deliveries_per_s")
            cr = ratio(cv, nd)
            row(
                "d",
                f"  daemon with coalesce_ms={p['tput_coalesce_ms']}: deliveries/s",
                cv,
                nd,
                f">= {need:,.0f} and ratio >= 0.9",
                None if cv is None else cv >= need and (cr is None or cr >= 0.9),
                cr,
            )
            row(
                "d",
                "  with coalescing: latency p50/p99 (ms), CPU us/delivery",
                _pair(
                    _pair(
                        g(d, "tput_coalesced", "window", "latency", "p50_ms"),
                        g(d, "tput_coalesced", "window", "latency", "p99_ms"),
                    ),
                    g(d, "tput_coalesced", "window", "server_cpu_us_per_delivery"),
                ),
                None,
                "-",
                None,
            )
            row(
                "d",
                "  with coalescing: missed events / disconnects",
                _pair(
                    g(d, "tput_coalesced", "clients", "missed_events"),
                    g(d, "tput_coalesced", "disconnects_total"),
                ),
                None,
                "-",
                None,
            )
            row(
                "d",
                "  with coalescing: ticks/s, server / load generator CPU util",
                _pair(
                    g(d, "tput_coalesced", "window", "ticks_per_s"),
                    _pair(
                        g(d, "tput_coalesced", "window", "server_cpu_util"),
                        g(d, "tput_coalesced", "window", "loadgen_cpu_util"),
                    ),
                ),
                None,
                "-",
                None,
            )
        info(
            "d",
            "missed events / disconnects",
            ("tput", "clients", "missed_events"),
            ("tput", "disconnects_total"),
        )
    if "storm" in d or "storm" in n:
        ds, ns = g(d, "storm", "storm") or {}, g(n, "storm", "storm") or {}
        rec_d = ds.get("reconnect_all_headers_s")
        row(
            "e",
            f"{p['n_storm']} reconnected, all headers (s)",
            rec_d,
            ns.get("reconnect_all_headers_s"),
            "<= 1.0",
            None if rec_d is None else rec_d <= 1.0 and ds.get("reconnected") == p["n_storm"],
        )
        cu = ds.get("caught_up_s")
        row(
            "e",
            "all caught up incl. replay (s)",
            cu,
            ns.get("caught_up_s"),
            "<= 1.0",
            None if not ds else cu is not None and cu <= 1.0,
        )
        row(
            "e",
            "missed ticks served / expected",
            _pair(ds.get("missed_ticks_served"), ds.get("missed_ticks_expected")),
            _pair(ns.get("missed_ticks_served"), ns.get("missed_ticks_expected")),
            "served = expected",
            None
            if not ds
            else (ds.get("missed_ticks_served") or 0) >= (ds.get("missed_ticks_expected") or 0),
        )
        gd = None if not ds else ds["storm_missed_events"] + ds["storm_duplicates"]
        gn = None if not ns else ns["storm_missed_events"] + ns["storm_duplicates"]
        row("e", "gaps + duplicates (stormers)", gd, gn, "0", None if gd is None else gd == 0)
        row(
            "e",
            "server CPU util / listen-queue drops during reconnect",
            _pair(
                ds.get("server_cpu_util_reconnect"), g(d, "storm", "kernel_tcp", "ListenDrops") or 0
            ),
            _pair(
                ns.get("server_cpu_util_reconnect"), g(n, "storm", "kernel_tcp", "ListenDrops") or 0
            )
            if ns
            else None,
            "-",
            None,
        )
        mx = g(ds, "others_latency_during", "max_ms")
        row(
            "e",
            "others' latency during storm p99/max (ms)",
            _pair(g(ds, "others_latency_during", "p99_ms"), mx),
            _pair(
                g(ns, "others_latency_during", "p99_ms"), g(ns, "others_latency_during", "max_ms")
            ),
            "max <= 1000",
            None if mx is None else mx <= 1000,
        )
    return rows


def _pair(a: Any, b: Any) -> str | None:
    return None if a is None and b is None else f"{a} / {b}"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("", "metric", "daemon", "nchan", "ratio", "goal", "met")
    lines = [head]
    for r in rows:
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        lines.append(
            (
                r["target"],
                r["metric"],
                _fmt(r["daemon"]),
                _fmt(r["nchan"]),
                _fmt(r["ratio"]),
                r["goal"],
                met,
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for line in lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def code_version() -> dict[str, Any]:
    """The daemon's commit and a digest of its working tree (each phase starts it anew)."""
    import hashlib  # noqa: PLC0415

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(ROOT), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
        except OSError:
            return ""

    digest = hashlib.sha256()
    for path in sorted((ROOT / "bittrade_feed").rglob("*.py")):
        digest.update(path.read_bytes())
    return {
        "head": git("rev-parse", "--short", "HEAD"),
        "dirty": git("status", "--short", "--", "bittrade_feed").splitlines(),
        "tree_sha256": digest.hexdigest()[:16],
    }


def machine(opts: argparse.Namespace) -> dict[str, Any]:
    def out(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
            return (r.stdout + r.stderr).strip()
        except OSError as exc:
            return f"unavailable: {exc}"

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in out(["lscpu"]).splitlines()
            if line.startswith("Model name")
        ),
        "",
    )
    versions = out(
        [
            opts.python,
            "-c",
            "import sys, aiohttp, uvloop; print(sys.version.split()[0], "
            "aiohttp.__version__, uvloop.__version__)",
        ]
    ).split()
    return {
        "nproc": out(["nproc"]),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": versions[0] if versions else "",
        "aiohttp": versions[1] if len(versions) > 1 else "",
        "uvloop": versions[2] if len(versions) > 2 else "",
        "nginx": out([opts.nginx, "-v"]).replace("nginx version: ", ""),
        "nchan": out(["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"]),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "somaxconn": Path("/proc/sys/net/core/somaxconn").read_text().strip(),
    }


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    venv = ROOT / ".venv" / "bin"
    ap = argparse.ArgumentParser(
        description="Benchmark the SSE broadcast: bittrade-feed vs nginx+nchan.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="small N, about a minute")
    ap.add_argument("--scenarios", default="a,b,c,d,e", help="any of a,b,c,d,e")
    ap.add_argument("--servers", default="daemon,nchan", help="daemon, nchan or both")
    ap.add_argument(
        "--out", type=Path, default=BENCH / "results" / "latest.json", help="JSON results file"
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="extra daemon phases under py-spy (cpu and tput shapes)",
    )
    ap.add_argument(
        "--no-uvloop",
        dest="loop",
        action="store_const",
        const="asyncio",
        default="auto",
        help="run the daemon on asyncio's own loop (BITTRADE_FEED_LOOP=asyncio)",
    )
    ap.add_argument("--no-native", action="store_true", help="py-spy without --native")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--report", type=Path, help="only print the table of this results JSON")
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--client-core", type=int, default=1)
    ap.add_argument(
        "--python",
        default=str(venv / "python") if (venv / "python").exists() else sys.executable,
        help="interpreter for the load generator",
    )
    ap.add_argument("--daemon", default=str(venv / "bittrade-feed"))
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--py-spy", dest="py_spy", default=str(venv / "py-spy"))
    for key, value in FULL.items():
        ap.add_argument(
            "--" + key.replace("_", "-"),
            type=type(value),
            default=None,
            help=f"(full {value:g}, quick {QUICK[key]:g})",
        )
    opts = ap.parse_args(argv)
    base = QUICK if opts.quick else FULL
    opts.params = {
        k: getattr(opts, k) if getattr(opts, k) is not None else v for k, v in base.items()
    }
    opts.storm_after = opts.params["storm_after"]
    opts.storm_delay = opts.params["storm_delay"]
    return opts


def report(path: Path) -> int:
    """Print the table of an earlier run's JSON (targets re-evaluated)."""
    results = json.loads(path.read_text())
    print_table(evaluate(results, results["params"]))
    print_profiles(results)
    return 0


def print_profiles(results: dict[str, Any]) -> None:
    for kind in SERVERS:
        for phase in ("profile_cpu", "profile_tput", "profile_storm"):
            prof = g(results, kind, phase, "profile")
            if prof and "self_pct" in prof:
                print(
                    f"\n{kind} {phase}: py-spy, % of busy main-thread samples "
                    f"({prof['samples_main_thread'] - prof['samples_idle']} of "
                    f"{prof['samples_main_thread']}; the rest waited in epoll)"
                )
                for name, pct in prof["categories_pct_of_busy"]:
                    print(f"  {pct:5.1f}%  {name}")
                print("  top self:")
                for name, pct in prof["self_pct"][:10]:
                    print(f"  {pct:5.1f}%  {name}")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.report:
        return report(opts.report)
    scen = {s.strip() for s in opts.scenarios.split(",") if s.strip()}
    servers = [s.strip() for s in opts.servers.split(",") if s.strip()]
    if not scen <= set("abcde") or not set(servers) <= set(SERVERS):
        raise SystemExit("run.py: --scenarios takes a,b,c,d,e; --servers daemon,nchan")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the servers
    if os.cpu_count() and max(opts.server_core, opts.client_core) >= os.cpu_count():
        raise SystemExit("run.py: --server-core/--client-core beyond this machine's CPUs")
    if "nchan" in servers and not Path(NCHAN_MODULE).exists():
        raise SystemExit(
            "run.py: nchan module missing: apt-get install nginx "
            "libnginx-mod-nchan (or --servers daemon)"
        )
    workdir = Path(
        tempfile.mkdtemp(
            prefix="bittrade-bench-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None
        )
    )
    started = time.time()
    results: dict[str, Any] = {
        "params": opts.params,
        "scenarios": sorted(scen),
        "machine": machine(opts),
        "daemon_loop": "asyncio" if opts.loop == "asyncio" else "uvloop if installed",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "daemon_code_start": code_version(),
    }
    try:
        for kind in servers:
            results[kind] = run_server_phases(opts, kind, workdir, scen)
    except KeyboardInterrupt:
        log("interrupted; partial results follow")
    finally:
        results["daemon_code_end"] = code_version()
        if results["daemon_code_end"] != results["daemon_code_start"]:
            log("WARNING: the daemon's code changed during the run; phases differ")
        results["seconds"] = round(time.time() - started, 1)
        results["targets"] = evaluate(results, opts.params)
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(results, indent=1) + "\n")
        for prof in workdir.glob("*.pyspy.*"):  # profiles outlive the work directory
            shutil.copy(prof, opts.out.parent / prof.name)
        if opts.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(results["targets"])
    print_profiles(results)
    print(f"\nresults: {opts.out}  ({results['seconds']:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
