"""`backtester replay` and `backtester dump-indicators`: the canonical engine from the shell.

The JSON report goes to stdout (or --output); a short summary table goes to stderr so that the
report can be piped. Every user mistake (bad flag, missing or malformed candle DB, unwritable
--output, disk full) is one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cpu_replay.api import ReplayError, run_replay
from cpu_replay.state_io import InitStateError, load_init_state
from marketdata.intervals import parse_time_ms
from marketdata.sanity import iso_ms
from strategy.cli_io import OutputError, ReadError, check_output_path, one_line, reading
from strategy.cli_io import write_output as write_output_file

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Canonical CPU replay engine.")
err = Console(stderr=True)

DEFAULT_CONFIG = Path("config/strategy_overrides.yaml")
INDICATOR_COLUMNS = (
    "close", "ema_fast", "ema_slow", "ema_macro", "adx", "adx_pos", "adx_neg", "adx_slope", "bb_upper",
    "bb_lower", "bb_width", "atr", "rsi", "macd_hist", "stoch_rsi_k", "stoch_rsi_d", "vol_sma", "vol_trend",
)


class CliError(Exception):
    """A user mistake reported as one line."""


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` as one line on stderr; the caller raises the returned Exit."""
    err.print(Text.assemble(("error:", "red"), " " + one_line(message)), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def user_errors():
    """The exception types that are user mistakes (one line, exit 1) rather than bugs."""
    from marketdata.intervals import MarketDataError
    from strategy.config import ConfigError

    return (ConfigError, MarketDataError, ReplayError, InitStateError, CliError, OutputError, ReadError)


def apply_overrides(cfg, overrides: dict):
    from strategy.config import apply_overrides as _apply

    return _apply(cfg, overrides)


def resolve_config(path: Path | None):
    from strategy.config import load_config

    p = path or DEFAULT_CONFIG
    if not p.exists():
        hint = " (copy config/strategy_overrides.yaml.example to it)" if path is None else ""
        raise CliError(f"config not found: {p}{hint}")
    return load_config(p)


def resolve_interval(cli_interval: str | None, cfg) -> str:
    from marketdata.intervals import normalize_interval

    return normalize_interval(cli_interval or cfg.interval or "1h")


def interval_of_source(candles_db: str | None) -> str | None:
    """The one interval held by the first candle source (a DB or its first partition), else None.

    Used only when --interval is not given, so `--candles-db candles_5m.db` replays 5m bars instead
    of failing on the config's 1h. Anything unreadable returns None: loading reports it properly."""
    from marketdata.candles import resolve_sources
    from marketdata.intervals import MarketDataError, normalize_interval
    from marketdata.sqlite_store import connect, table_exists

    first = next((item.strip() for item in (candles_db or "").split(",") if item.strip()), None)
    if first is None:
        return None
    try:
        conn = connect(resolve_sources(first)[0], readonly=True)
    except MarketDataError:
        return None
    try:
        if not table_exists(conn, "candles"):
            return None
        rows = conn.execute("SELECT DISTINCT interval FROM candles LIMIT 2").fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    if len(rows) != 1 or not isinstance(rows[0][0], str):
        return None
    try:
        return normalize_interval(rows[0][0])
    except MarketDataError:
        return None


def check_finite(name: str, value: float | None, *, positive: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value):
        raise CliError(f"{name} must be a finite number (got {value})")
    if positive and value <= 0:
        raise CliError(f"{name} must be > 0 (got {value})")


def load_data(candles_db: str | None, interval: str, symbols: str | None, start_ms: int | None,
              end_ms: int | None, lookback_bars: int):
    """Load the window plus `lookback_bars` before it so indicators are warm at the start."""
    from marketdata.candles import load_market_data
    from marketdata.intervals import interval_ms

    sources = candles_db or f"candles_dbs/candles_{interval}.db"
    sym_list = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
    load_from = None if start_ms is None else start_ms - lookback_bars * interval_ms(interval)
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise CliError(f"--start must be before --end (got {start_ms} >= {end_ms})")
    with reading(f"candles from {sources}"):
        return load_market_data(sources, interval, symbols=sym_list, start_ms=load_from, end_ms=end_ms), sources


def load_funding(funding_db, md):
    """The hourly funding matrix of `md`'s bars, or None without a funding DB."""
    from marketdata.funding import funding_matrix

    with reading(f"funding rates from {funding_db}"):
        return funding_matrix(str(funding_db) if funding_db else None, md)


def apply_universe_filter(md, sources: str, universe_db: str | None, start_ms, end_ms):
    from marketdata.candles import subset_symbols
    from marketdata.universe import universe_filter

    db = universe_db or str(Path(sources.split(",")[0]).parent / "universe_history.db")
    if not Path(db).exists():
        raise CliError(f"universe DB not found: {db} (run tools/sync_universe_history.py or pass --universe-db)")
    lo = int(md.times[0]) if start_ms is None else start_ms
    hi = int(md.times[-1]) if end_ms is None else end_ms
    with reading(f"universe history from {db}"):
        keep = universe_filter(list(md.symbols), db, lo, hi)
    if not keep:
        raise CliError(f"--universe-filter kept no symbol of {', '.join(md.symbols)} ({db})")
    return subset_symbols(md, keep)


def load_exit_data(cfg, md, exit_candles_db: str | None):
    """The config's exit-interval candles over the main data's span, or None when exits use main bars."""
    from marketdata.candles import load_market_data
    from marketdata.subbars import SubBarError, sub_bar_plan

    try:
        exit_iv = sub_bar_plan(md.interval, cfg.entry_interval, cfg.exit_interval)[0]
    except SubBarError as exc:
        raise CliError(str(exc)) from None
    if exit_iv is None:
        return None
    sources = exit_candles_db or f"candles_dbs/candles_{exit_iv}.db"
    if exit_candles_db is None and not Path(sources).exists():
        raise CliError(f"the {exit_iv} sub-bars of global.engine.entry_interval/exit_interval need their candles: "
                       f"{sources} not found (pass --exit-candles-db)")
    end = int(md.times[-1] + md.interval_ms - 1)
    with reading(f"exit candles from {sources}"):
        return load_market_data(sources, exit_iv, symbols=None, start_ms=int(md.times[0]), end_ms=end)


def write_output(text: str, output: Path | None) -> None:
    """The report to stdout or --output (atomic; disk full or a bad path is one line, exit 1)."""
    if output is None:
        sys.stdout.write(text + "\n")
        return
    try:
        write_output_file(output, text + "\n")
    except OutputError as exc:
        raise fail(str(exc)) from None


def summary_table(report: dict) -> Table:
    """The headline figures as label/value rows: fits 80 columns without cutting a number."""
    table = Table(title=f"replay {report['config_id'][:12]} · {report['interval']} · {len(report['symbols'])} symbols",
                  show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right", no_wrap=True)
    rows = (("total PnL", f"{report['total_pnl']:,.2f}"), ("return", f"{report['return_pct']:.2f}%"),
            ("trades", str(report["total_trades"])), ("win rate", f"{report['win_rate']:.1%}"),
            ("profit factor", f"{report['profit_factor']:.3f}"),
            ("max drawdown", f"{report['max_drawdown_pct'] * 100:.2f}%"), ("sharpe", f"{report['sharpe']:.3f}"),
            ("fees", f"{report['total_fees']:,.2f}"), ("funding", f"{report['total_funding']:,.2f}"),
            ("window", f"{iso_ms(report['start_ms'])} .. {iso_ms(report['end_ms'])}"))
    for label, value in rows:
        table.add_row(label, value)
    return table


@app.command()
def replay(
    candles_db: Annotated[str | None, typer.Option(help="Comma-separated candle DBs and/or partition dirs (default candles_dbs/candles_<interval>.db)")] = None,
    config: Annotated[Path | None, typer.Option(help="Strategy YAML (default config/strategy_overrides.yaml)")] = None,
    interval: Annotated[str | None, typer.Option(help="Bar interval (default: YAML global.engine.interval, else 1h)")] = None,
    exit_interval: Annotated[str | None, typer.Option(help="Check stops/targets on this finer interval (sets global.engine.exit_interval)")] = None,
    exit_candles_db: Annotated[str | None, typer.Option(help="Candle DB(s) of the exit interval (default candles_dbs/candles_<exit>.db)")] = None,
    funding_db: Annotated[Path | None, typer.Option(help="funding_rates DB; funding is charged hourly when given")] = None,
    slippage_bps: Annotated[float | None, typer.Option(help="Override trade.slippage_bps for every symbol")] = None,
    universe_filter: Annotated[bool, typer.Option("--universe-filter", help="Keep symbols listed during the window")] = False,
    universe_db: Annotated[str | None, typer.Option(help="universe_history.db (default: beside the first candles DB)")] = None,
    start: Annotated[str | None, typer.Option(help="Window start (ISO date/time UTC or epoch ms)")] = None,
    end: Annotated[str | None, typer.Option(help="Window end, exclusive")] = None,
    initial_balance: Annotated[float, typer.Option(help="Starting balance in USD")] = 10_000.0,
    symbols: Annotated[str | None, typer.Option(help="Comma-separated symbols (default: all in the DB)")] = None,
    init_state: Annotated[Path | None, typer.Option(help="State JSON from tools/export_state.py to continue from")] = None,
    lookback: Annotated[int, typer.Option(help="Warm-up bars loaded before --start")] = 400,
    trades: Annotated[bool, typer.Option("--trades", help="Embed the trade list and fill trace in the report")] = False,
    equity: Annotated[bool, typer.Option("--equity", help="Embed the engine's per-bar equity curve (equity_curve) in the report")] = False,
    plot: Annotated[Path | None, typer.Option(help="Also write a self-contained HTML plot here (needs the [plots] extra)")] = None,
    output: Annotated[Path | None, typer.Option(help="Write the JSON report here instead of stdout")] = None,
) -> None:
    """Replay a config over candle DBs with the canonical engine; JSON report out."""
    note = ""
    try:
        if output is not None:
            check_output_path(output)
        if plot is not None:
            check_plot_output(plot)
        check_finite("--initial-balance", initial_balance, positive=True)
        check_finite("--slippage-bps", slippage_bps)
        if lookback < 0:
            raise CliError(f"--lookback must be >= 0 bars (got {lookback})")
        cfg = resolve_config(config)
        from_db = None if interval else interval_of_source(candles_db)
        iv = resolve_interval(interval or from_db, cfg)
        if from_db:
            note = f" (interval {iv} from the candles DB; pass --interval to choose)"
        if (interval or from_db) and cfg.interval != iv:
            cfg = apply_overrides(cfg, {"engine.interval": iv})
        if exit_interval:
            cfg = apply_overrides(cfg, {"engine.exit_interval": resolve_interval(exit_interval, cfg)})
        start_ms, end_ms = parse_time_ms(start, "--start"), parse_time_ms(end, "--end")
        md, sources = load_data(candles_db, iv, symbols, start_ms, end_ms, lookback)
        if universe_filter:
            md = apply_universe_filter(md, sources, universe_db, start_ms, end_ms)
        funding = load_funding(funding_db, md)
        state = load_init_state(init_state) if init_state else None
        exit_md = load_exit_data(cfg, md, exit_candles_db)
        report = run_replay(cfg, md, funding=funding, initial_balance=initial_balance,
                            slippage_bps=slippage_bps, start_ms=start_ms, end_ms=end_ms,
                            with_trades=trades or plot is not None, init_state=state, exit_md=exit_md,
                            with_equity=equity or plot is not None)
        if plot is not None:
            write_plot(plot, report, md, cfg, sources)
    except user_errors() as exc:
        raise fail(str(exc) + (note if _about_data(str(exc)) else "")) from None
    report = trim_report(report, trades, equity)
    write_output(json.dumps(report, sort_keys=True, indent=2), output)  # first: a failed write is one line
    err.print(f"config {cfg.source_path} (config_id {report['config_id'][:12]})", highlight=False, soft_wrap=True)
    if note:  # after the run, so that a failing run still prints exactly one line
        err.print(f"interval {report['interval']} (from the candles DB)", highlight=False)
    err.print(summary_table(report))


def _about_data(message: str) -> bool:
    """Whether the interval hint fits an error: only a missing or empty candle set can come from
    reading the wrong interval, not a bad symbol, date or exit-candles DB."""
    return message.startswith("no ") and "candles" in message


def check_plot_output(path: Path) -> None:
    """Refuse before replaying when the plot could never be written or plotly is missing."""
    from reports.html import PlotsUnavailable, plotly

    check_output_path(path, "--plot")
    try:
        plotly()
    except PlotsUnavailable as exc:
        raise CliError(f"--plot: {exc}") from None


def write_plot(path: Path, report: dict, md, cfg, sources: str) -> None:
    """The replay's HTML plot, labelled SYNTHETIC when the candles came from marketdata.demo."""
    from marketdata.candles import resolve_sources
    from reports.html import synthetic_note
    from reports.replay_plot import replay_page

    files = resolve_sources(sources)
    wv = np.ascontiguousarray(cfg.windows(), dtype=np.int64)
    text = replay_page(report, md, wv, synthetic_note(files))
    write_output_file(path, text, "--plot")
    err.print(f"plot written to {path}", highlight=False)


def trim_report(report: dict, trades: bool, equity: bool) -> dict:
    """Drop what --plot needed but the JSON was not asked to carry."""
    drop = ([] if trades else ["trades", "fills"]) + ([] if equity else ["equity_curve"])
    return {k: v for k, v in report.items() if k not in drop}


def indicator_rows(md, symbol: str, wv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from strategy.features import FEATURE_NAMES
    from strategy.indicators import compute_features

    s = md.symbols.index(symbol)
    ok = md.valid[s]
    feats = compute_features(md.open[s, ok], md.high[s, ok], md.low[s, ok], md.close[s, ok], md.volume[s, ok], wv)
    cols = [FEATURE_NAMES.index("stoch_rsi_k" if c == "stoch_rsi_k" else c) for c in INDICATOR_COLUMNS]
    return md.times[ok], feats[:, cols]


@app.command("dump-indicators")
def dump_indicators(
    symbol: Annotated[str, typer.Option(help="Symbol, exact case (e.g. BTC)")],
    candles_db: Annotated[str | None, typer.Option(help="Candle DB(s), comma-separated")] = None,
    interval: Annotated[str | None, typer.Option(help="Bar interval (default from the config, else 1h)")] = None,
    config: Annotated[Path | None, typer.Option(help="Strategy YAML for the indicator windows")] = None,
    output: Annotated[Path | None, typer.Option(help="CSV path (default stdout)")] = None,
) -> None:
    """One CSV row per bar with every indicator the strategy reads (windows from the config)."""
    try:
        if output is not None:
            check_output_path(output)
        cfg = resolve_config(config) if (config or DEFAULT_CONFIG.exists()) else _default_config()
        from_db = None if interval else interval_of_source(candles_db)
        iv = resolve_interval(interval or from_db, cfg)
        md, _ = load_data(candles_db, iv, symbol, None, None, 0)
        if symbol not in md.symbols:
            raise CliError(f"unknown symbol {symbol!r} (symbols are case-sensitive)")
        times, values = indicator_rows(md, symbol, np.ascontiguousarray(cfg.windows(), dtype=np.int64))
    except user_errors() as exc:
        raise fail(str(exc)) from None
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("t", "time_utc") + INDICATOR_COLUMNS)
    for t, row in zip(times, values, strict=True):
        writer.writerow([int(t), iso_ms(int(t))] + ["" if np.isnan(x) else repr(float(x)) for x in row])
    write_output(buf.getvalue().rstrip("\n"), output)
    if from_db:
        err.print(f"interval {iv} (from the candles DB)", highlight=False)


def _default_config():
    from strategy.config import config_from_dict

    return config_from_dict({}, source="<code defaults>")
