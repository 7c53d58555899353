"""The trading database (paper: trading_engine.db, live: trading_engine_live.db).

Table and column names are a contract: the monitor, the tools and the operators' sqlite3 one-liners
read them (spec/reference/runtime.md §5). Trades are written with synchronous=FULL so that a fill
acknowledged to the engine survives a power cut, and each engine fill carries a deterministic
fill_hash so that replaying the same bar after a kill -9 inserts nothing twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from strategy.files import write_text_atomic

TRADE_COLUMNS = (
    "timestamp", "symbol", "type", "action", "price", "size", "notional", "reason", "confidence", "pnl",
    "fee_usd", "fee_token", "fee_rate", "balance", "entry_atr", "leverage", "margin_used", "meta_json",
    "fill_hash", "fill_tid", "config_id", "bar_t_ms",
)
POSITION_STATE_COLUMNS = (
    "open_trade_id", "trailing_sl", "last_funding_time", "updated_at", "adds_count", "tp1_taken",
    "last_add_time", "entry_adx_threshold", "state_json",
)
TRADE_ACTIONS = frozenset({"OPEN", "ADD", "REDUCE", "CLOSE", "FUNDING", "SYSTEM"})

SCHEMA = """
CREATE TABLE IF NOT EXISTS trades (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT NOT NULL,
    symbol TEXT NOT NULL,
    type TEXT,
    action TEXT NOT NULL,
    price REAL, size REAL, notional REAL,
    reason TEXT, confidence TEXT,
    pnl REAL, fee_usd REAL, fee_token TEXT, fee_rate REAL,
    balance REAL, entry_atr REAL, leverage REAL, margin_used REAL,
    meta_json TEXT,
    fill_hash TEXT, fill_tid INTEGER,
    config_id TEXT, bar_t_ms INTEGER,
    UNIQUE(fill_hash, fill_tid)
);
CREATE INDEX IF NOT EXISTS idx_trades_symbol_action_id ON trades(symbol, action, id);
CREATE TABLE IF NOT EXISTS position_state (
    symbol TEXT PRIMARY KEY,
    open_trade_id INTEGER,
    trailing_sl REAL,
    last_funding_time INTEGER,
    updated_at TEXT,
    adds_count INTEGER DEFAULT 0,
    tp1_taken INTEGER DEFAULT 0,
    last_add_time INTEGER,
    entry_adx_threshold REAL,
    state_json TEXT
);
CREATE TABLE IF NOT EXISTS runtime_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    ts TEXT NOT NULL,
    pid INTEGER,
    mode TEXT,
    stream TEXT,
    level TEXT,
    message TEXT
);
CREATE INDEX IF NOT EXISTS idx_runtime_logs_ts_ms ON runtime_logs(ts_ms);
CREATE TABLE IF NOT EXISTS audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT NOT NULL,
    ts_ms INTEGER,
    symbol TEXT,
    event TEXT NOT NULL,
    level TEXT,
    data_json TEXT
);
CREATE INDEX IF NOT EXISTS idx_audit_events_ts_ms ON audit_events(ts_ms);
CREATE TABLE IF NOT EXISTS engine_checkpoints (
    bar_t_ms INTEGER PRIMARY KEY,
    value_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS engine_state (
    key TEXT PRIMARY KEY,
    value_json TEXT NOT NULL
);
"""


def iso_utc(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000.0, tz=dt.UTC).isoformat(timespec="milliseconds")


def now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


def iso_to_ms(text: str | None) -> int | None:
    if not text:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


def secure_db_files(path: str | os.PathLike) -> None:
    """chmod 600 the db and its -wal/-shm/-journal siblings: balances and fills are private."""
    base = str(path)
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.chmod(base + suffix, 0o600)
        except FileNotFoundError:
            pass


class TradingDbError(RuntimeError):
    """The trading DB cannot be used (not SQLite, a directory, another program's DB); one line."""


def _refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """A file that holds other tables but no `trades` belongs to something else (a candle DB named by
    mistake in AI_QUANT_DB_PATH): writing our schema into it would corrupt both."""
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    if tables and "trades" not in tables:
        shown = ", ".join(tables[:5]) + (" ..." if len(tables) > 5 else "")
        raise TradingDbError(f"{path} is not a trading DB (it holds the tables {shown}); "
                             "refusing to write into it (check AI_QUANT_DB_PATH)")


def open_trading_db(path: str | os.PathLike, *, timeout_s: float = 15.0,
                    check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) the trading DB in WAL mode with synchronous=FULL.

    `check_same_thread=False` is for a connection guarded by its own lock and closed from another
    thread (the runtime log writer). Raises TradingDbError (one line) for anything that is not a
    trading DB or an empty file.
    """
    p = Path(path)
    if p.is_dir():
        raise TradingDbError(f"{p} is a directory, not a trading DB file")
    old_umask = os.umask(0o077)
    conn = None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(p), timeout=timeout_s, isolation_level=None,
                               check_same_thread=check_same_thread)
        conn.row_factory = sqlite3.Row
        _refuse_foreign(conn, p)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        conn.executescript(SCHEMA)
        _add_missing_columns(conn)
    except (sqlite3.Error, OSError) as exc:
        if conn is not None:
            conn.close()
        raise TradingDbError(f"cannot open the trading DB {p}: {exc}") from None
    except TradingDbError:
        conn.close()
        raise
    finally:
        os.umask(old_umask)
    secure_db_files(p)
    return conn


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Additive migration for DBs created by an older build (columns are never dropped)."""
    wanted = {"trades": {"config_id": "TEXT", "bar_t_ms": "INTEGER"},
              "position_state": {"state_json": "TEXT"},
              "audit_events": {"ts_ms": "INTEGER"}}
    for table, cols in wanted.items():
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        for col, typ in cols.items():
            if col not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {col} {typ}")


def engine_fill_hash(run_key: str, bar_t_ms: int, symbol: str, action: str, seq: int) -> str:
    """Deterministic id of an engine fill: the same bar replayed after a crash gets the same hash."""
    raw = f"{run_key}|{int(bar_t_ms)}|{symbol.upper()}|{action.upper()}|{int(seq)}"
    return "eng_" + hashlib.sha256(raw.encode()).hexdigest()[:40]


def insert_trade(conn: sqlite3.Connection, row: dict[str, Any]) -> int:
    """Insert a trade row; a row with an already-stored (fill_hash, fill_tid) returns the existing id.

    Pass `fill_hash` (see `engine_fill_hash`) for every engine fill; fill_tid defaults to 0 then, so
    the UNIQUE constraint (which ignores NULLs) applies.
    """
    unknown = set(row) - set(TRADE_COLUMNS)
    if unknown:
        raise ValueError(f"insert_trade: unknown trade column(s) {sorted(unknown)}")
    values = dict(row)
    action = str(values.get("action", "")).upper()
    if action not in TRADE_ACTIONS:
        raise ValueError(f"insert_trade: action must be one of {sorted(TRADE_ACTIONS)}, not {action!r}")
    values["action"] = action
    values["symbol"] = str(values["symbol"]).upper()
    values.setdefault("timestamp", iso_utc(now_ms()))
    if isinstance(values.get("meta_json"), dict | list):
        values["meta_json"] = json.dumps(values["meta_json"], sort_keys=True)
    if values.get("fill_hash") is not None and values.get("fill_tid") is None:
        values["fill_tid"] = 0
    cols = list(values)
    sql = f"INSERT OR IGNORE INTO trades ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    cur = conn.execute(sql, [values[c] for c in cols])
    if cur.rowcount == 1:
        return int(cur.lastrowid)
    found = conn.execute("SELECT id FROM trades WHERE fill_hash = ? AND fill_tid = ?",
                         (values["fill_hash"], values["fill_tid"])).fetchone()
    return int(found[0])


def audit(conn: sqlite3.Connection, event: str, symbol: str | None = None, level: str = "info",
          data: dict | None = None, ts_ms: int | None = None) -> int:
    ts = now_ms() if ts_ms is None else int(ts_ms)
    cur = conn.execute(
        "INSERT INTO audit_events (timestamp, ts_ms, symbol, event, level, data_json) VALUES (?, ?, ?, ?, ?, ?)",
        (iso_utc(ts), ts, symbol.upper() if symbol else None, event, level,
         json.dumps(data or {}, sort_keys=True, default=str)),
    )
    return int(cur.lastrowid)


def last_balance(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT balance FROM trades WHERE balance IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else float(row[0])


def upsert_position_state(conn: sqlite3.Connection, symbol: str, **fields: Any) -> None:
    unknown = set(fields) - set(POSITION_STATE_COLUMNS)
    if unknown:
        raise ValueError(f"upsert_position_state: unknown column(s) {sorted(unknown)}")
    if isinstance(fields.get("state_json"), dict):
        fields["state_json"] = json.dumps(fields["state_json"], sort_keys=True)
    fields.setdefault("updated_at", iso_utc(now_ms()))
    cols = ["symbol", *fields]
    updates = ", ".join(f"{c} = excluded.{c}" for c in fields)
    conn.execute(
        f"INSERT INTO position_state ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT(symbol) DO UPDATE SET {updates}",
        [symbol.upper(), *fields.values()],
    )


def delete_position_state(conn: sqlite3.Connection, symbol: str | None = None) -> int:
    if symbol is None:
        return conn.execute("DELETE FROM position_state").rowcount
    return conn.execute("DELETE FROM position_state WHERE symbol = ?", (symbol.upper(),)).rowcount


def save_engine_state(conn: sqlite3.Connection, key: str, value: Any) -> None:
    conn.execute("INSERT INTO engine_state (key, value_json) VALUES (?, ?) "
                 "ON CONFLICT(key) DO UPDATE SET value_json = excluded.value_json",
                 (key, json.dumps(value, sort_keys=True)))


def load_engine_state(conn: sqlite3.Connection, key: str, default: Any = None) -> Any:
    row = conn.execute("SELECT value_json FROM engine_state WHERE key = ?", (key,)).fetchone()
    return default if row is None else json.loads(row[0])


def bump_flatten_seq(conn: sqlite3.Connection, detail: dict) -> int:
    """Tell a running daemon that positions were flattened behind its back (it reloads on change)."""
    seq = int(load_engine_state(conn, "flatten_seq", {"seq": 0}).get("seq", 0)) + 1
    save_engine_state(conn, "flatten_seq", {"seq": seq, **detail})
    return seq


def _apply_trade(positions: dict[str, dict], r: sqlite3.Row) -> None:
    sym, action = r["symbol"], r["action"]
    size = float(r["size"] or 0.0)
    price = float(r["price"] or 0.0)
    ts = iso_to_ms(r["timestamp"])
    if action == "OPEN":
        positions[sym] = {
            "symbol": sym, "side": r["type"], "size": size, "entry_price": price,
            "entry_atr": r["entry_atr"], "trailing_sl": None, "confidence": r["confidence"],
            "leverage": r["leverage"], "margin_used": r["margin_used"], "adds_count": 0, "tp1_taken": 0,
            "open_time_ms": ts, "last_add_time_ms": ts, "entry_adx_threshold": None,
            "open_trade_id": int(r["id"]), "state": None,
        }
        return
    pos = positions.get(sym)
    if pos is None:
        return
    if action == "ADD":
        total = pos["size"] + size
        if total > 0:
            pos["entry_price"] = (pos["entry_price"] * pos["size"] + price * size) / total
        pos["size"] = total
        pos["adds_count"] += 1
        pos["last_add_time_ms"] = ts
        if r["margin_used"] is not None:
            pos["margin_used"] = (pos["margin_used"] or 0.0) + float(r["margin_used"])
    elif action == "REDUCE":
        pos["size"] = max(0.0, pos["size"] - size)
        if pos["size"] <= 1e-12:
            positions.pop(sym)
    elif action == "CLOSE":
        positions.pop(sym)


def open_positions(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Open positions rebuilt from `trades` (last OPEN not followed by a CLOSE, ADD/REDUCE replayed),
    enriched from `position_state` when its open_trade_id matches (trailing stop, tp1, engine state).
    Each symbol is replayed only from its last OPEN (an OPEN starts a new position), so the cost does
    not grow with the history: the monitor calls this on every snapshot."""
    positions: dict[str, dict] = {}
    rows = conn.execute(
        "SELECT t.id, t.timestamp, t.symbol, t.type, t.action, t.price, t.size, t.confidence, t.entry_atr, "
        "t.leverage, t.margin_used FROM trades t JOIN (SELECT symbol, MAX(id) AS open_id FROM trades "
        "WHERE action = 'OPEN' GROUP BY symbol) o ON t.symbol = o.symbol AND t.id >= o.open_id "
        "WHERE t.action IN ('OPEN', 'ADD', 'REDUCE', 'CLOSE') ORDER BY t.id")
    for r in rows:
        _apply_trade(positions, r)
    for st in conn.execute("SELECT * FROM position_state"):
        pos = positions.get(st["symbol"])
        if pos is None or st["open_trade_id"] != pos["open_trade_id"]:
            continue
        pos["trailing_sl"] = st["trailing_sl"]
        pos["adds_count"] = int(st["adds_count"] or pos["adds_count"])
        pos["tp1_taken"] = int(st["tp1_taken"] or 0)
        pos["last_add_time_ms"] = st["last_add_time"] or pos["last_add_time_ms"]
        pos["entry_adx_threshold"] = st["entry_adx_threshold"]
        pos["state"] = json.loads(st["state_json"]) if st["state_json"] else None
    return [positions[s] for s in sorted(positions)]


class transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): several rows land together or not at all."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def atomic_write_text(path: str | os.PathLike, text: str, mode: int = 0o644) -> Path:
    """The tools' atomic write (strategy.files), with their default file mode."""
    return write_text_atomic(path, text, mode=mode)
