"""Backfill hourly funding rates from Hyperliquid into funding_rates.db (runbook §3).

Each symbol resumes from its newest stored time (+1 ms), else from now - --days; pages on the last
time returned; rows are INSERT OR IGNORE so re-runs are harmless. Only 429/503 are retried (3 times,
0.5/1/2 s); any other error skips that symbol.

A new DB is built in a hidden temp file beside the target and renamed into place only when rows
were fetched: a failed first fetch leaves no empty funding DB, which a replay would read as "zero
funding" without a word. Exit codes: 0 every symbol fetched; 1 a symbol failed or nothing was
fetched into a new DB (the other symbols' rows are kept); 2 a bad flag or a DB that is not a funding
DB; 3 the exchange client cannot start. Each refusal is one line on stderr.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress

from marketdata.checks import default_candles_dir
from marketdata.funding import write_funding
from marketdata.hl_fetch import fetch_funding_pages
from marketdata.intervals import MarketDataError
from marketdata.sqlite_store import connect, ensure_funding_schema, table_exists
from strategy.cli_io import die

DEFAULT_BASE_URL = "https://api.hyperliquid.xyz"
UNIVERSE_ENV = Path("~/.config/openclaw/ai-quant-universe.env").expanduser()
app = typer.Typer(add_completion=False, help=__doc__)
err = Console(stderr=True)


def default_symbols() -> list[str]:
    """AI_QUANT_SYMBOLS, else AI_QUANT_SIDECAR_SYMBOLS= in the universe env file, else BTC,ETH,SOL."""
    text = os.environ.get("AI_QUANT_SYMBOLS", "")
    if not text.strip() and UNIVERSE_ENV.is_file():
        for line in UNIVERSE_ENV.read_text().splitlines():
            if line.strip().startswith("AI_QUANT_SIDECAR_SYMBOLS="):
                text = line.split("=", 1)[1].strip().strip("'\"")
    return split_symbols(text) or ["BTC", "ETH", "SOL"]


def split_symbols(text: str | None) -> list[str]:
    return list(dict.fromkeys(s.strip().upper() for s in (text or "").split(",") if s.strip()))


def check_existing(db: Path) -> None:
    """Refuse to add a funding table to another program's SQLite file (a candles DB named by mistake)."""
    conn = connect(db, readonly=True, what="funding DB")
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                             "AND name NOT LIKE 'sqlite_%'")]
        if tables and not table_exists(conn, "funding_rates"):
            raise MarketDataError(f"{db} is not a funding DB (it holds {', '.join(sorted(tables)[:5])})")
    except sqlite3.Error as exc:
        raise MarketDataError(f"funding DB unreadable: {db}: {exc}") from None
    finally:
        conn.close()


def resume_points(db: Path, symbols: list[str], default_start_ms: int) -> dict[str, int]:
    conn = connect(db, what="funding DB")
    try:
        ensure_funding_schema(conn)
        latest = dict(conn.execute("SELECT symbol, MAX(time) FROM funding_rates GROUP BY symbol").fetchall())
    finally:
        conn.close()
    return {s: latest[s] + 1 if latest.get(s) is not None else default_start_ms for s in symbols}


@app.command()
def run(
    days: float = typer.Option(30.0, help="history to fetch for a symbol with no stored rows"),
    db: Path = typer.Option(None, help="funding DB (default <candles dir>/funding_rates.db)"),
    symbols: str = typer.Option(None, help="comma-separated symbols (default $AI_QUANT_SYMBOLS, ...)"),
    base_url: str = typer.Option(None, help="API base URL (default $AI_QUANT_HL_BASE_URL or mainnet)"),
    timeout_s: float = typer.Option(10.0, help="HTTP timeout per request"),
) -> None:
    if not 0 < days <= 36_500:
        die(f"fetch_funding_rates: --days must be > 0 and <= 36500, got {days:g}", 2)
    if not 0 < timeout_s <= 600:
        die(f"fetch_funding_rates: --timeout-s must be > 0 and <= 600, got {timeout_s:g}", 2)
    path = db or default_candles_dir() / "funding_rates.db"
    names = split_symbols(symbols) or default_symbols()
    url = base_url or os.environ.get("AI_QUANT_HL_BASE_URL") or DEFAULT_BASE_URL
    now = int(time.time() * 1000)
    with _work_db(path) as work:
        results = _fetch_all(work.db, names, url, timeout_s, now - int(days * 86_400_000), now)
        total = sum(r["inserted"] for r in results.values())
        work.keep = total > 0
    sys.stdout.write(json.dumps({"db": str(path), "symbols": results}, sort_keys=True) + "\n")
    failed = _failures(results)
    if not work.keep and not work.existed:
        die(f"fetch_funding_rates: no funding rows fetched; {path} not created{failed}", 1)
    line = f"fetch_funding_rates: inserted {total} rows for {len(names)} symbols into {path}{failed}"
    if failed:
        die(line, 1)
    typer.echo(line, err=True)


def _failures(results: dict) -> str:
    """'; failed: BTC, ETH (BTC: ServerError: ...)' or '': the symbols' errors in the summary line, so
    stderr stays one line (each error is also in the JSON on stdout)."""
    failed = [s for s, r in results.items() if r.get("error")]
    if not failed:
        return ""
    first = str(results[failed[0]]["error"]).splitlines()[0][:200] if results[failed[0]]["error"] else ""
    return f"; failed: {', '.join(failed)} ({failed[0]}: {first})"


class _Work:
    """Where this run writes: the DB itself when it exists, else a temp file renamed on success."""

    def __init__(self, path: Path):
        self.path, self.existed, self.keep = path, path.exists(), False
        self.db = path if self.existed else path.with_name(f".{path.name}.partial-{os.getpid()}")


@contextmanager
def _work_db(path: Path) -> Iterator[_Work]:
    """Yield the DB to write; a new one appears at `path` only if the body sets keep (rows fetched),
    otherwise (or on any error or exit) its temp file and WAL side files are removed."""
    work = _Work(path)
    if work.existed:
        try:
            check_existing(path)
        except MarketDataError as exc:
            die(f"fetch_funding_rates: {exc}", 2)
    try:
        yield work
        if work.keep and not work.existed:
            _checkpoint(work.db)  # every row in the main file before it is renamed (WAL names follow it)
            os.replace(work.db, path)
    finally:
        if not work.existed:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{work.db}{suffix}").unlink(missing_ok=True)


def _checkpoint(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _fetch_all(db: Path, names: list[str], url: str, timeout_s: float, start_ms: int, now: int) -> dict:
    """Fetch every symbol into `db`; one line and exit 2 (bad DB) or 3 (no exchange client)."""
    try:
        starts = resume_points(db, names, start_ms)
    except MarketDataError as exc:
        die(f"fetch_funding_rates: {exc}", 2)
    try:
        from hyperliquid.info import Info

        info = Info(url, skip_ws=True, timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the exchange
        die(f"fetch_funding_rates: cannot reach {url}: {type(exc).__name__}: {exc}", 3)
    results = {}
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("funding", total=len(names))
        for symbol in names:
            results[symbol] = _fetch_symbol(info, db, symbol, starts[symbol], now)
            bar.advance(task)
    return results


def _fetch_symbol(info, path: Path, symbol: str, start_ms: int, end_ms: int) -> dict:
    try:
        rows = fetch_funding_pages(info, symbol, start_ms, end_ms)
    except Exception as exc:  # noqa: BLE001 - one bad symbol must not stop the others
        return {"start_ms": start_ms, "fetched": 0, "inserted": 0, "error": f"{type(exc).__name__}: {exc}"}
    return {"start_ms": start_ms, "fetched": len(rows), "inserted": write_funding(path, rows)}


if __name__ == "__main__":
    app(prog_name="fetch_funding_rates.py")
