"""`backtester sweep`: load data and a base config, run a sweep spec, write ranked JSONL rows.

The command function is registered by tools/backtester.py; it imports nothing from cpu_replay
(gpu/ must not), so the small time/data helpers it needs live here. Exit codes: 0 ok, 2 bad input
(one line on stderr: a bad flag, a malformed candle DB, an --output that can never be written),
1 the results could not be written after the sweep (disk full; one line, no partial file).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from strategy.cli_io import OutputError, ReadError, check_output_path, die, one_line, reading, write_output

err = Console(stderr=True)
out = Console()
DEFAULT_CONFIG = Path("config/strategy_overrides.yaml")


class CliError(ValueError):
    """A user mistake on the command line (one line)."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from gpu.backend import BackendError
    from gpu.spec import SweepSpecError
    from marketdata.intervals import MarketDataError
    from strategy.config import ConfigError

    return (SweepSpecError, ConfigError, MarketDataError, BackendError, CliError, OutputError, ReadError)


def _load_base_config(path: Path | None):
    from strategy.config import config_from_dict, load_config

    if path is None:
        if DEFAULT_CONFIG.exists():
            return load_config(DEFAULT_CONFIG)
        return config_from_dict({}, source="<code defaults>")
    if not path.exists():
        raise CliError(f"--config: file not found: {path}")
    return load_config(path)


def _subset(md, keep: list[str]):
    idx = [md.symbols.index(s) for s in sorted(keep)]
    return replace(md, symbols=[md.symbols[i] for i in idx], open=md.open[idx], high=md.high[idx],
                   low=md.low[idx], close=md.close[idx], volume=md.volume[idx], valid=md.valid[idx])


def _load_data(candles_db: str, interval: str, symbols: str | None, start_ms, end_ms, lookback: int):
    from marketdata.candles import load_market_data
    from marketdata.intervals import interval_ms

    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise CliError(f"--start must be before --end (got {start_ms} >= {end_ms})")
    sym_list = [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else None
    load_from = None if start_ms is None else start_ms - lookback * interval_ms(interval)
    with reading(f"candles from {candles_db}"):
        md = load_market_data(candles_db, interval, symbols=sym_list, start_ms=load_from, end_ms=end_ms)
    if sym_list:
        missing = sorted(set(sym_list) - set(md.symbols))
        if missing:
            raise CliError(f"--symbols: no {interval} candles for {', '.join(missing)} in {candles_db}")
    return md


def load_exit_data(base, md, exit_candles_db: str | None, symbols: str | None):
    """The base config's exit-interval candles over the main data's span, or None (exits on main bars).

    Same default as `backtester replay`: candles_dbs/candles_<exit>.db."""
    from marketdata.candles import load_market_data
    from marketdata.intervals import MarketDataError

    exit_iv = base.exit_interval
    if not exit_iv or exit_iv == md.interval:
        return None
    sources = exit_candles_db or f"candles_dbs/candles_{exit_iv}.db"
    sym_list = [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else None
    end = int(md.times[-1] + md.interval_ms - 1)
    try:
        with reading(f"exit candles from {sources}"):
            return load_market_data(sources, exit_iv, symbols=sym_list, start_ms=int(md.times[0]), end_ms=end)
    except MarketDataError as exc:  # a missing/empty exit DB: say which flag feeds it
        raise CliError(f"--exit-candles-db (global.engine.exit_interval={exit_iv}): {exc}") from None


def _universe(md, candles_db: str, universe_db: str | None, start_ms, end_ms):
    from marketdata.universe import universe_filter

    db = universe_db or str(Path(candles_db.split(",")[0]).parent / "universe_history.db")
    if not Path(db).exists():
        raise CliError(f"--universe-db: not found: {db}")
    with reading(f"universe history from {db}"):
        keep = universe_filter(list(md.symbols), db, start_ms or int(md.times[0]), end_ms or int(md.times[-1]))
    if not keep:
        raise CliError(f"--universe-filter kept no symbol of {', '.join(md.symbols)} ({db})")
    return _subset(md, keep)


def _print_notes(backend: str, reason: str, exit_md, base, spec=None) -> None:
    """What the sweep is about to use, shown before it starts (a long run should say so early). On
    stdout with the closing table: stderr carries only the one-line refusal when something fails.
    The config comes first: a sweep from code defaults (no config file) says so."""
    source = base.source_path
    if source is None:
        out.print(f"config: none found ({DEFAULT_CONFIG} absent): sweeping from the code defaults "
                  f"(pass --config)", highlight=False, soft_wrap=True)
    else:
        out.print(f"config {source} (config_id {base.config_id[:12]})", highlight=False, soft_wrap=True)
    out.print(f"backend {backend}: {reason}", highlight=False)
    if spec is not None and spec.inert:
        out.print(f"sweep spec: {len(spec.inert)} axes over keys that do not act are held out of the search "
                  f"(docs/STRATEGY.md, \"Keys accepted that do not act\"): {', '.join(spec.inert)}",
                  highlight=False, soft_wrap=True)
    if spec is not None and spec.gated:
        out.print(f"sweep spec: {len(spec.gated)} of {len(spec.axes)} axes are gated (they vary only where "
                  "their gate holds)", highlight=False)
    if exit_md is not None:
        out.print(f"stops/targets checked on {exit_md.interval} bars", highlight=False)


def write_jsonl_atomic(rows: list[dict], path: Path) -> None:
    """One JSON row per line, written atomically: a failed write (disk full) leaves the old file or
    none, never a truncated ranking a deploy could pick a row from. Raises OutputError (one line)."""
    write_output(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def top_table(rows: list[dict], k: int, title: str) -> Table:
    table = Table(title=title)
    for col in ("#", "config_id", "total_pnl", "trades", "win_rate", "PF", "max_dd", "sharpe"):
        table.add_column(col, justify="left" if col == "config_id" else "right", no_wrap=True)
    table.add_column("overrides", overflow="fold")
    for i, r in enumerate(rows[:k], 1):
        ov = ", ".join(f"{p.rsplit('.', 1)[-1]}={v}" for p, v in r["overrides"].items())
        table.add_row(str(i), r["config_id"][:12], f"{r['total_pnl']:,.2f}", str(r["total_trades"]),
                      f"{r['win_rate']:.1%}", f"{r['profit_factor']:.2f}", f"{r['max_drawdown_pct']:.2%}",
                      f"{r['sharpe']:.2f}", ov)
    return table


def sweep_command(
    sweep_spec: Annotated[Path, typer.Option("--sweep-spec", help="Sweep spec YAML (config/sweeps/*.yaml)")],
    candles_db: Annotated[str, typer.Option("--candles-db", help="Candle DB file(s)/partition dirs, comma-separated")],
    exit_candles_db: Annotated[str | None, typer.Option("--exit-candles-db", help="Candle DB(s) of the config's engine.exit_interval (default candles_dbs/candles_<exit>.db)")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Base strategy YAML (default: config/strategy_overrides.yaml, else code defaults)")] = None,
    backend: Annotated[str, typer.Option(help="auto | cpu | cuda | cudasim")] = "auto",
    interval: Annotated[str | None, typer.Option(help="Bar interval (default: the config's engine.interval)")] = None,
    symbols: Annotated[str | None, typer.Option(help="Comma-separated symbols (default: all in the DB)")] = None,
    funding_db: Annotated[Path | None, typer.Option("--funding-db", help="Funding rates DB (default: no funding)")] = None,
    tpe: Annotated[bool, typer.Option("--tpe", help="Optuna TPE search instead of the full grid")] = False,
    trials: Annotated[int | None, typer.Option(help="TPE: candidates to evaluate (e.g. 1000000)")] = None,
    batch: Annotated[int | None, typer.Option(help="TPE: candidates per kernel launch (default min(trials, 1024); on CUDA min(trials, what fills the device)); optuna proposals per launch = batch // neighborhood")] = None,
    neighborhood: Annotated[int, typer.Option(help="TPE: candidates per optuna trial (the proposal + neighbours 1-3 axis steps away); 1 = one candidate per trial, 256+ for million-candidate runs")] = 1,
    seed: Annotated[int, typer.Option(help="TPE sampler seed")] = 42,
    storage: Annotated[str | None, typer.Option(help="TPE: optuna storage URL, e.g. sqlite:///sweep.db (resumable)")] = None,
    study_name: Annotated[str | None, typer.Option("--study-name", help="TPE: study name in the storage")] = None,
    objective: Annotated[str, typer.Option(help="pnl | sharpe | balanced (ranking and TPE objective)")] = "pnl",
    top_n: Annotated[int | None, typer.Option("--top-n", help="Keep only the best K rows in the output")] = None,
    universe_filter: Annotated[bool, typer.Option("--universe-filter", help="Keep symbols listed during the window")] = False,
    universe_db: Annotated[str | None, typer.Option("--universe-db", help="Universe history DB")] = None,
    start: Annotated[str | None, typer.Option(help="First trading bar (ISO date/time UTC or epoch ms)")] = None,
    end: Annotated[str | None, typer.Option(help="End of the window, exclusive")] = None,
    precision: Annotated[str, typer.Option(help="f64 | f32 (indicator pool precision)")] = "f64",
    output: Annotated[Path, typer.Option(help="JSONL output, one row per candidate")] = Path("sweep_results.jsonl"),
    show: Annotated[int, typer.Option(help="Rows in the closing table")] = 10,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar")] = True,
) -> None:
    """Sweep a grid (or TPE trials) of configs with the decision kernel; write ranked JSONL rows."""
    try:
        from gpu.api import check_engine_settings, run_sweep
        from gpu.backend import choose_backend
        from gpu.spec import load_sweep_spec
        from gpu.tpe import OBJECTIVES
        from marketdata.funding import funding_matrix
        from marketdata.intervals import normalize_interval, parse_time_ms

        if top_n is not None and top_n < 1:
            raise CliError(f"--top-n must be >= 1 (got {top_n})")
        if tpe and (trials is None or trials < 1):
            raise CliError("--trials: a positive integer is required with --tpe")
        if neighborhood < 1:
            raise CliError(f"--neighborhood must be >= 1 (got {neighborhood})")
        if batch is not None and batch < 1:
            raise CliError(f"--batch must be >= 1 (got {batch})")
        if precision not in ("f64", "f32"):
            raise CliError(f"--precision: expected f64 or f32, got {precision!r}")
        if objective not in OBJECTIVES:  # checked now, not after hours of sweeping
            raise CliError(f"--objective: unknown objective {objective!r} (choose from {', '.join(OBJECTIVES)})")
        check_output_path(output)
        if tpe and storage is not None:
            from gpu.tpe import check_storage

            check_storage(storage)
        base = _load_base_config(config)
        spec = load_sweep_spec(sweep_spec, base)
        name, reason = choose_backend(backend)
        iv = normalize_interval(interval or base.interval or "1h")
        start_ms, end_ms = parse_time_ms(start, "--start"), parse_time_ms(end, "--end")
        md = _load_data(candles_db, iv, symbols, start_ms, end_ms, spec.lookback)
        if universe_filter:
            md = _universe(md, candles_db, universe_db, start_ms, end_ms)
        if funding_db is not None and not funding_db.exists():
            raise CliError(f"--funding-db: not found: {funding_db}")
        with reading(f"funding rates from {funding_db}"):
            funding = funding_matrix(funding_db, md) if funding_db is not None else None
        exit_md = load_exit_data(base, md, exit_candles_db, symbols)
        check_engine_settings(base, md.interval, exit_md, spec.axes)
        _print_notes(name, reason, exit_md, base, spec)  # only now: a refusal above stays one line
        result = run_sweep(base, spec, md, funding, backend=name, precision=precision, tpe=tpe,
                           trials=trials, batch=batch, seed=seed, storage=storage, study_name=study_name,
                           objective=objective, top_n=top_n, progress=progress, start_ms=start_ms,
                           end_ms=end_ms, exit_md=exit_md, neighborhood=neighborhood)
    except _user_errors() as exc:
        die(f"error: {exc}", 2)
    except ValueError as exc:  # objective/trials validation inside the library
        die(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", 2)
    try:
        write_jsonl_atomic(result.rows, output)
    except OutputError as exc:
        die(f"error: {one_line(exc)} ({len(result.rows)} rows not saved)", 1)
    if tpe:
        sm = result.summary
        out.print(f"TPE: {sm['tpe_trials']:,} optuna trials x neighbourhood {sm['neighborhood']} -> "
                  f"{result.candidates_evaluated:,} candidates ({result.distinct_candidates:,} distinct, "
                  f"{sm['rejected_by_constraints']:,} neighbours dropped by constraints)", highlight=False)
        from gpu.tpe import dashboard_hint

        out.print(dashboard_hint(storage, study_name or "sweep"), highlight=False, soft_wrap=True)
    title = (f"top {min(show, len(result.rows))} of {result.candidates_evaluated} candidates "
             f"({result.backend}, {result.precision}, {result.candidates_per_s:,.0f} cand/s, "
             f"{result.elapsed_s:.1f} s)")
    out.print(top_table(result.rows, show, title))
    out.print(f"wrote {len(result.rows)} rows to {output}", highlight=False)


def main() -> None:  # `python -m gpu.cli` for use before the console script is wired
    typer.run(sweep_command)


if __name__ == "__main__":
    main()
