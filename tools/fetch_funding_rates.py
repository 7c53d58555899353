"""Backfill hourly funding rates from Hyperliquid into funding_rates.db (runbook §3).

Each symbol resumes from its newest stored time (+1 ms), else from now - --days; pages on the last
time returned; rows are INSERT OR IGNORE so re-runs are harmless. Only 429/503 are retried (3 times,
0.5/1/2 s); any other error skips that symbol. Exit 0, or 3 when the exchange client cannot start.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress

from marketdata.checks import default_candles_dir
from marketdata.funding import write_funding
from marketdata.hl_fetch import fetch_funding_pages
from marketdata.intervals import MarketDataError
from marketdata.sqlite_store import connect, ensure_funding_schema

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
    if days <= 0:
        typer.echo(f"fetch_funding_rates: --days must be > 0, got {days:g}", err=True)
        raise typer.Exit(2)
    path = db or default_candles_dir() / "funding_rates.db"
    names = split_symbols(symbols) or default_symbols()
    url = base_url or os.environ.get("AI_QUANT_HL_BASE_URL") or DEFAULT_BASE_URL
    now = int(time.time() * 1000)
    try:
        starts = resume_points(path, names, now - int(days * 86_400_000))
    except MarketDataError as exc:
        typer.echo(f"fetch_funding_rates: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        from hyperliquid.info import Info

        info = Info(url, skip_ws=True, timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the exchange
        typer.echo(f"fetch_funding_rates: cannot reach {url}: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(3) from None
    results = {}
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("funding", total=len(names))
        for symbol in names:
            results[symbol] = _fetch_symbol(info, path, symbol, starts[symbol], now)
            bar.advance(task)
    sys.stdout.write(json.dumps({"db": str(path), "symbols": results}, sort_keys=True) + "\n")
    total = sum(r["inserted"] for r in results.values())
    failed = [s for s, r in results.items() if r.get("error")]
    typer.echo(f"fetch_funding_rates: inserted {total} rows for {len(names)} symbols into {path}"
               + (f"; failed: {','.join(failed)}" if failed else ""), err=True)


def _fetch_symbol(info, path: Path, symbol: str, start_ms: int, end_ms: int) -> dict:
    try:
        rows = fetch_funding_pages(info, symbol, start_ms, end_ms)
    except Exception as exc:  # noqa: BLE001 - one bad symbol must not stop the others
        typer.echo(f"fetch_funding_rates: {symbol}: {type(exc).__name__}: {exc}", err=True)
        return {"start_ms": start_ms, "fetched": 0, "inserted": 0, "error": f"{type(exc).__name__}: {exc}"}
    return {"start_ms": start_ms, "fetched": len(rows), "inserted": write_funding(path, rows)}


if __name__ == "__main__":
    app(prog_name="fetch_funding_rates.py")
