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
import zipfile
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
STOPPED_MARK = "trader stopped after"   # live/daemon.py's last log line on a clean stop
AUDIT_SCAN_ROWS = 100_000               # a kill audit older than this many audit rows is not read
KILL_EVENTS = ("RISK_KILL", "RISK_CLEAR")
HISTORY_POINTS = 2_000                  # balance-curve points sent to the page (thinned beyond)
DAILY_PNL_DAYS = 30
ROUND_TRIPS = 100
CHECKPOINT_KEY = "engine"               # live/checkpoint.py KEY


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
        "SELECT id, ts_ms, message FROM runtime_logs "
        "WHERE id > (SELECT COALESCE(MAX(id), 0) FROM runtime_logs) - ? AND message LIKE ? "
        "ORDER BY id DESC LIMIT 1",
        (HEARTBEAT_SCAN_ROWS, f"%{HEARTBEAT_PREFIX}%"),
    ).fetchone()
    fields = parse_heartbeat(row["message"]) if row is not None else None
    if fields is None:
        return {"status": "none", "ts_ms": None, "age_s": None, "stale_after_s": stale_after_s, "fields": {}}
    age_s = max(0.0, (at_ms - int(row["ts_ms"])) / 1000.0)
    return {"status": STATUS_OK if age_s <= stale_after_s else "stale", "ts_ms": int(row["ts_ms"]),
            "age_s": round(age_s, 3), "stale_after_s": stale_after_s, "fields": fields, "row_id": int(row["id"])}


def trader_stopped(conn: sqlite3.Connection, heartbeat: dict[str, Any]) -> dict[str, Any] | None:
    """The daemon's own `trader stopped after …` line when it is newer than the last heartbeat:
    the trader said it stopped, so the desk says so at once instead of 'up' until the heartbeat
    goes stale (120 s by default)."""
    row = conn.execute(
        "SELECT id, ts_ms, message FROM runtime_logs WHERE id > ? AND message LIKE ? ORDER BY id DESC LIMIT 1",
        (int(heartbeat.get("row_id") or 0), f"%{STOPPED_MARK}%")).fetchone()
    return None if row is None else {"ts_ms": int(row["ts_ms"]), "message": row["message"]}


def engine_status(heartbeat: dict[str, Any], stopped: dict[str, Any] | None) -> str:
    """up | stale | stopped | no heartbeat (only 'up' is healthy)."""
    if stopped is not None:
        return "stopped"
    return {"ok": "up", "stale": "stale"}.get(heartbeat["status"], "no heartbeat")


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


def newest_kill_audit(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The last RISK_KILL / RISK_CLEAR audit row: its `effective` field is the trader's kill mode
    right after the event, written the moment it happened (the heartbeat may be a minute older)."""
    row = conn.execute(
        "SELECT ts_ms, event, data_json FROM audit_events WHERE id > (SELECT COALESCE(MAX(id), 0) FROM "
        "audit_events) - ? AND event IN (?, ?) ORDER BY id DESC LIMIT 1", (AUDIT_SCAN_ROWS, *KILL_EVENTS)).fetchone()
    if row is None:
        return None
    data = json.loads(row["data_json"] or "{}")
    reason = data.get("reason") if row["event"] == "RISK_KILL" else "cleared: " + ", ".join(map(str, data.get("cleared", [])))
    return {"mode": data.get("effective") or KILL_UNKNOWN, "reason": reason, "source": f"audit:{row['event']}",
            "ts_ms": int(row["ts_ms"] or 0)}


def _primary_kill(heartbeat: dict[str, Any], audit_kill: dict[str, Any] | None) -> dict[str, Any] | None:
    """Whichever of the heartbeat and the newest kill audit row was written last."""
    hb_kill = _heartbeat_kill(heartbeat)
    if audit_kill is None:
        return hb_kill
    if hb_kill is None or audit_kill["ts_ms"] >= int(heartbeat.get("ts_ms") or 0):
        return {k: v for k, v in audit_kill.items() if k != "ts_ms"}
    return hb_kill


def kill_state(heartbeat: dict[str, Any], latched: list[dict[str, Any]] | None,
               audit_kill: dict[str, Any] | None = None) -> dict[str, Any]:
    """The worst of the trader's last word (the newer of its heartbeat and its last RISK_KILL /
    RISK_CLEAR audit row, so a kill shows within one poll instead of a heartbeat later) and the
    latched kills persisted in engine_state['risk'], fresh heartbeat or not: a restarted daemon
    may report kill=off before it has restored those, and a
    latched stop must never look like 'off'. `latched` None (persisted state unreadable) and no
    heartbeat at all both mean unknown, which has level None and never renders as off."""
    candidates = [k for k in (_primary_kill(heartbeat, audit_kill),) if k is not None]
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


# ------------------------------------------------------------------ desk figures
def engine_marks(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """From the trader's engine checkpoint (engine_state 'engine'): per symbol the last close the
    engine marked positions at, its stop and the funding the open round trip paid, plus the last
    bar processed. None before the first checkpoint."""
    import base64
    import io

    import numpy as np

    from live.trading_db import load_engine_state
    from strategy.layout import POS_LAST_CLOSE, POS_SIDE, POS_STOP, POS_TRADE_FUNDING

    data = load_engine_state(conn, CHECKPOINT_KEY)
    if not data:
        return None
    # decoded here rather than by live.checkpoint, which would load the numba engine into the monitor
    try:
        pos = np.load(io.BytesIO(base64.b64decode(data["arrays"])), allow_pickle=False)["pos"]
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"engine checkpoint unreadable: {exc}") from None
    symbols = {sym: {"mark": finite(pos[i, POS_LAST_CLOSE]), "stop": finite(pos[i, POS_STOP]) if pos[i, POS_SIDE] else None,
                     "funding_paid": finite(pos[i, POS_TRADE_FUNDING]) if pos[i, POS_SIDE] else None}
               for i, sym in enumerate(data.get("symbols", []))}
    return {"last_bar_t": int(data.get("last_bar_t") or 0), "symbols": symbols}


def enrich_positions(rows: list[dict[str, Any]], marks: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Mark price, unrealised PnL, distance to the stop (% of the mark; positive = room left) and
    funding paid, from the engine's marks; None where the engine has not marked the symbol."""
    sym_marks = (marks or {}).get("symbols", {})
    for p in rows:
        m = sym_marks.get(p["symbol"], {})
        mark, sign = m.get("mark"), 1.0 if str(p.get("side")).upper() == "LONG" else -1.0
        stop = p.get("trailing_sl") if p.get("trailing_sl") is not None else m.get("stop")
        p["mark_price"] = mark
        p["stop"] = finite(stop)
        p["unrealised_pnl"] = finite((mark - p["entry_price"]) * p["size"] * sign) if mark is not None else None
        p["stop_distance_pct"] = (finite((mark - stop) / mark * 100.0 * sign)
                                  if mark and stop is not None else None)
        p["funding_paid"] = m.get("funding_paid")
    return rows


def protective_orders(conn: sqlite3.Connection) -> dict[str, list[dict[str, Any]]]:
    """Per symbol, the protective trigger orders the live trader keeps resting (live/protection.py:
    OMS intents of action PROTECT still open): role, trigger price, size, exchange oid. A DB without
    the OMS tables (paper) has none."""
    has = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'oms_intents'").fetchone()
    if not has:
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    rows = conn.execute("SELECT symbol, requested_size, exchange_order_id, meta_json FROM oms_intents "
                        "WHERE action = 'PROTECT' AND status IN ('SENT', 'PARTIAL') ORDER BY created_ts_ms")
    for sym, size, oid, meta in rows:
        m = json.loads(meta or "{}")
        out.setdefault(sym, []).append({"role": m.get("role"), "trigger_px": finite(m.get("trigger_px")),
                                        "size": finite(size), "oid": oid})
    return out


def mark_protection(rows: list[dict[str, Any]], orders: dict[str, list[dict[str, Any]]], mode: str) -> None:
    """Each live position gets its resting protective orders and `unprotected` when it has none
    (paper and dry_live rest nothing on an exchange: None)."""
    for p in rows:
        p["protection"] = orders.get(p["symbol"], []) if mode == "live" else None
        p["unprotected"] = (not p["protection"]) if mode == "live" else None


def data_lag(marks: dict[str, Any] | None, candles_db: Path | None, at_ms: int) -> list[dict[str, Any]]:
    """Per symbol: the close time of its newest bar and how old it is. From the trader's candle DB
    when the monitor is told where it is (AIQ_MONITOR_CANDLES_DB), else the last bar the engine
    processed (the same for every symbol; source says which)."""
    newest: dict[str, int] = {}
    source = "checkpoint"
    if candles_db is not None:
        try:
            conn = sqlite3.connect(f"file:{quote(str(candles_db.resolve()))}?mode=ro", uri=True, timeout=2.0)
            try:
                newest = {r[0]: int(r[1]) + 1 for r in conn.execute(
                    "SELECT symbol, MAX(t_close) FROM candles GROUP BY symbol")}
                source = "candles_db"
            finally:
                conn.close()
        except sqlite3.Error:
            newest = {}
    if not newest and marks:
        newest = {sym: marks["last_bar_t"] for sym, m in marks["symbols"].items() if m.get("mark") is not None}
    return [{"symbol": sym, "last_bar_ms": t, "lag_s": round(max(0.0, (at_ms - t) / 1000.0), 1), "source": source}
            for sym, t in sorted(newest.items())]


class FillHistory:
    """The balance after each fill (thinned to ~HISTORY_POINTS) and net PnL per UTC day, folded
    incrementally like BalanceCurve: trades are append-only, so each snapshot reads new rows only."""

    def __init__(self) -> None:
        self.last_id, self.last_balance = 0, None
        self.t_ms: list[int] = []
        self.balance: list[float] = []
        self.days: dict[str, float] = {}

    def advance(self, conn: sqlite3.Connection) -> FillHistory:
        """Fold in new fills; a DB that was replaced or rewritten starts over."""
        if self.last_id:
            row = conn.execute("SELECT balance FROM trades WHERE id = ?", (self.last_id,)).fetchone()
            if row is None or finite(row[0]) != self.last_balance:
                self.__init__()
        cur = conn.cursor()
        cur.row_factory = None
        for row_id, ts, bal, pnl, fee in cur.execute(
                "SELECT id, timestamp, balance, pnl, fee_usd FROM trades WHERE id > ? ORDER BY id", (self.last_id,)):
            self.last_id = row_id
            t = iso_to_ms(ts)
            if t is not None:
                day = dt.datetime.fromtimestamp(t / 1000.0, tz=dt.UTC).date().isoformat()
                self.days[day] = self.days.get(day, 0.0) + float(pnl or 0.0) - float(fee or 0.0)
            if bal is not None and t is not None:
                self.last_balance = finite(bal)
                self.t_ms.append(t)
                self.balance.append(float(bal))
        if len(self.t_ms) > 2 * HISTORY_POINTS:  # keep the newest point, halve the rest
            self.t_ms = self.t_ms[-2::-2][::-1] + self.t_ms[-1:]
            self.balance = self.balance[-2::-2][::-1] + self.balance[-1:]
        return self

    def series(self) -> dict[str, Any]:
        days = sorted(self.days)[-DAILY_PNL_DAYS:]
        return {"balance_series": {"t_ms": list(self.t_ms), "balance": list(self.balance)},
                "daily_pnl": [{"day": d, "net": round(self.days[d], 8)} for d in days]}


def round_trips(conn: sqlite3.Connection, limit: int = ROUND_TRIPS) -> list[dict[str, Any]]:
    """The last closed round trips (OPEN .. CLOSE of one symbol), newest first, with net PnL."""
    out = []
    closes = conn.execute("SELECT id, timestamp, symbol, type, price, reason FROM trades WHERE action = 'CLOSE' "
                          "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    for c in closes:
        o = conn.execute("SELECT id, timestamp, price FROM trades WHERE symbol = ? AND action = 'OPEN' AND id < ? "
                         "ORDER BY id DESC LIMIT 1", (c["symbol"], c["id"])).fetchone()
        if o is None:
            continue
        pnl, fees, size = conn.execute(
            "SELECT SUM(COALESCE(pnl, 0)), SUM(COALESCE(fee_usd, 0)), MAX(size) FROM trades WHERE symbol = ? "
            "AND id BETWEEN ? AND ? AND action IN ('OPEN', 'ADD', 'REDUCE', 'CLOSE', 'FUNDING')",
            (c["symbol"], o["id"], c["id"])).fetchone()
        out.append({"symbol": c["symbol"], "side": c["type"], "open_time_ms": iso_to_ms(o["timestamp"]),
                    "close_time_ms": iso_to_ms(c["timestamp"]), "entry_price": finite(o["price"]),
                    "exit_price": finite(c["price"]), "size": finite(size), "pnl": finite(pnl), "fees": finite(fees),
                    "net": finite((pnl or 0.0) - (fees or 0.0)), "exit_reason": c["reason"]})
    return out


def is_safe_mode(kill: dict[str, Any], latched: list[dict[str, Any]] | None, heartbeat: dict[str, Any]) -> bool:
    """The risk manager's drawdown safe mode (latched key `safe_mode`), even under a worse kill."""
    texts = [str(kill.get("reason")), str(kill.get("source")), str(heartbeat["fields"].get("kill_reason"))]
    texts += [str(k.get("source")) for k in latched or []]
    return any("safe_mode" in t for t in texts)


def banners(snap: dict[str, Any]) -> list[dict[str, str]]:
    """What must not be missed, most severe first: a kill, safe mode, an engine that is not up."""
    out = []
    kill, status = snap["kill"], snap["engine_status"]
    if kill["level"] is None:
        why = kill.get("reason") or ("no heartbeat and no persisted kill" if kill["source"] == "none" else kill["source"])
        out.append({"level": "warn", "text": f"KILL STATE UNKNOWN ({why}): treat as not safe"})
    elif kill["level"] > 0:
        out.append({"level": "bad", "text": f"KILL {str(kill['mode']).upper()}: {kill.get('reason') or ''} "
                                            f"(source {kill['source']})"})
    if snap.get("safe_mode"):
        out.append({"level": "bad", "text": "SAFE MODE: the trader only reduces risk"})
    bare = [p["symbol"] for p in snap.get("open_positions", []) if p.get("unprotected")]
    if bare:
        out.append({"level": "bad", "text": f"UNPROTECTED: {', '.join(bare)} without a resting protective order "
                                            "on the exchange"})
    if status != "up" and snap["db"]["status"] == STATUS_OK:
        age = snap["heartbeat"].get("age_s")
        text = {"stopped": "ENGINE STOPPED: the trader logged a clean stop",
                "stale": f"ENGINE STALE: last heartbeat {age:.0f} s ago" if age is not None else "ENGINE STALE",
                "no heartbeat": "NO HEARTBEAT: is the trader running?"}[status]
        out.append({"level": "bad" if status != "no heartbeat" else "warn", "text": text})
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
    snap = {"mode": mode, "db": {"path": str(path), "status": status, "detail": detail}, "now_ms": at_ms,
            "engine_up": False, "engine_status": "no heartbeat", "stopped": None,
            "heartbeat": {"status": "none", "ts_ms": None, "age_s": None, "fields": {}},
            "kill": {"mode": KILL_UNKNOWN, "level": None, "reason": None, "source": "none"},
            "balance": None, "peak_balance": None, "drawdown_pct": None, "max_drawdown_pct": None,
            "equity": None, "unrealised_pnl": None,
            "pnl_today": None, "open_positions": [], "recent_trades": [], "round_trips": [], "recent_audit": [],
            "data_lag": [], "safe_mode": False, **FillHistory().series(), "warnings": [f"{status}: {detail}"]}
    snap["banners"] = banners(snap)
    return snap


class DeskReader:
    """Snapshots of one mode's DB; keeps the folded balance curve between calls (see BalanceCurve)."""

    def __init__(self, mode: str, path: str | Path, *, stale_after_s: float = 120.0,
                 limit: int = RECENT_LIMIT, candles_db: str | Path | None = None) -> None:
        self.mode, self.path, self.stale_after_s, self.limit = mode, Path(path), stale_after_s, limit
        self.candles_db = Path(candles_db) if candles_db else None
        self.curve: BalanceCurve | None = None
        self.history = FillHistory()

    def snapshot(self, at_ms: int | None = None) -> dict[str, Any]:
        """Everything the desk shows for this mode, read from one consistent DB snapshot."""
        at_ms = now_ms() if at_ms is None else int(at_ms)
        try:
            conn = open_readonly(self.path)
        except DbUnavailable as exc:
            self.curve = None
            self.history = FillHistory()
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
        audit_kill = _section(warnings, "audit_events", lambda: newest_kill_audit(conn), None)
        stopped = _section(warnings, "runtime_logs", lambda: trader_stopped(conn, hb), None)
        self.curve = _section(warnings, "trades", lambda: advance_balance_curve(conn, self.curve), None)
        history = _section(warnings, "trades", lambda: self.history.advance(conn), None)
        marks = _section(warnings, "engine checkpoint", lambda: engine_marks(conn), None)
        money = balance_and_drawdown(self.curve or BalanceCurve())
        status = engine_status(hb, stopped)
        open_pos = enrich_positions(_section(warnings, "positions", lambda: positions(conn), []), marks)
        mark_protection(open_pos, _section(warnings, "oms_intents", lambda: protective_orders(conn), {}), self.mode)
        unrealised = sum(p["unrealised_pnl"] or 0.0 for p in open_pos)
        snap = {
            "mode": self.mode, "db": {"path": str(self.path), "status": STATUS_OK, "detail": ""}, "now_ms": at_ms,
            "engine_up": status == "up", "engine_status": status, "stopped": stopped, "heartbeat": hb,
            "kill": kill_state(hb, latched, audit_kill), **money,
            "equity": finite(money["balance"] + unrealised) if money["balance"] is not None else None,
            "unrealised_pnl": finite(unrealised),
            "pnl_today": _section(warnings, "trades", lambda: pnl_today(conn, at_ms), None),
            "open_positions": open_pos,
            "recent_trades": _section(warnings, "trades", lambda: recent_trades(conn, self.limit), []),
            "round_trips": _section(warnings, "trades", lambda: round_trips(conn), []),
            "recent_audit": _section(warnings, "audit_events", lambda: recent_audit(conn, self.limit), []),
            "data_lag": data_lag(marks, self.candles_db, at_ms),
            **(history.series() if history is not None else FillHistory().series()),
            "warnings": warnings,
        }
        snap["safe_mode"] = is_safe_mode(snap["kill"], latched, hb)
        snap["banners"] = banners(snap)
        if hb["status"] == "stale":
            warnings.append(f"heartbeat stale: {hb['age_s']:.0f}s old (limit {self.stale_after_s:.0f}s)")
        elif hb["status"] == "none":
            warnings.append("no heartbeat in runtime_logs: is the daemon running?")
        return snap


def build_snapshot(mode: str, path: str | Path, *, at_ms: int | None = None, stale_after_s: float = 120.0,
                   limit: int = RECENT_LIMIT) -> dict[str, Any]:
    """One stateless snapshot (tools and tests); the server keeps a DeskReader per mode instead."""
    return DeskReader(mode, path, stale_after_s=stale_after_s, limit=limit).snapshot(at_ms)
