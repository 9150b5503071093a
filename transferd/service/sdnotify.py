"""systemd's notify protocol (sd_notify(3)) without a dependency; every call is a no-op outside systemd.

One AF_UNIX datagram per message to $NOTIFY_SOCKET (tech-notes §6.1). Errors are swallowed on purpose: a
daemon must never die because its supervisor's socket hiccupped, and a lost WATCHDOG=1 is retried next tick.
The send is non-blocking: this runs on the event loop, and a datagram socket whose reader is not reading (a
full queue) would otherwise block the whole daemon.
"""

from __future__ import annotations

import os
import socket
import time


def notify(*msgs: str) -> bool:
    """Send `KEY=VALUE` lines (e.g. "READY=1", "STATUS=…"); False when not under systemd or on error."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr or not msgs:
        return False
    if addr[0] == "@":  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as s:
            s.connect(addr)
            s.sendall("\n".join(msgs).encode())
    except OSError:  # includes BlockingIOError: the receiver's queue is full, drop this message
        return False
    return True


def reloading() -> tuple[str, str]:
    """RELOADING=1 with the monotonic time systemd (>= 253, Type=notify-reload) needs to match it to its reload;
    READY=1 (or an ERRNO= and READY=1 for a rejected config) ends the reload."""
    return "RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when systemd wants none from us."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):  # the watchdog is meant for another process (e.g. a wrapper)
        return None
    return int(usec) / 2e6


def status_line(text: str) -> str:
    """A STATUS= message; systemd shows one line, so newlines are flattened."""
    return "STATUS=" + " ".join(text.split())
