"""The monitor's AIQ_MONITOR_* environment, parsed and validated in one place.

Names and defaults are the earlier monitor's (spec/reference/runtime.md §7) so existing systemd env
files keep working. A bad value raises EnvError naming the variable; the bind policy refuses to send
a bearer token in clear text over a non-local interface unless TLS is terminated in front.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from live.env import EnvError, env_bool, env_float, env_int, env_path

DEFAULT_BIND = "127.0.0.1"
DEFAULT_PORT = 61010
# mode -> (env variable, default file: the daemon's own default for that mode, see live/env.py)
MODE_DBS = {"paper": ("AIQ_MONITOR_PAPER_DB", "trading_engine.db"),
            "live": ("AIQ_MONITOR_LIVE_DB", "trading_engine_live.db")}
MODE_ALIASES = {"paper1": "paper", "dry_live": "live"}


@dataclass(frozen=True)
class MonitorSettings:
    dbs: dict[str, Path]
    bind: str = DEFAULT_BIND
    port: int = DEFAULT_PORT
    token: str | None = field(default=None, repr=False)
    tls_terminated: bool = False
    rate_rps: float = 10.0
    rate_burst: float = 10.0
    rate_max_ips: int = 10_000
    max_active_requests: int = 256
    request_queue_size: int = 128
    max_body_bytes: int = 1 << 20
    heartbeat_stale_s: float = 120.0
    snapshot_cache_ms: int = 900
    candles_db: Path | None = None   # the trader's main-interval candle DB: per-symbol data lag


def load_monitor_settings(environ: Mapping[str, str] | None = None, *, bind: str | None = None,
                          port: int | None = None) -> MonitorSettings:
    """Environment (plus the --bind/--port overrides) -> settings; EnvError on a bad value."""
    env = os.environ if environ is None else environ
    bind = (bind or env.get("AIQ_MONITOR_BIND") or DEFAULT_BIND).strip()
    if port is None:
        port = env_int(env, "AIQ_MONITOR_PORT", DEFAULT_PORT, lo=0, hi=65535)
    elif not 0 <= port <= 65535:
        raise EnvError(f"--port {port} must be within 0..65535")
    token = (env.get("AIQ_MONITOR_TOKEN") or "").strip() or None
    return MonitorSettings(
        dbs={mode: env_path(env, var, default) for mode, (var, default) in MODE_DBS.items()},
        bind=bind, port=port, token=token,
        tls_terminated=env_bool(env, "AIQ_MONITOR_TLS_TERMINATED", False),
        rate_rps=env_float(env, "AIQ_MONITOR_API_RATE_RPS", 10.0, lo=0.01, hi=1e6),
        rate_burst=env_float(env, "AIQ_MONITOR_API_RATE_BURST", 10.0, lo=1, hi=1e6),
        rate_max_ips=env_int(env, "AIQ_MONITOR_API_RATE_MAX_IPS", 10_000, lo=1, hi=10_000_000),
        max_active_requests=env_int(env, "AIQ_MONITOR_MAX_ACTIVE_REQUESTS", 256, lo=1, hi=100_000),
        request_queue_size=env_int(env, "AIQ_MONITOR_REQUEST_QUEUE_SIZE", 128, lo=1, hi=65_535),
        max_body_bytes=env_int(env, "AIQ_MONITOR_MAX_POST_BODY_BYTES", 1 << 20, lo=0, hi=1 << 30),
        heartbeat_stale_s=env_float(env, "AIQ_MONITOR_HEARTBEAT_STALE_S", 120.0, lo=1, hi=86_400),
        snapshot_cache_ms=env_int(env, "AIQ_MONITOR_SNAPSHOT_CACHE_MS", 900, lo=0, hi=60_000),
        candles_db=env_path(env, "AIQ_MONITOR_CANDLES_DB", None),
    )


def is_local_bind(bind: str) -> bool:
    if bind.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_policy(settings: MonitorSettings) -> str | None:
    """Raise EnvError for a token on a non-local clear-text bind; return a warning for no token."""
    if is_local_bind(settings.bind):
        return None
    if settings.token and not settings.tls_terminated:
        raise EnvError(
            f"bind address {settings.bind!r} (--bind / AIQ_MONITOR_BIND) is not local and AIQ_MONITOR_TOKEN "
            "is set: the token would cross the network in clear text; put a TLS proxy in front and set "
            "AIQ_MONITOR_TLS_TERMINATED=1, or bind 127.0.0.1")
    if not settings.token:
        return (f"warning: bind address {settings.bind!r} is not local and AIQ_MONITOR_TOKEN is unset: "
                "anyone who can reach this port sees balances and positions")
    return None


def resolve_mode(settings: MonitorSettings, mode: str | None) -> str:
    """`?mode=` -> a configured mode name; ValueError with the choices otherwise."""
    name = (mode or "paper").strip().lower()
    name = MODE_ALIASES.get(name, name)
    if name not in settings.dbs:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(settings.dbs)}")
    return name
