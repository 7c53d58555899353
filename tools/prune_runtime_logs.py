"""Delete runtime_logs rows older than N days from a trading DB (run daily by a systemd timer).

Deletes in small batches so a running trader, which writes the same table, never waits long on
the lock.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

import typer

from live.env import EnvError, env_int
from live.trading_db import iso_utc, now_ms
from tools.trading_dbs import TradingDbUnavailable, daemon_db_path

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
BATCH = 5000


def fail(message: str, code: int = 2) -> None:
    print(message, file=sys.stderr)
    raise typer.Exit(code)


def _connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=15, isolation_level=None)
    for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA busy_timeout=15000"):
        try:
            conn.execute(pragma)
        except sqlite3.Error:
            pass
    return conn


def prune(db: Path, keep_days: int, *, dry_run: bool = False, vacuum: bool = False,
          now: int | None = None) -> int:
    """Rows deleted (or that would be); retries a locked DB three times."""
    cutoff = (now_ms() if now is None else now) - keep_days * 86_400_000
    for attempt in range(4):
        try:
            return _prune_once(db, cutoff, dry_run, vacuum)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or attempt == 3:
                raise
            time.sleep(0.25 * (attempt + 1))
    return 0


def _prune_once(db: Path, cutoff: int, dry_run: bool, vacuum: bool) -> int:
    conn = _connect(db)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='runtime_logs'").fetchone() is None:
            return 0
        if dry_run:
            return int(conn.execute("SELECT COUNT(*) FROM runtime_logs WHERE ts_ms < ?", (cutoff,)).fetchone()[0])
        total = 0
        while True:
            n = conn.execute("DELETE FROM runtime_logs WHERE id IN "
                             "(SELECT id FROM runtime_logs WHERE ts_ms < ? LIMIT ?)", (cutoff, BATCH)).rowcount
            total += n
            if n < BATCH:
                break
        if vacuum and total:
            conn.execute("VACUUM")
        return total
    finally:
        conn.close()


@app.command()
def main(
    keep_days: int = typer.Option(None, help="Keep this many days (default AI_QUANT_RUNTIME_LOG_KEEP_DAYS or 14)."),
    db: Path = typer.Option(None, help="Trading DB (default: the DB the daemon of this environment uses)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count the rows only."),
    vacuum: bool = typer.Option(False, "--vacuum", help="VACUUM after deleting (briefly locks the DB)."),
) -> None:
    """Prune old runtime_logs rows."""
    if keep_days is None:
        try:
            keep_days = env_int(os.environ, "AI_QUANT_RUNTIME_LOG_KEEP_DAYS", 14, lo=1)
        except EnvError as exc:
            fail(str(exc))
    if keep_days < 1:
        fail(f"--keep-days {keep_days}: must be >= 1")
    if db is not None:
        db = db.expanduser()
        if not db.is_file():
            fail(f"--db {db}: no such file")
    else:
        try:
            db = daemon_db_path()  # the DB this environment's daemon writes (mode-aware, like the trader)
        except TradingDbUnavailable as exc:
            fail(str(exc))
        if not db.is_file():
            print(f"nothing to prune: no DB at {db} (the daemon's DB for this environment; pass --db)",
                  file=sys.stderr)
            return
    cutoff_iso = iso_utc(now_ms() - keep_days * 86_400_000)
    try:
        n = prune(db, keep_days, dry_run=dry_run, vacuum=vacuum)
    except sqlite3.Error as exc:
        fail(f"{db}: {exc}", 1)
    verb = "would prune" if dry_run else "pruned"
    print(f"{verb} {n} runtime_logs rows older than {cutoff_iso} from {db}", file=sys.stderr)


if __name__ == "__main__":
    app()
