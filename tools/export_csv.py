"""Export the trade history of a trading DB as CSV (all columns of `trades`)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import sqlite3
import sys
from pathlib import Path

import typer

from live.env import REPO_ROOT
from live.trading_db import atomic_write_text, iso_to_ms, now_ms

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def fail(message: str, code: int = 1) -> None:
    print(message, file=sys.stderr)
    raise typer.Exit(code)


def trades_csv(db: Path, hours: float) -> tuple[str, int]:
    """CSV text and row count; hours <= 0 means every trade."""
    since = now_ms() - int(hours * 3_600_000) if hours > 0 else None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
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
    db: Path = typer.Option(None, help="Trading DB (default AI_QUANT_DB_PATH or <repo>/trading_engine.db)."),
    hours: float = typer.Option(0.0, help="Only the last N hours (0 = all trades)."),
    out: Path = typer.Option(None, help="CSV path (default <repo>/exports/trades_<UTC time>.csv)."),
) -> None:
    """Write the trades table as CSV and print its path."""
    db = db or Path(os.environ.get("AI_QUANT_DB_PATH") or REPO_ROOT / "trading_engine.db")
    if not db.exists():
        fail(f"{db}: no such trading DB")
    if hours < 0:
        fail(f"--hours {hours}: must be >= 0", 2)
    try:
        text, n = trades_csv(db, hours)
    except sqlite3.Error as exc:
        fail(f"{db}: {exc}")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = out or REPO_ROOT / "exports" / f"trades_{stamp}.csv"
    atomic_write_text(out, text)
    print(f"{n} trades -> {out}", file=sys.stderr)
    print(out)


if __name__ == "__main__":
    app()
