"""Snapshots -> Prometheus text exposition format (version 0.0.4), one `mode` label per DB.

A missing heartbeat is exported as heartbeat_age_s=+Inf (not left out), so that an alert rule such
as `heartbeat_age_s > 120` fires when the daemon never wrote one, instead of silently matching nothing.
"""

from __future__ import annotations

import math
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name, help, value(snapshot) -> float | None (None: the sample is left out)
GAUGES: tuple[tuple[str, str, Any], ...] = (
    ("db_up", "1 when the trading DB could be read", lambda s: 1.0 if s["db"]["status"] == "ok" else 0.0),
    ("engine_up", "1 when the last heartbeat is fresh", lambda s: 1.0 if s["engine_up"] else 0.0),
    ("heartbeat_age_s", "Seconds since the last heartbeat (+Inf when none)",
     lambda s: math.inf if s["heartbeat"]["age_s"] is None else s["heartbeat"]["age_s"]),
    ("open_pos", "Open positions rebuilt from trades",
     lambda s: float(len(s["open_positions"])) if s["db"]["status"] == "ok" else None),
    ("ws_connected", "WS connected flag from the heartbeat",
     lambda s: _flag(s["heartbeat"]["fields"].get("ws_connected"))),
    ("kill_mode", "Kill switch: 0 off, 1 close_only, 2 halt_all",
     lambda s: None if s["kill"]["level"] is None else float(s["kill"]["level"])),
    ("heartbeat_errors", "Engine loop errors from the heartbeat",
     lambda s: s["heartbeat"]["fields"].get("errors")),
    ("balance_usd", "Balance after the last fill", lambda s: s["balance"]),
    ("pnl_today", "Today's (UTC) realised PnL net of fees",
     lambda s: None if s["pnl_today"] is None else s["pnl_today"]["net"]),
    ("drawdown_pct", "Drawdown of the balance curve from its peak, percent", lambda s: s["drawdown_pct"]),
)


def _flag(value: Any) -> float | None:
    return None if value is None else (1.0 if value else 0.0)


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(snapshots: list[dict[str, Any]]) -> str:
    """One HELP/TYPE block per gauge, one sample per mode."""
    lines: list[str] = []
    for name, help_text, getter in GAUGES:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        for snap in snapshots:
            try:
                value = getter(snap)
            except (KeyError, TypeError):
                value = None
            if value is not None:
                lines.append(f'{name}{{mode="{_label(snap["mode"])}"}} {_number(float(value))}')
    return "\n".join(lines) + "\n"
