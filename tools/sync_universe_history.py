"""Record the current Hyperliquid perp universe in universe_history.db (runbook §3, AQC-205).

Run hourly: every snapshot widens each symbol's [first_seen, last_seen] bounds, which backtests use
to avoid survivorship bias. Exit codes: 0 ok, 2 cannot create the DB folder, 3 fetch error,
4 empty universe.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import typer

from marketdata.checks import default_candles_dir
from marketdata.hl_fetch import call_with_retry, universe_names
from marketdata.intervals import MarketDataError
from marketdata.universe import apply_snapshot, normalize_symbols

DEFAULT_BASE_URL = "https://api.hyperliquid.xyz"
app = typer.Typer(add_completion=False, help=__doc__)


def _timeout_default() -> float:
    try:
        value = float(os.environ.get("AI_QUANT_HL_TIMEOUT_S", "10"))
    except ValueError:
        value = 10.0
    return value


@app.command()
def run(
    db: Path = typer.Option(None, help="universe DB (default <candles dir>/universe_history.db)"),
    ts_ms: int = typer.Option(0, help="snapshot time in epoch ms (0 = now)"),
    base_url: str = typer.Option(None, help="API base URL (default $AI_QUANT_HL_BASE_URL or mainnet)"),
    timeout_s: float = typer.Option(None, help="HTTP timeout, clamped to 0.5..30 (default $AI_QUANT_HL_TIMEOUT_S or 10)"),
) -> None:
    path = db or default_candles_dir() / "universe_history.db"
    url = base_url or os.environ.get("AI_QUANT_HL_BASE_URL") or DEFAULT_BASE_URL
    timeout = min(30.0, max(0.5, timeout_s if timeout_s is not None else _timeout_default()))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        typer.echo(f"sync_universe_history: cannot create {path.parent}: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        from hyperliquid.info import Info

        info = Info(url, skip_ws=True, timeout=timeout)
        names = normalize_symbols(universe_names(call_with_retry(info.meta)))
    except Exception as exc:  # noqa: BLE001 - any failure to reach the exchange
        typer.echo(f"sync_universe_history: fetch from {url} failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(3) from None
    if not names:
        typer.echo(f"sync_universe_history: empty perp universe from {url}; nothing recorded", err=True)
        raise typer.Exit(4)
    snapshot_ms = ts_ms or int(time.time() * 1000)
    try:
        count = apply_snapshot(path, snapshot_ms, names)
    except MarketDataError as exc:
        typer.echo(f"sync_universe_history: {exc}", err=True)
        raise typer.Exit(2) from None
    sys.stdout.write(json.dumps({"db": str(path), "ts_ms": snapshot_ms, "symbols": count}, sort_keys=True) + "\n")
    typer.echo(f"sync_universe_history: recorded {count} symbols at {snapshot_ms} in {path}", err=True)


if __name__ == "__main__":
    app(prog_name="sync_universe_history.py")
