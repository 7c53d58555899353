"""Archive old months of a hot candle DB into monthly partition DBs (runbook §3, AQC-204).

Dry-run by default. --apply copies (idempotent, INSERT OR IGNORE); --delete removes a month from the
hot DB only after verifying every row is in its partition; --vacuum compacts the hot DB afterwards.
Exit codes: 0 ok, 1 a month failed verification (nothing deleted for it) or a write failed (disk
full), 2 bad flags or a source that is not a candle DB, 3 missing source. Every refusal is one line.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress

from marketdata.intervals import MarketDataError, normalize_interval
from marketdata.partition import apply_partition, plan_partition
from marketdata.sqlite_store import connect, table_columns, table_exists
from strategy.cli_io import die

READER_COLUMNS = ("symbol", "interval", "t", "t_close", "o", "h", "l", "c", "v")

ROOT = Path(__file__).resolve().parents[1]
app = typer.Typer(add_completion=False, help=__doc__)
err = Console(stderr=True)


def _fail(message: str, code: int) -> None:
    die(f"partition_candles_db: {message}", code)


def check_source(src: Path) -> None:
    """Refuse a DB the candle readers could not read (no candles table, missing columns) before
    planning: archiving it would only copy the problem into every monthly partition."""
    conn = connect(src, readonly=True)
    try:
        if not table_exists(conn, "candles"):
            raise MarketDataError(f"no candles table in {src}")
        missing = [c for c in READER_COLUMNS if c not in table_columns(conn, "candles")]
    finally:
        conn.close()
    if missing:
        raise MarketDataError(f"{src}: candles table lacks column(s) {', '.join(missing)}")


@app.command()
def run(
    interval: str = typer.Option(..., help="candle interval, e.g. 5m (1H / 1hr accepted)"),
    src_db: Path = typer.Option(None, help="hot DB (default ROOT/candles_dbs/candles_{interval}.db)"),
    out_dir: Path = typer.Option(None, help="partition dir (default <src dir>/partitions/{interval})"),
    keep_days: float = typer.Option(90, help="rows newer than now - keep_days stay only in the hot DB"),
    apply: bool = typer.Option(False, "--apply", help="write partitions (otherwise dry-run)"),
    delete: bool = typer.Option(False, "--delete", help="delete verified months from the hot DB (needs --apply)"),
    vacuum: bool = typer.Option(False, "--vacuum", help="VACUUM the hot DB after deleting (needs --delete)"),
    now_ms: int = typer.Option(None, help="evaluate as if now were this epoch ms (tests)"),
) -> None:
    try:
        iv = normalize_interval(interval)
    except MarketDataError as exc:
        _fail(f"--interval: {exc}", 2)
    if keep_days < 1:
        _fail(f"--keep-days must be >= 1, got {keep_days:g}", 2)
    if delete and not apply:
        _fail("--delete needs --apply", 2)
    if vacuum and not (apply and delete):
        _fail("--vacuum needs --apply --delete", 2)
    env_dir = os.environ.get("AI_QUANT_CANDLES_DB_DIR")
    src = src_db or (Path(env_dir) if env_dir else ROOT / "candles_dbs") / f"candles_{iv}.db"
    if not src.is_file():
        _fail(f"source DB not found: {src}", 3)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        check_source(src)
        plan = plan_partition(src, iv, keep_days, now, out_dir)
    except MarketDataError as exc:
        _fail(str(exc), 2)
    except sqlite3.Error as exc:
        _fail(f"cannot read {src}: {exc}", 2)
    if apply and plan.months:
        _apply(plan, delete, vacuum)
    failed = [m for m in plan.months if apply and not m.verified]
    _report(plan, apply, delete)
    raise typer.Exit(1 if failed else 0)


def _apply(plan, delete: bool, vacuum: bool) -> None:
    """Copy (and delete) the planned months; a write that fails (disk full, read-only partition dir)
    is one line and exit 1. Months already copied stay: the copy is idempotent, so a rerun resumes."""
    try:
        with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
            task = bar.add_task(f"archiving {plan.interval}", total=len(plan.months))
            apply_partition(plan, delete=delete, vacuum=vacuum, on_month=lambda _m: bar.advance(task))
    except MarketDataError as exc:
        _fail(str(exc), 1)
    except (sqlite3.Error, OSError) as exc:
        _fail(f"archiving into {plan.out_dir} failed: {exc}", 1)


def _report(plan, apply: bool, delete: bool) -> None:
    months = [{"month": m.month, "rows": m.rows, "partition": str(m.partition), "copied": m.copied,
               "verified": m.verified, "deleted": m.deleted, "detail": m.detail} for m in plan.months]
    out = {"src_db": str(plan.src_db), "out_dir": str(plan.out_dir), "interval": plan.interval,
           "cutoff_ms": plan.cutoff_ms, "mode": "delete" if delete else "apply" if apply else "dry-run",
           "rows_to_archive": plan.rows_to_archive, "months": months}
    sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")
    for m in plan.months:
        state = f"copied={m.copied} verified={m.verified} deleted={m.deleted} {m.detail}" if apply else "(dry-run)"
        err.print(f"{m.month}: {m.rows} rows -> {m.partition.name} {state}", highlight=False)
    err.print(f"rows_to_archive={plan.rows_to_archive} months={len(plan.months)} mode={out['mode']}", highlight=False)


if __name__ == "__main__":
    app(prog_name="partition_candles_db.py")
