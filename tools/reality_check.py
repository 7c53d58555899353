"""Quick diagnostics for one symbol: what the trader did recently, per trading DB.

Read-only (DBs opened with mode=ro): safe to run against a live trader at any time. The default
DBs are the ones the paper and the live daemon use (tools/trading_dbs.py, as the daemon resolves
AI_QUANT_DB_PATH and AI_QUANT_MODE); a default that does not exist is listed as missing.

Exit codes: 0 every listed DB was read; 1 a DB named with --db is missing, a DB is unreadable or not
a trading DB, or no default DB exists (the report still lists the others; stderr has one line
naming the problems); 2 a bad flag or environment.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import typer

from live.runtime_log import HEARTBEAT_PREFIX, parse_heartbeat
from live.trading_db import iso_utc, now_ms
from strategy.cli_io import die
from tools.trading_dbs import SOURCES, TradingDbUnavailable, daemon_db_path, open_trading_db_ro

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
AUDIT_TS = "COALESCE(ts_ms, CAST(strftime('%s', timestamp) AS INTEGER) * 1000)"
TRADE_TS = "CAST(strftime('%s', timestamp) AS INTEGER) * 1000"
MAX_WINDOW_ROWS = 50
TRADE_COLS = "id, timestamp, type, action, price, size, pnl, balance, reason"
TRADE_HEADER = tuple(c.strip() for c in TRADE_COLS.split(","))
MAX_HOURS = 1e6  # ~114 years: beyond that the window start overflows SQLite's integer


def default_dbs() -> list[Path]:
    """The paper and the live daemon's DBs, as each daemon would resolve them from this environment."""
    paths: list[Path] = []
    for source in SOURCES:
        path = daemon_db_path(source)
        if path not in paths:
            paths.append(path)
    return paths


def report_db(db: Path, symbol: str, hours: float, now: int, last: int = 0) -> tuple[list[str], str | None]:
    """(report lines, problem): problem is None when the DB was read in full, else one phrase."""
    lines = [f"== {db}"]
    if not db.exists():
        return [*lines, "missing db"], f"{db}: missing"
    try:
        conn = open_trading_db_ro(db)
    except TradingDbUnavailable as exc:
        return [*lines, f"db_open_failed: {exc}"], str(exc)
    try:
        lines += _heartbeat(conn, now)
        since = now - int(hours * 3_600_000)
        lines += _audit_counts(conn, since, hours)
        lines += _trades_since(conn, symbol, since, hours)
        if last > 0:
            lines += _last_trades(conn, symbol, last)
    except sqlite3.Error as exc:
        lines.append(f"db_query_failed: {exc}")
        return lines, f"{db}: query failed ({exc})"
    finally:
        conn.close()
    return lines, None


def _heartbeat(conn: sqlite3.Connection, now: int) -> list[str]:
    row = conn.execute("SELECT ts_ms, message FROM runtime_logs WHERE message LIKE ? ORDER BY id DESC LIMIT 1",
                       (HEARTBEAT_PREFIX + "%",)).fetchone()
    if row is None:
        return ["heartbeat: none"]
    hb = parse_heartbeat(row[1]) or {}
    return [f"heartbeat: {(now - row[0]) / 1000:.0f}s ago kill={hb.get('kill')} kill_reason={hb.get('kill_reason')} "
            f"open_pos={hb.get('open_pos')} errors={hb.get('errors')} config_id={hb.get('config_id')}"]


def _audit_counts(conn: sqlite3.Connection, since: int, hours: float) -> list[str]:
    rows = conn.execute(f"SELECT event, COUNT(*) FROM audit_events WHERE {AUDIT_TS} >= ? AND event != '' "
                        "GROUP BY event ORDER BY COUNT(*) DESC, event", (since,)).fetchall()
    out = [f"audit events in the last {hours:g}h: {sum(r[1] for r in rows)}"]
    out += [f"  {event}: {count}" for event, count in rows]
    return out


def _trades_since(conn: sqlite3.Connection, symbol: str, since: int, hours: float) -> list[str]:
    where = f"WHERE symbol = ? AND {TRADE_TS} >= ?"
    total = conn.execute(f"SELECT COUNT(*) FROM trades {where}", (symbol, since)).fetchone()[0]
    rows = conn.execute(f"SELECT {TRADE_COLS} FROM trades {where} ORDER BY id DESC LIMIT ?",
                        (symbol, since, MAX_WINDOW_ROWS)).fetchall()
    shown = f" (newest {len(rows)} shown)" if total > len(rows) else ""
    return [f"trades of {symbol} in the last {hours:g}h: {total}{shown}", *_rows(rows)]


def _last_trades(conn: sqlite3.Connection, symbol: str, n: int) -> list[str]:
    rows = conn.execute(f"SELECT {TRADE_COLS} FROM trades WHERE symbol = ? ORDER BY id DESC LIMIT ?",
                        (symbol, n)).fetchall()
    return [f"last {len(rows)} trades of {symbol} (any age):", *_rows(rows)]


def _rows(rows: list) -> list[str]:
    """Trade rows under a header line, numbers rounded to 10 significant digits (no 0.30000000000000004),
    NULL as '-', so the columns can be read without knowing the schema."""
    if not rows:
        return []
    return ["  " + " ".join(TRADE_HEADER)] + ["  " + " ".join(_cell(x) for x in r) for r in rows]


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


@app.command()
def main(
    symbol: str = typer.Option("BTC", help="Symbol to inspect."),
    hours: float = typer.Option(2.0, help="Window in hours for the audit events and the trades."),
    last: int = typer.Option(0, help="Also list the last N trades of SYMBOL whatever their age."),
    db: list[Path] = typer.Option(None, help="Trading DB(s); default the paper and live DBs."),
) -> None:
    """Heartbeat, audit events by type and the trades of SYMBOL in the last --hours, per trading DB."""
    if not 0 < hours <= MAX_HOURS:
        die(f"--hours {hours}: must be a number > 0 and <= {MAX_HOURS:g}", 2)
    if last < 0:
        die(f"--last {last}: must be >= 0", 2)
    try:
        paths = list(db) if db else default_dbs()
    except TradingDbUnavailable as exc:
        die(str(exc), 2)
    now = now_ms()
    print(f"reality check {symbol.upper()} at {iso_utc(now)}")
    problems, missing_defaults = [], 0
    for path in paths:
        lines, problem = report_db(path, symbol.upper(), hours, now, last)
        print("\n".join(lines))
        if problem and not db and not path.exists():
            missing_defaults += 1  # a host may run only one of the two daemons
        elif problem:
            problems.append(problem)
    print("env: " + json.dumps({k: os.environ.get(k) for k in
                                 ("AI_QUANT_MODE", "AI_QUANT_KILL_SWITCH", "AI_QUANT_KILL_SWITCH_FILE")}))
    if missing_defaults == len(paths):
        problems.append(f"no trading DB found ({', '.join(str(p) for p in paths)}); pass --db")
    if problems:
        die("reality_check: " + "; ".join(problems), 1)


if __name__ == "__main__":
    app()
