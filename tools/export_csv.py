"""Export the trade history of a trading DB as CSV (all columns of `trades`).

The default DB is the one the daemon of this environment uses (tools/trading_dbs.py). Exit codes:
0 written; 1 the DB is missing, unreadable or not a trading DB, or the CSV cannot be written (one
line, no file); 2 a bad flag.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import sqlite3
import sys
from pathlib import Path

import typer

from live.env import REPO_ROOT
from live.trading_db import iso_to_ms, now_ms
from strategy.cli_io import OutputError, check_output_path, die, write_output
from tools.trading_dbs import TradingDbUnavailable, daemon_db_path, open_trading_db_ro

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def trades_csv(db: Path, hours: float) -> tuple[str, int]:
    """CSV text and row count; hours <= 0 means every trade."""
    since = now_ms() - int(hours * 3_600_000) if hours > 0 else None
    conn = open_trading_db_ro(db)
    try:
        cur = conn.execute("SELECT * FROM trades ORDER BY id")
        header = [d[0] for d in cur.description]
        ts_col = header.index("timestamp")
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        n = 0
        for row in cur:
            ts = iso_to_ms(row[ts_col])
            if since is not None and (ts is None or ts < since):
                continue
            writer.writerow(row)
            n += 1
    finally:
        conn.close()
    return buf.getvalue(), n


@app.command()
def main(
    db: Path = typer.Option(None, help="Trading DB (default: the DB the daemon of this environment uses)."),
    hours: float = typer.Option(0.0, help="Only the last N hours (0 = all trades)."),
    out: Path = typer.Option(None, "--out", "--output", help="CSV path (default <repo>/exports/trades_<UTC time>.csv)."),
) -> None:
    """Write the trades table as CSV and print its path."""
    if not math.isfinite(hours) or not 0 <= hours <= 1e6:
        die(f"--hours {hours}: must be a number >= 0 and <= 1e6", 2)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = out or REPO_ROOT / "exports" / f"trades_{stamp}.csv"
    try:
        check_output_path(out, "--out")
        db = db or daemon_db_path()
        text, n = trades_csv(db, hours)
        write_output(out, text, "--out")
    except sqlite3.Error as exc:
        die(f"{db}: unreadable ({exc})", 1)
    except (TradingDbUnavailable, OutputError) as exc:
        die(str(exc), 1)
    print(f"{n} trades -> {out}", file=sys.stderr)
    print(out)


if __name__ == "__main__":
    app()
