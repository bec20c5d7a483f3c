"""Load generator: many SSE subscribers on raw asyncio protocols, and a small publisher.

``subscribe`` opens N HTTP/1.1 event streams (source addresses spread over 127.0.0.2-250,
bound before connect, so N is not capped by one address's ephemeral ports), parses the
stream just enough to count events, ids and latency, and reports as JSON:

- connect time for all N, connect failures, non-200 answers;
- delivery latency (receive time minus the event's ``ts``; same machine clock);
- per-client gaps (missed ids), duplicates, unexpected disconnects, tail misses;
- server CPU (``/proc/PID/stat`` utime+stime) and memory (``smaps_rollup``) when
  ``--server-pid`` is given, sampled at the phase boundaries this process controls;
- optionally a reconnect storm: ``--storm K`` of the N drop at once and come back with
  ``Last-Event-ID``; measured: time to all reconnected and caught up, missed ticks
  served, gaps/dups, and the latency the other clients saw meanwhile.

Ids are taken from the JSON ``"id"`` in ``data:`` (equal to the SSE ``id:`` for the
daemon; the publisher's sequence number for nchan, whose own SSE ids are opaque), so
gaps and duplicates are counted the same way for both servers. The raw ``id:`` value is
what a reconnect sends back as ``Last-Event-ID``.

``publish`` POSTs a ~150-byte price JSON to an nchan publisher location at a fixed rate
(one keep-alive connection, one request in flight; missed slots are skipped, as the
daemon's fetch loop does).

Everything is bounded: connect timeouts, a fixed number of clients, fixed durations.
Only 127.0.0.0/8 is ever contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import contextlib
import json
import os
import random
import resource
import signal
import sys
import time
from array import array
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

try:
    import uvloop
except ImportError:  # pragma: no cover - the bench wants it, but runs without
    uvloop = None

CLK_TCK = os.sysconf("SC_CLK_TCK")
SOURCE_ADDRS = [f"127.0.0.{i}" for i in range(2, 251)]


# --------------------------------------------------------------------------- helpers


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_cpu(pids: int | list[int]) -> float:
    """utime+stime of a process (all its threads), or summed over several, seconds."""
    total = 0
    for pid in [pids] if isinstance(pids, int) else pids:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def proc_mem(pids: int | list[int]) -> dict[str, int]:
    """Rss and Pss (bytes) from ``/proc/PID/smaps_rollup``, summed over several PIDs."""
    out: dict[str, int] = {}
    for pid in [pids] if isinstance(pids, int) else pids:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss", "Pss_Anon", "Anonymous"):
                    out[key.lower()] = out.get(key.lower(), 0) + int(rest.split()[0]) * 1024
    return out


def write_mark(path: str) -> None:
    """A tiny file whose existence tells another process that the window started."""
    Path(path).write_text(f"{time.time()}\n")


def percentiles(values: array[float]) -> dict[str, float | int | None]:
    """p50/p90/p99/max in milliseconds, and the count."""
    n = len(values)
    if not n:
        return {"n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    s = sorted(values)

    def at(q: float) -> float:
        return round(s[min(n - 1, int(q * n))] * 1000, 2)

    return {
        "n": n,
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(s[-1] * 1000, 2),
    }


_TS_CACHE: dict[bytes, float] = {}
TICKS: dict[int, list[float]] = {}
"""Per tick id: [ts, first receive, last receive, deliveries] over all clients."""


def tick_report(first_id: int, last_id: int, min_count: int) -> dict[str, Any]:
    """Per tick: publish->first delivery, and the fan-out spread (first->last delivery)."""
    rows = [
        TICKS[i]
        for i in range(first_id + 1, last_id + 1)
        if i in TICKS and TICKS[i][3] >= min_count
    ]
    first = array("f", (r[1] - r[0] for r in rows))
    spread = array("f", (r[2] - r[1] for r in rows))
    q = max(1, len(rows) // 4)
    return {
        "ticks": len(rows),
        "to_first_delivery": percentiles(first),
        "fanout_spread": percentiles(spread),
        # A backlog that grows over the window shows here: last quarter vs first.
        "to_first_delivery_first_quarter": percentiles(first[:q]),
        "to_first_delivery_last_quarter": percentiles(first[-q:]),
    }


def ts_seconds(raw: bytes) -> float:
    """``2026-11-23T20:31:00.123Z`` -> epoch seconds; every client sees the same few."""
    v = _TS_CACHE.get(raw)
    if v is None:
        if len(_TS_CACHE) > 4096:
            _TS_CACHE.clear()
        t = raw.decode()
        secs = calendar.timegm(
            (
                int(t[0:4]),
                int(t[5:7]),
                int(t[8:10]),
                int(t[11:13]),
                int(t[14:16]),
                int(t[17:19]),
                0,
                0,
                0,
            )
        )
        v = secs + int(t[20:23]) / 1000
        _TS_CACHE[raw] = v
    return v


def iso_ms(now: float) -> str:
    """Epoch seconds -> the wire's RFC 3339 with milliseconds."""
    ms = int(now * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


# --------------------------------------------------------------------------- subscribers


class Group:
    """Counters shared by a set of clients (``steady`` or ``storm``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events = 0
        self.comments = 0
        self.other_events = 0
        self.lat: array[float] = array("f")
        self.phase_lat: dict[str, array[float]] = {}
        self.disconnects = 0
        self.bad_status = 0

    def phase(self, name: str) -> None:
        """Start collecting latencies under a new phase name."""
        self.lat = self.phase_lat.setdefault(name, array("f"))


class Client:
    """What one subscriber has seen, across reconnects."""

    __slots__ = (
        "addr",
        "dups",
        "first",
        "gap_events",
        "gaps",
        "group",
        "last",
        "last_raw",
        "proto",
        "received",
    )

    def __init__(self, group: Group, addr: str) -> None:
        self.group = group
        self.addr = addr
        self.first = 0
        self.last = 0
        self.last_raw = b""
        self.gaps = 0
        self.gap_events = 0
        self.dups = 0
        self.received = 0
        self.proto: SSEProtocol | None = None


class SSEProtocol(asyncio.Protocol):
    """One HTTP/1.1 event stream; chunked or not, as the server chooses."""

    __slots__ = (
        "_request",
        "body_started",
        "buf",
        "ccrlf",
        "chunked",
        "client",
        "cr",
        "crem",
        "headers_at",
        "headers_fut",
        "pending",
        "sse",
        "target",
        "target_fut",
        "transport",
        "we_closed",
    )

    def __init__(self, client: Client, request: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.body_started = False
        self.chunked = False
        self.crem = 0
        self.ccrlf = 0
        self.cr = False
        self.pending = b""
        self.sse = b""
        self.we_closed = False
        self.headers_at = 0.0
        self.headers_fut: asyncio.Future[bool] = loop.create_future()
        self.target = 0
        self.target_fut: asyncio.Future[None] | None = None
        self._request = request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self._request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.headers_fut.done():
            self.headers_fut.set_result(False)
        if not self.we_closed:
            self.client.group.disconnects += 1

    def close(self) -> None:
        self.we_closed = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.we_closed:  # given up on (connect timeout) or dropped: late bytes are noise
            return
        if not self.body_started:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self._fail()
                return
            head = self.buf[:end].decode("latin-1").lower()
            data = self.buf[end + 4 :]
            self.buf = b""
            status = head.split(" ", 2)
            if len(status) < 2 or status[1] != "200":
                self._fail()
                return
            self.chunked = "transfer-encoding: chunked" in head
            self.body_started = True
            self.headers_at = now
            if not self.headers_fut.done():
                self.headers_fut.set_result(True)
            if not data:
                return
        if self.chunked:
            data = self._dechunk(data)
        if self.cr or b"\r" in data:  # CRLF or CR line ends: make them LF (rare; not ours)
            if self.cr:
                data = b"\r" + data
            self.cr = data.endswith(b"\r")
            if self.cr:
                data = data[:-1]
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        sse = self.sse + data if self.sse else data
        cut = sse.rfind(b"\n\n")
        if cut < 0:
            self.sse = sse
            return
        self.sse = sse[cut + 2 :]
        client = self.client
        group = client.group
        lat_append = group.lat.append
        ts_cache = _TS_CACHE
        ticks = TICKS
        prev = client.last
        events = others = 0
        for block in sse[:cut].split(b"\n\n"):
            if not block:
                continue
            event = block
            # Fast paths: the daemon's "id: N\nevent: price\ndata: {...}" and nchan's
            # "event: price\nid: X\ndata: {...}"; anything else takes the general parser.
            data_line = None
            if event.startswith(b"id: "):
                j = event.find(b"\nevent: price\ndata: ")
                if j > 0 and event.find(b"\n", j + 20) < 0:
                    client.last_raw = event[4:j]
                    data_line = event[j + 20 :]
            elif event.startswith(b"event: price\nid: "):
                j = event.find(b"\ndata: ", 17)
                if j > 0 and event.find(b"\n", j + 7) < 0:
                    client.last_raw = event[17:j]
                    data_line = event[j + 7 :]
            elif event[0] == 58:  # ":" a comment (heartbeat, nchan's ": hi")
                group.comments += 1
                nl = event.find(b"\n")
                if nl < 0:
                    continue
                # More fields after the comment (the daemon's ": hello\nretry: ...\nid: ..."
                # on a resume): per WHATWG the comment line is ignored, the rest is an event.
                event = event[nl + 1 :]
            if data_line is None:
                etype, data_line, raw_id = parse_event(event)
                if raw_id is not None:
                    client.last_raw = raw_id
                if etype != b"price":
                    others += 1
                    continue
            if not data_line.startswith(b'{"id":'):
                others += 1
                continue
            mid = int(data_line[6 : data_line.index(b",", 6)])
            i = data_line.find(b'"ts":"', 6)
            if i >= 0:
                raw_ts = data_line[i + 6 : i + 30]
                ts = ts_cache.get(raw_ts) or ts_seconds(raw_ts)
                lat_append(now - ts)
                tick = ticks.get(mid)
                if tick is None:
                    ticks[mid] = [ts, now, now, 1]
                else:
                    tick[2] = now
                    tick[3] += 1
            events += 1
            if mid == prev + 1 or prev == 0:
                if prev == 0:
                    client.first = mid
                prev = mid
            elif mid > prev:
                client.gaps += mid - prev - 1
                client.gap_events += 1
                prev = mid
            else:
                client.dups += 1
        client.last = prev
        client.received += events
        group.events += events
        group.other_events += others
        if self.target_fut is not None and prev >= self.target and not self.target_fut.done():
            self.target_fut.set_result(None)

    def _dechunk(self, data: bytes) -> bytes:
        """The payload of HTTP/1.1 chunks, across any split (locals: it is the hot path)."""
        if not (self.crem or self.ccrlf or self.pending):
            # Most reads are exactly one whole chunk (one event per write): no loop.
            eol = data.find(b"\r\n")
            if 0 < eol < 9 and data.endswith(b"\r\n"):
                try:
                    size = int(data[:eol], 16)
                except ValueError:
                    size = -1
                if size > 0 and eol + size + 4 == len(data):
                    return data[eol + 2 : -2]
        if self.pending:
            data = self.pending + data
            self.pending = b""
        crem, ccrlf = self.crem, self.ccrlf
        out = []
        pos = 0
        n = len(data)
        find = data.find
        while pos < n:
            if crem:
                end = pos + crem
                if end > n:
                    out.append(data[pos:])
                    crem = end - n
                    break
                out.append(data[pos:end])
                pos = end
                crem = 0
                ccrlf = 2
            if ccrlf:
                skip = min(ccrlf, n - pos)
                pos += skip
                ccrlf -= skip
                if ccrlf:
                    break
            if pos >= n:
                break
            eol = find(b"\r\n", pos)
            if eol < 0:
                self.pending = data[pos:]
                break
            try:
                size = int(data[pos:eol], 16)
            except ValueError:  # a chunk extension (";name=value")
                size = int(data[pos:eol].split(b";", 1)[0], 16)
            pos = eol + 2
            if size == 0:  # the last chunk: the server ended the stream
                break
            crem = size
        self.crem, self.ccrlf = crem, ccrlf
        return out[0] if len(out) == 1 else b"".join(out)

    def _fail(self) -> None:
        self.client.group.bad_status += 1
        self.we_closed = True
        if not self.headers_fut.done():
            self.headers_fut.set_result(False)
        if self.transport is not None:
            self.transport.abort()


def parse_event(event: bytes) -> tuple[bytes, bytes, bytes | None]:
    """The general case (WHATWG §9.2.6 fields, LF line ends by now): type, data, id."""
    etype = b"message"
    data: list[bytes] = []
    raw_id = None
    for line in event.split(b"\n"):
        if line[:1] == b":":
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            etype = value
        elif name == b"id" and b"\0" not in value:
            raw_id = value
    return etype, b"\n".join(data), raw_id


class Subscribers:
    """Connects, holds and (for the storm) reconnects many clients."""

    def __init__(self, url: str, timeout: float, headers: list[str] | None = None) -> None:
        parts = urlsplit(url)
        # Extra request lines (e.g. an Authorization header for the auth-on benchmark).
        self.headers = b"".join(h.encode() + b"\r\n" for h in headers or [])
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        if not self.host.startswith("127."):
            raise SystemExit("loadgen: only loopback (127.0.0.0/8) targets are allowed")
        self.timeout = timeout
        self.connect_errors: dict[str, int] = {}
        self.loop = asyncio.get_running_loop()

    def request(self, last_raw: bytes | None) -> bytes:
        extra = b"Last-Event-ID: " + last_raw + b"\r\n" if last_raw else b""
        return (
            b"GET "
            + self.path.encode()
            + b" HTTP/1.1\r\nHost: "
            + self.host.encode()
            + b"\r\nAccept: text/event-stream\r\nCache-Control: no-store\r\n"
            + self.headers
            + extra
            + b"\r\n"
        )

    async def open(self, client: Client, resume: bool, attempts: int = 3) -> bool:
        """Connect one client (headers received); a few retries on connect errors."""
        for attempt in range(attempts):
            proto = SSEProtocol(
                client, self.request(client.last_raw if resume else None), self.loop
            )
            try:
                await asyncio.wait_for(
                    self.loop.create_connection(
                        lambda p=proto: p, self.host, self.port, local_addr=(client.addr, 0)
                    ),
                    self.timeout,
                )
                ok = await asyncio.wait_for(proto.headers_fut, self.timeout)
            except (OSError, TimeoutError) as exc:
                key = type(exc).__name__ + (f":{exc.errno}" if isinstance(exc, OSError) else "")
                self.connect_errors[key] = self.connect_errors.get(key, 0) + 1
                proto.close()
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            if ok:
                client.proto = proto
                return True
            return False
        return False

    async def open_many(
        self, clients: list[Client], concurrency: int, resume: bool = False
    ) -> tuple[float, int]:
        """Open every client, at most ``concurrency`` in flight; (seconds, failures)."""
        sem = asyncio.Semaphore(concurrency)
        failures = 0

        async def one(c: Client) -> None:
            nonlocal failures
            async with sem:
                if not await self.open(c, resume):
                    failures += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(c) for c in clients))
        return time.perf_counter() - t0, failures


def client_summary(clients: list[Client], tail_target: int) -> dict[str, Any]:
    """Gaps, duplicates and tail misses over a set of clients."""
    gaps = sum(c.gaps for c in clients)
    return {
        "clients": len(clients),
        "clients_with_gap": sum(1 for c in clients if c.gaps),
        "missed_events": gaps,
        "max_missed_per_client": max((c.gaps for c in clients), default=0),
        "duplicates": sum(c.dups for c in clients),
        "clients_behind_at_end": sum(1 for c in clients if c.last < tail_target),
        "tail_missed_events": sum(max(0, tail_target - c.last) for c in clients),
        "never_received": sum(1 for c in clients if not c.received),
    }


async def wait_caught_up(clients: list[Client], target: int, limit: float) -> float | None:
    """Seconds until every client has seen ``target`` (None: not within ``limit``)."""
    t0 = time.perf_counter()
    futs = []
    for c in clients:
        p = c.proto
        if p is None or c.last >= target:
            continue
        p.target = target
        p.target_fut = asyncio.get_running_loop().create_future()
        futs.append(p.target_fut)
    if futs:
        _, pending = await asyncio.wait(futs, timeout=limit)
        if pending:
            return None
    return time.perf_counter() - t0


def max_seen(clients: list[Client]) -> int:
    return max((c.last for c in clients), default=0)


async def run_subscribe(args: argparse.Namespace) -> dict[str, Any]:
    nofile = raise_nofile()
    if args.n + 64 > nofile:
        raise SystemExit(f"loadgen: {args.n} clients need more than RLIMIT_NOFILE={nofile}")
    pid = args.server_pid
    subs = Subscribers(args.url, args.connect_timeout, args.header)
    steady, storm = Group("steady"), Group("storm")
    clients: list[Client] = []
    for i in range(args.n):
        group = storm if i < args.storm else steady
        clients.append(Client(group, SOURCE_ADDRS[i % len(SOURCE_ADDRS)]))
    random.Random(1).shuffle(clients)  # storm clients interleaved with steady ones
    result: dict[str, Any] = {
        "label": args.label,
        "url": args.url,
        "n": args.n,
        "storm_n": args.storm,
    }
    server: dict[str, Any] = {}
    if pid:
        server["mem_before"] = proc_mem(pid)
        server["cpu_before_connect"] = proc_cpu(pid)
    for g in (steady, storm):
        g.phase("connect")

    # -- connect ---------------------------------------------------------------
    my0 = os.times()
    secs, failures = await subs.open_many(clients, args.concurrency)
    my1 = os.times()
    connected = sum(1 for c in clients if c.proto is not None)
    result["connect"] = {
        "seconds": round(secs, 3),
        "connected": connected,
        "failed": failures,
        "rate_per_s": round(connected / secs, 1),
        "errors": dict(subs.connect_errors),
        "loadgen_cpu_util": _util(my0, my1, secs),
    }
    if pid:
        server["cpu_connect_s"] = round(proc_cpu(pid) - server["cpu_before_connect"], 3)
        server["cpu_us_per_connect"] = round(server["cpu_connect_s"] / max(connected, 1) * 1e6)
    await asyncio.sleep(args.settle)
    if pid:
        server["mem_after"] = proc_mem(pid)
        mb, ma = server["mem_before"], server["mem_after"]
        server["rss_per_sub_bytes"] = round((ma["rss"] - mb["rss"]) / max(connected, 1))
        server["pss_per_sub_bytes"] = round((ma["pss"] - mb["pss"]) / max(connected, 1))

    # -- measured window ---------------------------------------------------------
    for g in (steady, storm):
        g.phase("window")
        g.events = 0
    start_id = max_seen(clients)
    if args.mark:  # tells run.py the window started (it may attach a profiler now)
        write_mark(args.mark)
    disc0 = steady.disconnects + storm.disconnects
    t_start = time.perf_counter()
    my0 = os.times()
    cpu0 = proc_cpu(pid) if pid else 0.0
    storm_info: dict[str, Any] | None = None
    if args.storm:
        await asyncio.sleep(args.storm_after)
        storm_info = await do_storm(subs, clients, steady, storm, args)
        rest = args.window - (time.perf_counter() - t_start)
        if rest > 0:
            await asyncio.sleep(rest)
    else:
        await asyncio.sleep(args.window)
    cpu1 = proc_cpu(pid) if pid else 0.0
    my1 = os.times()
    wall = time.perf_counter() - t_start
    deliveries = steady.events + storm.events
    end_id = max_seen(clients)
    window: dict[str, Any] = {
        "seconds": round(wall, 3),
        "ticks_seen": end_id - start_id,
        "deliveries": deliveries,
        "deliveries_per_s": round(deliveries / wall, 1),
        "ticks_per_s": round((end_id - start_id) / wall, 2),
        "disconnects": steady.disconnects + storm.disconnects - disc0,
        # Live deliveries only: a storm's replayed ticks are reported under "storm".
        "latency": percentiles(
            _merge(
                *(
                    g.phase_lat.get(ph)
                    for g in (steady, storm)
                    for ph in ("window", "storm", "after")
                )
            )
        ),
        "loadgen_cpu_util": round((my1.user + my1.system - my0.user - my0.system) / wall, 3),
    }
    if pid:
        cpu = cpu1 - cpu0
        window["server_cpu_s"] = round(cpu, 3)
        window["server_cpu_util"] = round(cpu / wall, 3)
        window["server_cpu_us_per_delivery"] = (
            round(cpu / deliveries * 1e6, 2) if deliveries else None
        )
    window["per_tick"] = tick_report(start_id, end_id, max(1, int(0.9 * connected)))
    result["window"] = window
    if storm_info is not None:
        result["storm"] = storm_info

    # -- tail: every client should reach the newest id -----------------------------
    tail = max_seen(clients)
    await wait_caught_up([c for c in clients if c.proto is not None], tail, args.tail_wait)
    result["clients"] = client_summary(clients, tail)
    result["disconnects_total"] = steady.disconnects + storm.disconnects
    result["bad_status"] = steady.bad_status + storm.bad_status
    result["comments"] = steady.comments + storm.comments
    result["other_events"] = steady.other_events + storm.other_events
    if pid:
        server["mem_end"] = proc_mem(pid)
    result["server"] = server
    for c in clients:
        if c.proto is not None:
            c.proto.close()
    await asyncio.sleep(0.3)
    return result


def _util(t0: os.times_result, t1: os.times_result, wall: float) -> float:
    return round((t1.user + t1.system - t0.user - t0.system) / max(wall, 1e-9), 3)


def _merge(*arrays: array[float] | None) -> array[float]:
    out: array[float] = array("f")
    for a in arrays:
        if a is not None:
            out.extend(a)
    return out


async def do_storm(
    subs: Subscribers, clients: list[Client], steady: Group, storm: Group, args: argparse.Namespace
) -> dict[str, Any]:
    """Drop the storm group at once, wait, reconnect all with Last-Event-ID at once."""
    stormers = [c for c in clients if c.group is storm and c.proto is not None]
    others = [c for c in clients if c.group is steady and c.proto is not None]
    last_before = {id(c): c.last for c in stormers}
    disc0 = storm.disconnects
    steady.phase("storm")
    t_drop = time.perf_counter()
    for c in stormers:
        assert c.proto is not None
        c.proto.close()
        c.proto = None
    await asyncio.sleep(args.storm_delay)
    target = max_seen(others) if others else max(last_before.values(), default=0)
    received0 = {id(c): c.received for c in stormers}
    storm.phase("replay")  # replayed ticks are old by design: not delivery latency
    pid = args.server_pid
    subs.connect_errors = {}
    cpu0 = proc_cpu(pid) if pid else 0.0
    my0 = os.times()
    t_re = time.perf_counter()
    secs, failures = await subs.open_many(stormers, len(stormers) or 1, resume=True)
    my1 = os.times()
    cpu1 = proc_cpu(pid) if pid else 0.0
    reconnected = sum(1 for c in stormers if c.proto is not None)
    caught = await wait_caught_up(
        [c for c in stormers if c.proto is not None], target, args.tail_wait
    )
    caught_total = None if caught is None else time.perf_counter() - t_re
    # Keep measuring the others for one more interval after the storm settled.
    storm.phase("after")
    await asyncio.sleep(args.interval)
    steady.phase("after")
    expected = sum(max(0, target - last_before[id(c)]) for c in stormers)
    # Ticks up to ``target`` were published while the client was away: received after
    # the reconnect (ids are checked for gaps and duplicates separately).
    served = sum(max(0, min(c.last, target) - last_before[id(c)]) for c in stormers)
    after = sum(c.received - received0[id(c)] for c in stormers)
    return {
        "clients": len(stormers),
        "steady_clients": len(others),
        "drop_to_reconnect_s": round(t_re - t_drop, 3),
        "reconnect_all_headers_s": round(secs, 3),
        "reconnect_failed": failures,
        "reconnect_errors": dict(subs.connect_errors),
        "loadgen_cpu_util_reconnect": _util(my0, my1, secs),
        "server_cpu_util_reconnect": round((cpu1 - cpu0) / max(secs, 1e-9), 3),
        "reconnected": reconnected,
        "caught_up_s": None if caught_total is None else round(caught_total, 3),
        "missed_ticks_expected": expected,
        "missed_ticks_served": served,
        "events_after_reconnect": after,
        "storm_clients_with_gap": sum(1 for c in stormers if c.gaps),
        "storm_missed_events": sum(c.gaps for c in stormers),
        "storm_duplicates": sum(c.dups for c in stormers),
        "unexpected_disconnects": storm.disconnects - disc0,
        "others_latency_before": percentiles(steady.phase_lat.get("window", array("f"))),
        "others_latency_during": percentiles(steady.phase_lat.get("storm", array("f"))),
    }


# --------------------------------------------------------------------------- publisher


async def run_publish(args: argparse.Namespace) -> dict[str, Any]:
    """POST at a fixed rate, pipelined: a slow server shows as its own backlog, not ours.

    Requests go out on schedule on one keep-alive connection whatever the server's
    answer time (at most ``--max-inflight`` unanswered); a reader task counts answers.
    A closed connection is reopened. If the writer itself falls behind (its core is busy
    too), missed slots are skipped, as the daemon's fetch loop does.
    """
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if not host.startswith("127."):
        raise SystemExit("loadgen: only loopback (127.0.0.0/8) targets are allowed")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    rng = random.Random(0)
    price = 60000.0
    interval = 1.0 / args.rate
    stats = {
        "sent": 0,
        "answered": 0,
        "errors": 0,
        "skipped_slots": 0,
        "reconnects": 0,
        "max_inflight": 0,
    }
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/json\r\nAccept: text/plain\r\n"
    ).encode()

    async def read_answers(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                status_head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in status_head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                if status_head.split(b" ", 2)[1][:1] == b"2":
                    stats["answered"] += 1
                else:
                    stats["errors"] += 1

    reader, writer = await asyncio.open_connection(host, port)
    answers = asyncio.create_task(read_answers(reader))
    t0 = time.monotonic()
    next_at = t0
    seq = args.start_id
    while not stop.is_set() and time.monotonic() - t0 < args.duration:
        if answers.done() or writer.is_closing():  # the server closed: reopen
            stats["reconnects"] += 1
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
            answers = asyncio.create_task(read_answers(reader))
        inflight = stats["sent"] - stats["answered"] - stats["errors"]
        stats["max_inflight"] = max(stats["max_inflight"], inflight)
        if inflight < args.max_inflight:
            price *= 1.0 + rng.gauss(0.0, 0.0005)
            body = json.dumps(
                {
                    "id": seq,
                    "pair": "BTC-USD",
                    "price": f"{price:.2f}",
                    "ts": iso_ms(time.time()),
                    "sources": ["simulated"],
                },
                separators=(",", ":"),
            ).encode()
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            stats["sent"] += 1
            seq += 1
        else:
            stats["skipped_slots"] += 1
        next_at += interval
        now = time.monotonic()
        if now > next_at + interval:
            missed = int((now - next_at) / interval)
            stats["skipped_slots"] += missed
            next_at += missed * interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(answers), 2.0)
    answers.cancel()
    writer.close()
    return {**stats, "last_id": seq - 1, "seconds": round(time.monotonic() - t0, 3)}


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cmds = parser.add_subparsers(dest="cmd", required=True)
    s = cmds.add_parser("subscribe", help="N SSE subscribers; JSON report")
    s.add_argument("--url", required=True, help="event-stream URL on 127.0.0.0/8")
    s.add_argument("--n", type=int, default=1000, help="subscribers")
    s.add_argument("--concurrency", type=int, default=512, help="connects in flight")
    s.add_argument("--connect-timeout", type=float, default=10.0)
    s.add_argument(
        "--header", action="append", default=[], help="extra request header, 'Name: value'"
    )
    s.add_argument("--settle", type=float, default=3.0, help="s after connecting (memory)")
    s.add_argument("--window", type=float, default=20.0, help="measured seconds")
    s.add_argument("--interval", type=float, default=1.0, help="tick interval (s)")
    s.add_argument("--storm", type=int, default=0, help="clients dropped in the storm")
    s.add_argument("--storm-after", type=float, default=5.0, help="s into the window")
    s.add_argument(
        "--storm-delay",
        type=float,
        default=1.5,
        help="s between the drop and the reconnect (so ticks are missed)",
    )
    s.add_argument("--tail-wait", type=float, default=5.0)
    s.add_argument(
        "--server-pid",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[],
        help="sample /proc of this PID (comma-separated: summed over them)",
    )
    s.add_argument("--label", default="")
    s.add_argument("--mark", help="file written when the measured window starts")
    s.add_argument("--out", help="write the JSON report here (default: stdout)")
    p = cmds.add_parser("publish", help="POST price JSON to an nchan publisher")
    p.add_argument("--url", required=True)
    p.add_argument("--rate", type=float, default=1.0, help="messages per second")
    p.add_argument("--duration", type=float, default=600.0, help="upper bound, seconds")
    p.add_argument("--start-id", type=int, default=1)
    p.add_argument("--max-inflight", type=int, default=1000, help="unanswered POSTs")
    p.add_argument("--out")
    args = parser.parse_args(argv)
    runner = uvloop.run if uvloop is not None else asyncio.run
    coro = run_subscribe(args) if args.cmd == "subscribe" else run_publish(args)
    result = runner(coro)
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
