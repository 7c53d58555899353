"""One trading DB -> one JSON-ready snapshot for the desk (pure reads, never a write).

The DB is opened with SQLite's `mode=ro` URI flag plus `PRAGMA query_only`, so even a bug in this
module cannot change a balance the daemon owns; all reads run inside one read transaction so the
positions, balance and PnL shown together come from the same WAL snapshot. A DB that is absent or
not a trading DB gives a status string ("missing db", "unreadable db"), never an exception: the
desk must keep showing the other mode when one daemon has not started yet.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from live.kill_switch import SEVERITY
from live.runtime_log import HEARTBEAT_PREFIX, parse_heartbeat
from live.trading_db import iso_to_ms, now_ms, open_positions

STATUS_OK = "ok"
STATUS_MISSING = "missing db"
STATUS_UNREADABLE = "unreadable db"
HEARTBEAT_SCAN_ROWS = 200_000  # a heartbeat older than this many log rows counts as none
RECENT_LIMIT = 50
KILL_UNKNOWN = "unknown"


class DbUnavailable(Exception):
    """The DB cannot be read; `status` is what the desk shows."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def open_readonly(path: str | Path, timeout_s: float = 2.0) -> sqlite3.Connection:
    """A read-only connection; raises DbUnavailable instead of creating a missing file."""
    p = Path(path)
    if not p.is_file():
        raise DbUnavailable(STATUS_MISSING, f"{p} does not exist")
    try:
        conn = sqlite3.connect(f"file:{quote(str(p.resolve()))}?mode=ro", uri=True, timeout=timeout_s,
                               isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA query_only=ON")
        conn.execute("SELECT 1 FROM trades LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise DbUnavailable(STATUS_UNREADABLE, f"{p}: {exc}") from None
    return conn


def utc_day_start_ms(at_ms: int) -> int:
    day = dt.datetime.fromtimestamp(at_ms / 1000.0, tz=dt.UTC).date()
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def finite(value: Any) -> float | None:
    """JSON has no NaN/Infinity: a non-finite or missing number becomes null."""
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


# ------------------------------------------------------------------ heartbeat and kill state
def read_heartbeat(conn: sqlite3.Connection, at_ms: int, stale_after_s: float) -> dict[str, Any]:
    """The newest `🫀 engine ok.` row of runtime_logs, parsed, with its age and a status."""
    row = conn.execute(
        "SELECT ts_ms, message FROM runtime_logs "
        "WHERE id > (SELECT COALESCE(MAX(id), 0) FROM runtime_logs) - ? AND message LIKE ? "
        "ORDER BY id DESC LIMIT 1",
        (HEARTBEAT_SCAN_ROWS, f"%{HEARTBEAT_PREFIX}%"),
    ).fetchone()
    fields = parse_heartbeat(row["message"]) if row is not None else None
    if fields is None:
        return {"status": "none", "ts_ms": None, "age_s": None, "stale_after_s": stale_after_s, "fields": {}}
    age_s = max(0.0, (at_ms - int(row["ts_ms"])) / 1000.0)
    return {"status": STATUS_OK if age_s <= stale_after_s else "stale", "ts_ms": int(row["ts_ms"]),
            "age_s": round(age_s, 3), "stale_after_s": stale_after_s, "fields": fields}


def _latched_kills(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """The kills the daemon persisted for its restart: engine_state key 'risk', field `latched`
    ({key: {mode, reason, since_ms}}, written by RiskManager._persist on every latch and clear).
    Raises ValueError when that row is not the expected shape (the caller then shows unknown)."""
    row = conn.execute("SELECT value_json FROM engine_state WHERE key = 'risk'").fetchone()
    if row is None:
        return []
    state = json.loads(row["value_json"])
    latched = state.get("latched", {}) if isinstance(state, dict) else None
    if not isinstance(latched, dict) or not all(isinstance(k, dict) for k in latched.values()):
        raise ValueError("engine_state['risk'].latched is not an object of kills")
    return [{"mode": k.get("mode") or KILL_UNKNOWN, "reason": k.get("reason", key), "source": f"risk_state:{key}"}
            for key, k in latched.items()]


def kill_level(mode: str | None) -> int | None:
    """0 off, 1 close_only, 2 halt_all; None when unknown (never read as 0 = off); an unrecognised
    word counts as close_only (shown, not hidden)."""
    if mode is None or mode == KILL_UNKNOWN:
        return None
    return SEVERITY.get(str(mode), 1)


def _rank(kill: dict[str, Any]) -> float:
    """Worst first: unknown ranks above off (not knowing is not 'off') and below any real kill."""
    level = kill_level(kill["mode"])
    return 0.5 if level is None else float(level)


def _heartbeat_kill(heartbeat: dict[str, Any]) -> dict[str, Any] | None:
    """The daemon's own word; a heartbeat with `kill=none` says nothing, so it counts as unknown."""
    hb = heartbeat["fields"]
    if "kill" not in hb:
        return None
    return {"mode": hb.get("kill") or KILL_UNKNOWN, "reason": hb.get("kill_reason"),
            "source": "heartbeat" if heartbeat["status"] == STATUS_OK else "heartbeat (stale)"}


def kill_state(heartbeat: dict[str, Any], latched: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The worst of the last heartbeat and the latched kills persisted in engine_state['risk'], fresh
    heartbeat or not: a restarted daemon may report kill=off before it has restored those, and a
    latched stop must never look like 'off'. `latched` None (persisted state unreadable) and no
    heartbeat at all both mean unknown, which has level None and never renders as off."""
    candidates = [k for k in (_heartbeat_kill(heartbeat),) if k is not None]
    if latched is None:
        candidates.append({"mode": KILL_UNKNOWN, "reason": "persisted risk state unreadable",
                           "source": "risk_state"})
    else:
        candidates.extend(latched)
    if not candidates:
        return {"mode": KILL_UNKNOWN, "level": None, "reason": None, "source": "none"}
    worst = max(candidates, key=_rank)
    return {**worst, "level": kill_level(worst["mode"])}


# ------------------------------------------------------------------ money
@dataclass(frozen=True)
class BalanceCurve:
    """The balance curve folded up to fill `last_id`: trades are append-only, so the next snapshot
    reads only newer rows instead of the whole history (100k fills cost ~150 ms to rescan)."""

    last_id: int = 0
    balance: float | None = None
    peak: float | None = None
    max_dd_pct: float = 0.0


def advance_balance_curve(conn: sqlite3.Connection, curve: BalanceCurve | None = None) -> BalanceCurve:
    """Fold in the fills after `curve.last_id`; a DB that was replaced or rewritten starts over."""
    if curve is not None and curve.last_id:
        row = conn.execute("SELECT balance FROM trades WHERE id = ?", (curve.last_id,)).fetchone()
        if row is None or finite(row[0]) != curve.balance:
            curve = None
    last_id, balance, peak, max_dd = (0, None, None, 0.0) if curve is None else (
        curve.last_id, curve.balance, curve.peak, curve.max_dd_pct)
    cur = conn.cursor()
    cur.row_factory = None
    for row_id, bal in cur.execute("SELECT id, balance FROM trades WHERE id > ? AND balance IS NOT NULL "
                                   "ORDER BY id", (last_id,)):
        last_id, balance = row_id, float(bal)
        peak = balance if peak is None else max(peak, balance)
        if peak > 0:
            max_dd = max(max_dd, (peak - balance) / peak * 100.0)
    return BalanceCurve(last_id, balance, peak, max_dd)


def balance_and_drawdown(curve: BalanceCurve) -> dict[str, Any]:
    """Balance after the last fill, and drawdown of the balance curve (peak to now, and worst ever)."""
    peak, balance = curve.peak, curve.balance
    current = (peak - balance) / peak * 100.0 if peak and peak > 0 and balance is not None else 0.0
    return {"balance": finite(balance), "peak_balance": finite(peak),
            "drawdown_pct": round(current, 6), "max_drawdown_pct": round(curve.max_dd_pct, 6)}


def pnl_today(conn: sqlite3.Connection, at_ms: int) -> dict[str, Any]:
    """Today's (UTC) realised PnL, fees and net, read newest-first until yesterday's rows."""
    start = utc_day_start_ms(at_ms)
    realised = fees = 0.0
    fills = 0
    day_start_balance = None
    for r in conn.execute("SELECT timestamp, action, pnl, fee_usd, balance FROM trades ORDER BY id DESC"):
        ts = iso_to_ms(r["timestamp"])
        if ts is not None and ts < start:
            day_start_balance = finite(r["balance"])
            break
        realised += float(r["pnl"] or 0.0)
        fees += float(r["fee_usd"] or 0.0)
        fills += 1
    return {"day": dt.datetime.fromtimestamp(start / 1000, tz=dt.UTC).date().isoformat(),
            "realised": round(realised, 8), "fees": round(fees, 8), "net": round(realised - fees, 8),
            "fills": fills, "day_start_balance": day_start_balance}


# ------------------------------------------------------------------ tables
def recent_trades(conn: sqlite3.Connection, limit: int = RECENT_LIMIT) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, timestamp, symbol, type, action, price, size, notional, reason, pnl, fee_usd, balance, "
        "config_id FROM trades ORDER BY id DESC LIMIT ?", (limit,))
    return [dict(r) for r in rows]


def recent_audit(conn: sqlite3.Connection, limit: int = RECENT_LIMIT) -> list[dict[str, Any]]:
    out = []
    for r in conn.execute("SELECT id, timestamp, symbol, event, level, data_json FROM audit_events "
                          "ORDER BY id DESC LIMIT ?", (limit,)):
        row = dict(r)
        try:
            row["data"] = json.loads(row.pop("data_json") or "{}")
        except json.JSONDecodeError:
            row["data"] = {"raw": r["data_json"]}
        out.append(row)
    return out


def positions(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Open positions as the trader's DB says (live.trading_db.open_positions) with their notional."""
    out = []
    for pos in open_positions(conn):
        p = {k: v for k, v in pos.items() if k != "state"}
        p["notional"] = finite(p["size"] * p["entry_price"])
        out.append(p)
    return out


# ------------------------------------------------------------------ the snapshot
def _section(warnings: list[str], name: str, fn, default):
    """One broken table (an older DB, a half-migrated column) costs one section, not the page."""
    try:
        return fn()
    except (sqlite3.Error, KeyError, IndexError, ValueError, TypeError) as exc:
        warnings.append(f"{name}: {exc}")
        return default


def empty_snapshot(mode: str, path: str | Path, at_ms: int, status: str, detail: str) -> dict[str, Any]:
    return {"mode": mode, "db": {"path": str(path), "status": status, "detail": detail}, "now_ms": at_ms,
            "engine_up": False,
            "heartbeat": {"status": "none", "ts_ms": None, "age_s": None, "fields": {}},
            "kill": {"mode": KILL_UNKNOWN, "level": None, "reason": None, "source": "none"},
            "balance": None, "peak_balance": None, "drawdown_pct": None, "max_drawdown_pct": None,
            "pnl_today": None, "open_positions": [], "recent_trades": [], "recent_audit": [],
            "warnings": [f"{status}: {detail}"]}


class DeskReader:
    """Snapshots of one mode's DB; keeps the folded balance curve between calls (see BalanceCurve)."""

    def __init__(self, mode: str, path: str | Path, *, stale_after_s: float = 120.0,
                 limit: int = RECENT_LIMIT) -> None:
        self.mode, self.path, self.stale_after_s, self.limit = mode, Path(path), stale_after_s, limit
        self.curve: BalanceCurve | None = None

    def snapshot(self, at_ms: int | None = None) -> dict[str, Any]:
        """Everything the desk shows for this mode, read from one consistent DB snapshot."""
        at_ms = now_ms() if at_ms is None else int(at_ms)
        try:
            conn = open_readonly(self.path)
        except DbUnavailable as exc:
            self.curve = None
            return empty_snapshot(self.mode, self.path, at_ms, exc.status, exc.detail)
        try:
            conn.execute("BEGIN")
            snap = self._read(conn, at_ms)
        finally:
            conn.close()
        return snap

    def _read(self, conn: sqlite3.Connection, at_ms: int) -> dict[str, Any]:
        warnings: list[str] = []
        hb = _section(warnings, "runtime_logs", lambda: read_heartbeat(conn, at_ms, self.stale_after_s),
                      {"status": "none", "ts_ms": None, "age_s": None, "stale_after_s": self.stale_after_s,
                       "fields": {}})
        latched = _section(warnings, "engine_state", lambda: _latched_kills(conn), None)
        self.curve = _section(warnings, "trades", lambda: advance_balance_curve(conn, self.curve), None)
        money = balance_and_drawdown(self.curve or BalanceCurve())
        snap = {
            "mode": self.mode, "db": {"path": str(self.path), "status": STATUS_OK, "detail": ""}, "now_ms": at_ms,
            "engine_up": hb["status"] == STATUS_OK, "heartbeat": hb, "kill": kill_state(hb, latched), **money,
            "pnl_today": _section(warnings, "trades", lambda: pnl_today(conn, at_ms), None),
            "open_positions": _section(warnings, "positions", lambda: positions(conn), []),
            "recent_trades": _section(warnings, "trades", lambda: recent_trades(conn, self.limit), []),
            "recent_audit": _section(warnings, "audit_events", lambda: recent_audit(conn, self.limit), []),
            "warnings": warnings,
        }
        if hb["status"] == "stale":
            warnings.append(f"heartbeat stale: {hb['age_s']:.0f}s old (limit {self.stale_after_s:.0f}s)")
        elif hb["status"] == "none":
            warnings.append("no heartbeat in runtime_logs: is the daemon running?")
        return snap


def build_snapshot(mode: str, path: str | Path, *, at_ms: int | None = None, stale_after_s: float = 120.0,
                   limit: int = RECENT_LIMIT) -> dict[str, Any]:
    """One stateless snapshot (tools and tests); the server keeps a DeskReader per mode instead."""
    return DeskReader(mode, path, stale_after_s=stale_after_s, limit=limit).snapshot(at_ms)
