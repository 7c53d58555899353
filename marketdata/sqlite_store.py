"""SQLite connections and table definitions shared by every market-data store.

All stores run in WAL mode with synchronous=NORMAL so the WS sidecar can write while readers
(replay, sweep, checks) read; readers open read-only so a typo never creates an empty DB.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from marketdata.intervals import MarketDataError

BUSY_TIMEOUT_MS = 15_000

CANDLES_DDL = """
CREATE TABLE IF NOT EXISTS candles (
  symbol TEXT NOT NULL, interval TEXT NOT NULL, t INTEGER NOT NULL, t_close INTEGER,
  o REAL, h REAL, l REAL, c REAL, v REAL, n INTEGER, updated_at TEXT,
  PRIMARY KEY (symbol, interval, t));
CREATE INDEX IF NOT EXISTS idx_candles_symbol_interval_t ON candles(symbol, interval, t);
"""
CANDLE_COLUMNS = ("symbol", "interval", "t", "t_close", "o", "h", "l", "c", "v", "n", "updated_at")

FUNDING_DDL = """
CREATE TABLE IF NOT EXISTS funding_rates (
  symbol TEXT NOT NULL, time INTEGER NOT NULL, funding_rate REAL NOT NULL, premium REAL,
  PRIMARY KEY (symbol, time));
"""

UNIVERSE_DDL = """
CREATE TABLE IF NOT EXISTS universe_snapshots (
  ts_ms INTEGER NOT NULL, symbol TEXT NOT NULL, PRIMARY KEY (ts_ms, symbol));
CREATE TABLE IF NOT EXISTS universe_listings (
  symbol TEXT PRIMARY KEY, first_seen_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL);
"""

BBO_DDL = """
CREATE TABLE IF NOT EXISTS bbo_snapshots (
  symbol TEXT NOT NULL, ts_ms INTEGER NOT NULL, bid REAL, ask REAL, mid REAL, updated_at TEXT,
  PRIMARY KEY (symbol, ts_ms));
CREATE INDEX IF NOT EXISTS idx_bbo_snapshots_ts_ms ON bbo_snapshots(ts_ms);
"""


def connect(path: str | Path, *, readonly: bool = False, what: str = "candles DB") -> sqlite3.Connection:
    """Open a store; read-only opens never create files, writable opens create parent dirs."""
    path = Path(path)
    if readonly:
        if not path.is_file():
            raise MarketDataError(f"{what} not found: {path}")
        uri = f"file:{quote(str(path.resolve()))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            raise MarketDataError(f"{what} unreadable: {path}: {exc}") from None
        return conn
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except (OSError, sqlite3.DatabaseError) as exc:
        raise MarketDataError(f"cannot open {what} for writing: {path}: {exc}") from None
    return conn


def table_exists(conn: sqlite3.Connection, name: str, schema: str = "main") -> bool:
    row = conn.execute(
        f"SELECT 1 FROM {schema}.sqlite_master WHERE type='table' AND name=?", (name,)
    ).fetchone()
    return row is not None


def table_columns(conn: sqlite3.Connection, name: str, schema: str = "main") -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA {schema}.table_info({name})")]


def require_candles_table(conn: sqlite3.Connection, path: str | Path) -> None:
    """Every column the candle readers select must exist: a DB with another schema is one line
    naming what it lacks, not an sqlite3 traceback from the first query."""
    if not table_exists(conn, "candles"):
        raise MarketDataError(f"no candles table in {path}")
    have = set(table_columns(conn, "candles"))
    missing = [c for c in CANDLE_COLUMNS[:9] if c not in have]
    if missing:
        raise MarketDataError(f"{path}: candles table lacks column(s) {', '.join(missing)}")


def ensure_candles_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(CANDLES_DDL)


def ensure_funding_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(FUNDING_DDL)


def ensure_universe_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(UNIVERSE_DDL)


def ensure_bbo_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(BBO_DDL)
