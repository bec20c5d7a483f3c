"""The systemd protocols we speak, in plain Python: sd_notify, the watchdog, socket activation.

Every function is a no-op outside systemd (no ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` or
``$LISTEN_FDS``), so development runs and tests behave the same without it.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from bittrade_feed.ops.logs import redact_text

LISTEN_FDS_START = 3
"""The first file descriptor systemd passes (``SD_LISTEN_FDS_START``)."""


def notify(*assignments: str) -> bool:
    """Send ``KEY=value`` assignments in one datagram; ``False`` if not under systemd.

    Every value is redacted: ``STATUS=`` quotes config errors, which may quote a URL.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address.startswith(("/", "@")):
        return False
    if address[0] == "@":
        address = "\0" + address[1:]  # the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Never block the event loop: a full queue drops the message, like a lost ping.
            sock.setblocking(False)
            sock.connect(address)
            sock.sendall("\n".join(map(redact_text, assignments)).encode())
    except OSError:
        return False
    return True


def notify_reloading(*assignments: str) -> bool:
    """``RELOADING=1`` with the ``MONOTONIC_USEC`` systemd needs to match the later READY."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *assignments)


def watchdog_interval() -> float | None:
    """``WatchdogSec=`` in seconds if systemd watches this process; ping at half of it."""
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    usec = os.environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    return int(usec) / 1_000_000


def listen_sockets() -> list[tuple[str, socket.socket]]:
    """Sockets passed by socket activation, with their ``FileDescriptorName=``; consumed once."""
    fds = os.environ.get("LISTEN_FDS", "")
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or not fds.isdigit():
        return []
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)  # a child we might spawn must not claim them too
    found: list[tuple[str, socket.socket]] = []
    for i in range(int(fds)):
        sock = socket.socket(fileno=LISTEN_FDS_START + i)  # family and type auto-detected
        sock.set_inheritable(False)
        found.append((names[i] if i < len(names) else "", sock))
    return found


TCP_LISTEN = 10
"""``tcpi_state`` of a listening socket."""
_TCP_INFO_SACKED = struct.Struct("=28xI")
"""``tcpi_sacked`` of ``struct tcp_info``: a listening socket's backlog (Linux)."""


def listen_backlog(sock: socket.socket) -> int | None:
    """The backlog a listening TCP socket was given, where the kernel says (Linux)."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, _TCP_INFO_SACKED.size)
    except OSError:
        return None
    # For a socket in LISTEN state the kernel reports sk_max_ack_backlog here.
    if len(raw) < _TCP_INFO_SACKED.size or raw[0] != TCP_LISTEN:
        return None
    (backlog,) = _TCP_INFO_SACKED.unpack(raw)
    return int(backlog)
