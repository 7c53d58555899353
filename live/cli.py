"""`trader`: the paper / dry_live daemon (`trader run`, also `python -m live`)."""

from __future__ import annotations

import os
import re
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Paper / dry_live / live trading daemon.")
err = Console(stderr=True)


# `trader run` flags and the variable each one sets: a flag wins over the environment.
RUN_FLAGS = {
    "config": ("--config", "AI_QUANT_STRATEGY_YAML"),
    "candles_dir": ("--candles-dir", "AI_QUANT_CANDLES_DB_DIR"),
    "db": ("--db", "AI_QUANT_DB_PATH"),
    "symbols": ("--symbols", "AI_QUANT_SYMBOLS"),
    "funding_db": ("--funding-db", "AI_QUANT_FUNDING_DB"),
    "interval": ("--interval", "AI_QUANT_INTERVAL"),
    "mode": ("--mode", "AI_QUANT_MODE"),
}
PATH_FLAGS = ("config", "candles_dir", "db", "funding_db")


def name_flags(message: str) -> str:
    """Errors name a setting by its variable; say the flag too, so either fix is obvious."""
    for flag, var in RUN_FLAGS.values():
        message = re.sub(rf"(?<![-\w]){var}\b", f"{flag} / {var}", message)
    return message


def run_env(base: dict, **flags) -> dict:
    """The environment the daemon reads, with each given flag written into its variable (paths are
    relative to the caller's directory, as a shell user expects; variables stay repo-relative)."""
    env = dict(base)
    for key, value in flags.items():
        if value is None:
            continue
        env[RUN_FLAGS[key][1]] = os.path.abspath(os.path.expanduser(value)) if key in PATH_FLAGS else value
    return env


@app.command()
def run(
    mode: Annotated[str | None, typer.Option(help="paper | dry_live | live [AI_QUANT_MODE, default paper]")] = None,
    config: Annotated[str | None, typer.Option(
        help="Strategy YAML [AI_QUANT_STRATEGY_YAML, default config/strategy_overrides.yaml]")] = None,
    candles_dir: Annotated[str | None, typer.Option(
        help="Folder of candles_<interval>.db [AI_QUANT_CANDLES_DB_DIR, default candles_dbs]")] = None,
    db: Annotated[str | None, typer.Option(
        help="Trading DB [AI_QUANT_DB_PATH, default trading_engine.db (paper) / trading_engine_live.db]")] = None,
    symbols: Annotated[str | None, typer.Option(help="Comma list [AI_QUANT_SYMBOLS, default every symbol in the DB]")] = None,
    funding_db: Annotated[str | None, typer.Option(help="Funding rates DB [AI_QUANT_FUNDING_DB, default none]")] = None,
    interval: Annotated[str | None, typer.Option(help="Bar interval [AI_QUANT_INTERVAL, default the config's]")] = None,
    until_caught_up: Annotated[bool, typer.Option("--until-caught-up", help="Process every closed bar, then exit")] = False,
) -> None:
    """Run the canonical engine on closed bars. Each flag overrides the AI_QUANT_* variable in brackets;
    every other setting comes from the environment (see .env.example).

    A first paper run: `trader run --config config/strategy_overrides.yaml.example --candles-dir
    candles_dbs --db paper.db --until-caught-up`.
    """
    from live.daemon import DaemonError, TraderDaemon
    from live.env import EnvError, load_settings
    from live.lock import LockError
    from live.trading_db import TradingDbError
    from marketdata.intervals import MarketDataError
    from strategy.config import ConfigError

    env = run_env(os.environ, mode=mode, config=config, candles_dir=candles_dir, db=db, symbols=symbols,
                  funding_db=funding_db, interval=interval)
    try:
        settings = load_settings(env)
        code = TraderDaemon(settings, until_caught_up=until_caught_up).run()
    except (EnvError, DaemonError, LockError, TradingDbError, ConfigError, MarketDataError, PermissionError) as exc:
        err.print(f"[red]error:[/red] {name_flags(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@app.command("market-data")
def market_data(
    symbols: Annotated[str | None, typer.Option(help="Comma list [AI_QUANT_SIDECAR_SYMBOLS, else AI_QUANT_SYMBOLS]")] = None,
    intervals: Annotated[str | None, typer.Option(help="Comma list, e.g. 1m,5m,1h [AI_QUANT_SIDECAR_INTERVALS]")] = None,
    db_dir: Annotated[str | None, typer.Option(help="Candle DB folder [AI_QUANT_CANDLES_DB_DIR, default candles_dbs]")] = None,
    base_url: Annotated[str | None, typer.Option(help="Exchange API base URL [AI_QUANT_HL_BASE_URL, default mainnet]")] = None,
    candle_limit: Annotated[int | None, typer.Option(help="Minimum bars kept per key [AI_QUANT_SIDECAR_CANDLE_LIMIT, 2000]")] = None,
    prune_disable_intervals: Annotated[str | None, typer.Option(
        help="Append-only intervals, '' for none [AI_QUANT_CANDLE_PRUNE_DISABLE_INTERVALS, 3m,5m]")] = None,
    verify_secs: Annotated[float | None, typer.Option(help="DB completeness check period [AI_QUANT_CANDLE_VERIFY_SECS, 10]")] = None,
    ws: Annotated[bool | None, typer.Option("--ws/--no-ws", help="Open the WebSocket [AI_QUANT_WS_ENABLE, on]")] = None,
    ws_candles: Annotated[bool | None, typer.Option("--ws-candles/--no-ws-candles",
                                                    help="Subscribe WS candles [AI_QUANT_WS_ENABLE_CANDLE, off]")] = None,
    bbo: Annotated[bool | None, typer.Option("--bbo/--no-bbo", help="Subscribe BBO [AI_QUANT_WS_ENABLE_BBO, off]")] = None,
    mids_from_bbo: Annotated[bool | None, typer.Option("--mids-from-bbo/--no-mids-from-bbo",
                                                       help="Mids from BBO while fresh [AI_QUANT_MIDS_FROM_BBO, off]")] = None,
    bbo_snapshots: Annotated[bool | None, typer.Option("--bbo-snapshots/--no-bbo-snapshots",
                                                       help="Write sampled BBO rows [AI_QUANT_BBO_SNAPSHOTS_ENABLE, off]")] = None,
    bbo_db: Annotated[str | None, typer.Option(help="BBO snapshot DB [AI_QUANT_BBO_SNAPSHOTS_DB_PATH]")] = None,
    bbo_sample_ms: Annotated[int | None, typer.Option(help="Per-symbol BBO sample period [AI_QUANT_BBO_SNAPSHOTS_SAMPLE_MS, 1000]")] = None,
    bbo_retention_hours: Annotated[float | None, typer.Option(
        help="BBO snapshot retention [AI_QUANT_BBO_SNAPSHOTS_RETENTION_HOURS, 24]")] = None,
    health_secs: Annotated[float | None, typer.Option(help="Health line period [AI_QUANT_MARKET_DATA_HEALTH_SECS, 60]")] = None,
    max_runtime_s: Annotated[float | None, typer.Option(help="Exit cleanly after this many seconds (smoke runs)")] = None,
) -> None:
    """Keep candles_dbs/candles_{interval}.db complete and fresh (REST backfill + close polls), mids/BBO via WS.

    Every option overrides the env var named in brackets; SIGTERM or Ctrl-C exits cleanly.
    """
    import signal

    from live.env import EnvError
    from live.market_service import MarketDataService, MarketDataSettings
    from marketdata.intervals import MarketDataError

    if max_runtime_s is not None and max_runtime_s <= 0:
        err.print(f"error: --max-runtime-s must be > 0, got {max_runtime_s:g}")
        raise typer.Exit(2)
    overlay = {"AI_QUANT_SIDECAR_SYMBOLS": symbols, "AI_QUANT_SIDECAR_INTERVALS": intervals,
               "AI_QUANT_CANDLES_DB_DIR": db_dir, "AI_QUANT_HL_BASE_URL": base_url,
               "AI_QUANT_SIDECAR_CANDLE_LIMIT": candle_limit, "AI_QUANT_CANDLE_PRUNE_DISABLE_INTERVALS": prune_disable_intervals,
               "AI_QUANT_CANDLE_VERIFY_SECS": verify_secs, "AI_QUANT_WS_ENABLE": ws, "AI_QUANT_WS_ENABLE_CANDLE": ws_candles,
               "AI_QUANT_WS_ENABLE_BBO": bbo, "AI_QUANT_MIDS_FROM_BBO": mids_from_bbo,
               "AI_QUANT_BBO_SNAPSHOTS_ENABLE": bbo_snapshots, "AI_QUANT_BBO_SNAPSHOTS_DB_PATH": bbo_db,
               "AI_QUANT_BBO_SNAPSHOTS_SAMPLE_MS": bbo_sample_ms, "AI_QUANT_BBO_SNAPSHOTS_RETENTION_HOURS": bbo_retention_hours,
               "AI_QUANT_MARKET_DATA_HEALTH_SECS": health_secs}
    for name in ("AI_QUANT_CANDLES_DB_DIR", "AI_QUANT_BBO_SNAPSHOTS_DB_PATH"):
        if overlay[name] is not None:  # an option path is relative to the caller's cwd, not the repo
            overlay[name] = os.path.abspath(os.path.expanduser(overlay[name]))
    env = dict(os.environ)
    env.update({k: _env_text(v) for k, v in overlay.items() if v is not None})
    try:
        service = MarketDataService(MarketDataSettings.from_env(env), console=err)
    except (EnvError, MarketDataError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop())
    try:
        code = service.run(max_runtime_s=max_runtime_s)
    except MarketDataError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def _env_text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


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
