"""Hourly funding rates: storage, loading, and the per-bar funding matrix the engines charge.

A bar is charged every funding event that falls inside it (bar_open <= time < bar_open + interval),
so the same funding is paid whether a replay runs on 5m or 1h bars.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import polars as pl

from marketdata.intervals import MarketDataError
from marketdata.sanity import iso_ms
from marketdata.sqlite_store import connect, ensure_funding_schema, table_exists

WHAT = "funding DB"
MAX_ABS_FUNDING_RATE = 1.0  # per event (hourly): Hyperliquid caps funding at 4 %/h, so 100 % is a bad row
_SCHEMA = {"symbol": pl.String, "time": pl.Int64, "funding_rate": pl.Float64, "premium": pl.Float64}


def _as_tuple(row) -> tuple:
    if isinstance(row, Mapping):
        return (row["symbol"], int(row["time"]), float(row["funding_rate"]), row.get("premium"))
    symbol, time_ms, rate, *rest = row
    return (symbol, int(time_ms), float(rate), rest[0] if rest else None)


def write_funding(db: str | Path, rows: Iterable) -> int:
    """INSERT OR IGNORE funding rows (dicts or tuples); returns how many were new."""
    data = [_as_tuple(r) for r in rows]
    conn = connect(db, what=WHAT)
    try:
        ensure_funding_schema(conn)
        before = conn.total_changes
        with conn:
            conn.executemany(
                "INSERT OR IGNORE INTO funding_rates (symbol, time, funding_rate, premium) VALUES (?,?,?,?)",
                data,
            )
        return conn.total_changes - before
    finally:
        conn.close()


def load_funding(db: str | Path, symbols: Iterable[str] | None = None, start_ms: int | None = None,
                 end_ms: int | None = None) -> pl.DataFrame:
    """Funding rows with start_ms <= time < end_ms, sorted by (symbol, time)."""
    conn = connect(db, readonly=True, what=WHAT)
    try:
        if not table_exists(conn, "funding_rates"):
            raise MarketDataError(f"no funding_rates table in {db}")
        where, args = [], []
        if symbols is not None:
            names = list(symbols)
            where.append(f"symbol IN ({','.join('?' * len(names))})")
            args.extend(names)
        if start_ms is not None:
            where.append("time>=?")
            args.append(int(start_ms))
        if end_ms is not None:
            where.append("time<?")
            args.append(int(end_ms))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        try:
            rows = conn.execute(
                f"SELECT symbol, time, funding_rate, premium, {_PROBLEM_SQL} FROM funding_rates{clause} "
                "ORDER BY symbol, time", args,
            ).fetchall()
        except sqlite3.DatabaseError as exc:  # another schema: one line, not a traceback
            raise MarketDataError(f"cannot read funding rates from {db}: {exc}") from None
    finally:
        conn.close()
    bad = next((r for r in rows if r[-1] is not None), None)
    if bad is not None:
        raise MarketDataError(f"corrupt funding row: {db} {bad[0]} {iso_ms(bad[1])} (time={bad[1]}): {bad[-1]}")
    return pl.DataFrame([r[:-1] for r in rows], schema=_SCHEMA, orient="row")


# Why a funding row would poison PnL (NULL when sane): the engines add every rate into the bar's
# funding, so one inf or text cell would make every later balance inf or crash the loader.
_PROBLEM_SQL = (
    "CASE WHEN typeof(time) != 'integer' THEN 'column time is ' || typeof(time) "
    "WHEN typeof(funding_rate) NOT IN ('integer','real') THEN 'column funding_rate is ' || "
    "CASE typeof(funding_rate) WHEN 'null' THEN 'NULL' ELSE typeof(funding_rate) || ' (' || "
    "substr(quote(funding_rate), 1, 40) || ')' END "
    "WHEN abs(funding_rate) = 9e999 THEN 'funding_rate=' || CASE WHEN funding_rate > 0 THEN 'inf' ELSE '-inf' END "
    "|| ' is not finite' "
    f"WHEN abs(funding_rate) > {MAX_ABS_FUNDING_RATE!r} THEN 'funding_rate=' || funding_rate || "
    f"' is beyond +-{MAX_ABS_FUNDING_RATE:g} per event' END")


def funding_matrix(db_path: str | Path | None, md) -> np.ndarray:
    """float64[nsym, nbar]: the sum of funding rates falling inside each bar (zeros without a DB)."""
    out = np.zeros((len(md.symbols), int(md.times.shape[0])), dtype=np.float64)
    if db_path is None or out.size == 0:
        return out
    t0 = int(md.times[0])
    end = int(md.times[-1]) + int(md.interval_ms)
    frame = load_funding(db_path, md.symbols, t0, end)
    if frame.height == 0:
        return out
    index = {s: i for i, s in enumerate(md.symbols)}
    sym_idx = np.array([index[s] for s in frame["symbol"].to_list()], dtype=np.int64)
    bar_idx = (frame["time"].to_numpy() - t0) // int(md.interval_ms)
    np.add.at(out, (sym_idx, bar_idx), frame["funding_rate"].to_numpy())
    return out
