"""systemd notify protocol (READY/STATUS/WATCHDOG/STOPPING) without a dependency.

The watchdog is pinged from the trading loop itself (`WatchdogPinger.maybe_ping` once per loop),
not from a free-running thread: a hung loop then stops the pings and systemd restarts the daemon,
which is the point of having a watchdog. Without NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping


def _address(env: Mapping[str, str]) -> str | None:
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return None
    return "\0" + addr[1:] if addr.startswith("@") else addr


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one datagram; False if there is no socket or the send failed (never raises)."""
    addr = _address(os.environ if env is None else env)
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(state.encode())
        return True
    except OSError:
        return False


def ready(status: str | None = None) -> bool:
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def stopping() -> bool:
    return notify("STOPPING=1")


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """Half of WATCHDOG_USEC (how often to ping), or None when no watchdog is armed for us."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "").strip()
    pid = env.get("WATCHDOG_PID", "").strip()
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000.0


class WatchdogPinger:
    """Call `maybe_ping()` once per loop iteration; it pings at most every interval."""

    def __init__(self, interval_s: float | None = None, monotonic: Callable[[], float] = time.monotonic,
                 send: Callable[[], bool] = watchdog) -> None:
        self.interval_s = watchdog_interval_s() if interval_s is None else interval_s
        self._monotonic = monotonic
        self._send = send
        self._last: float | None = None

    def maybe_ping(self) -> bool:
        if not self.interval_s:
            return False
        now = self._monotonic()
        if self._last is not None and now - self._last < self.interval_s:
            return False
        self._last = now
        return self._send()
