"""`trader`: the paper / dry_live daemon (`trader run`, also `python -m live`)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Paper / dry_live / live trading daemon.")
err = Console(stderr=True)


@app.command()
def run(
    mode: Annotated[str | None, typer.Option(help="paper | dry_live | live (default: AI_QUANT_MODE, else paper)")] = None,
    until_caught_up: Annotated[bool, typer.Option("--until-caught-up", help="Process every closed bar, then exit")] = False,
) -> None:
    """Run the canonical engine on closed bars; every setting comes from AI_QUANT_* (see .env.example)."""
    from live.daemon import DaemonError, TraderDaemon
    from live.env import EnvError, load_settings
    from live.lock import LockHeldError
    from marketdata.intervals import MarketDataError
    from strategy.config import ConfigError

    env = dict(os.environ)
    if mode:
        env["AI_QUANT_MODE"] = mode
    try:
        settings = load_settings(env)
        code = TraderDaemon(settings, until_caught_up=until_caught_up).run()
    except (EnvError, DaemonError, LockHeldError, ConfigError, MarketDataError, PermissionError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@app.command("market-data")
def market_data() -> None:
    """Keep candle DBs fresh from Hyperliquid (WS + REST): arrives with the live-trading issue."""
    err.print("error: the market-data service is not available in this version yet (live-trading issue)")
    raise typer.Exit(2)


@app.command()
def monitor(
    bind: Annotated[str | None, typer.Option(help="Listen address (default: AIQ_MONITOR_BIND, else 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port, 0 = any free port (default: AIQ_MONITOR_PORT, else 61010)")] = None,
) -> None:
    """Read-only live desk over the trading DBs: page at /, /api/snapshot, /api/health, Prometheus /metrics.

    DBs: AIQ_MONITOR_PAPER_DB, AIQ_MONITOR_LIVE_DB; optional bearer token AIQ_MONITOR_TOKEN (docs/MONITOR.md).
    """
    from live.monitor.server import run_monitor

    raise typer.Exit(run_monitor(bind=bind, port=port))


if __name__ == "__main__":
    app()
