"""Perp universe history: when each symbol was first and last seen listed on the exchange.

Backtests that only use symbols listed today suffer survivorship bias; snapshots taken over time
give each symbol a [first_seen, last_seen] span that a backtest window can be filtered by.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from marketdata.intervals import MarketDataError
from marketdata.sqlite_store import connect, ensure_universe_schema, table_exists

WHAT = "universe DB"


def normalize_symbols(symbols: Iterable[str]) -> list[str]:
    """Upper-case, trimmed, de-duplicated, empty names dropped, sorted."""
    return sorted({str(s).strip().upper() for s in symbols if s is not None and str(s).strip()})


def apply_snapshot(db: str | Path, ts_ms: int, symbols: Iterable[str]) -> int:
    """Record one universe snapshot and widen each symbol's bounds; idempotent and order independent."""
    names = normalize_symbols(symbols)
    ts = int(ts_ms)
    conn = connect(db, what=WHAT)
    try:
        ensure_universe_schema(conn)
        with conn:
            conn.executemany("INSERT OR IGNORE INTO universe_snapshots (ts_ms, symbol) VALUES (?, ?)",
                             [(ts, s) for s in names])
            conn.executemany(
                "INSERT INTO universe_listings (symbol, first_seen_ms, last_seen_ms) VALUES (?, ?, ?) "
                "ON CONFLICT(symbol) DO UPDATE SET "
                "first_seen_ms=MIN(first_seen_ms, excluded.first_seen_ms), "
                "last_seen_ms=MAX(last_seen_ms, excluded.last_seen_ms)",
                [(s, ts, ts) for s in names],
            )
    finally:
        conn.close()
    return len(names)


def listings(db: str | Path) -> dict[str, tuple[int, int]]:
    """{symbol: (first_seen_ms, last_seen_ms)}."""
    conn = connect(db, readonly=True, what=WHAT)
    try:
        if not table_exists(conn, "universe_listings"):
            raise MarketDataError(f"no universe_listings table in {db}")
        rows = conn.execute("SELECT symbol, first_seen_ms, last_seen_ms FROM universe_listings").fetchall()
    finally:
        conn.close()
    return {s: (int(a), int(b)) for s, a, b in rows}


def universe_filter(symbols: Iterable[str], db: str | Path, start_ms: int, end_ms: int) -> list[str]:
    """Keep the symbols listed at some point of [start_ms, end_ms] (input order and spelling kept)."""
    bounds = listings(db)
    kept = []
    for symbol in symbols:
        span = bounds.get(str(symbol).strip().upper())
        if span is not None and span[0] <= int(end_ms) and span[1] >= int(start_ms):
            kept.append(symbol)
    return kept
