"""Quick diagnostics for one symbol: what the trader did recently, per trading DB.

Read-only (DBs opened with mode=ro): safe to run against a live trader at any time.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import typer

from live.env import REPO_ROOT
from live.runtime_log import HEARTBEAT_PREFIX, parse_heartbeat
from live.trading_db import iso_utc, now_ms

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
AUDIT_TS = "COALESCE(ts_ms, CAST(strftime('%s', timestamp) AS INTEGER) * 1000)"
TRADE_TS = "CAST(strftime('%s', timestamp) AS INTEGER) * 1000"
MAX_WINDOW_ROWS = 50
TRADE_COLS = "id, timestamp, type, action, price, size, pnl, balance, reason"


def default_dbs() -> list[Path]:
    return [Path(os.environ.get("AI_QUANT_PAPER_DB_PATH") or REPO_ROOT / "trading_engine.db"),
            Path(os.environ.get("AI_QUANT_LIVE_DB_PATH") or REPO_ROOT / "trading_engine_live.db")]


def report_db(db: Path, symbol: str, hours: float, now: int, last: int = 0) -> list[str]:
    if not db.exists():
        return [f"== {db}", "missing db"]
    lines = [f"== {db}"]
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        return [*lines, f"db_open_failed: {exc}"]
    try:
        lines += _heartbeat(conn, now)
        since = now - int(hours * 3_600_000)
        lines += _audit_counts(conn, since, hours)
        lines += _trades_since(conn, symbol, since, hours)
        if last > 0:
            lines += _last_trades(conn, symbol, last)
    except sqlite3.Error as exc:
        lines.append(f"db_query_failed: {exc}")
    finally:
        conn.close()
    return lines


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
    return ["  " + " ".join(str(x) for x in r) for r in rows]


@app.command()
def main(
    symbol: str = typer.Option("BTC", help="Symbol to inspect."),
    hours: float = typer.Option(2.0, help="Window in hours for the audit events and the trades."),
    last: int = typer.Option(0, help="Also list the last N trades of SYMBOL whatever their age."),
    db: list[Path] = typer.Option(None, help="Trading DB(s); default the paper and live DBs."),
) -> None:
    """Heartbeat, audit events by type and the trades of SYMBOL in the last --hours, per trading DB."""
    if hours <= 0:
        print(f"--hours {hours}: must be > 0", file=sys.stderr)
        raise typer.Exit(2)
    if last < 0:
        print(f"--last {last}: must be >= 0", file=sys.stderr)
        raise typer.Exit(2)
    now = now_ms()
    print(f"reality check {symbol.upper()} at {iso_utc(now)}")
    for path in db or default_dbs():
        print("\n".join(report_db(path, symbol.upper(), hours, now, last)))
    print("env: " + json.dumps({k: os.environ.get(k) for k in
                                 ("AI_QUANT_MODE", "AI_QUANT_KILL_SWITCH", "AI_QUANT_KILL_SWITCH_FILE")}))


if __name__ == "__main__":
    app()
