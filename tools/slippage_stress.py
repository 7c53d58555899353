"""Replay one config at several slippage levels (runbook §4 "Slippage stress test").

    python tools/slippage_stress.py --config config/strategy_overrides.yaml \
        --candles-db candles_dbs/candles_5m.db --bps 10,20,30 [--output stress.json]

A table on stderr; JSON on stdout (or --output): one row per level plus the verdict the factory's
slippage gate uses (PnL at 20 bps must stay positive). Like `backtester replay`, every bad input
(a malformed candle DB, an unwritable --output) is one line on stderr and exit 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cpu_replay.api import run_replay
from cpu_replay.cli import (
    err,
    fail,
    load_data,
    load_exit_data,
    load_funding,
    resolve_config,
    resolve_interval,
    user_errors,
    write_output,
)
from strategy.cli_io import check_output_path

app = typer.Typer(add_completion=False)


def parse_bps(text: str) -> list[float]:
    from cpu_replay.cli import CliError

    try:
        levels = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CliError(f"--bps: expected comma-separated numbers, got {text!r}") from None
    if not levels or any(not math.isfinite(b) or b < 0 for b in levels):
        raise CliError(f"--bps: need one or more finite levels >= 0, got {text!r}")
    return levels


@app.command()
def main(
    config: Annotated[Path | None, typer.Option(help="Strategy YAML (default config/strategy_overrides.yaml)")] = None,
    candles_db: Annotated[str | None, typer.Option(help="Candle DB(s), comma-separated")] = None,
    interval: Annotated[str | None, typer.Option(help="Bar interval (default from the config)")] = None,
    exit_candles_db: Annotated[str | None, typer.Option(help="Candles of the config's exit interval")] = None,
    funding_db: Annotated[Path | None, typer.Option(help="funding_rates DB")] = None,
    bps: Annotated[str, typer.Option(help="Slippage levels in bps")] = "10,20,30",
    initial_balance: Annotated[float, typer.Option(help="Starting balance")] = 10_000.0,
    output: Annotated[Path | None, typer.Option(help="Write the JSON here instead of stdout")] = None,
) -> None:
    """Replay at each slippage level; the 20 bps row decides the factory's slippage gate."""
    try:
        if output is not None:
            check_output_path(output)
        levels = parse_bps(bps)
        cfg = resolve_config(config)
        iv = resolve_interval(interval, cfg)
        md, _ = load_data(candles_db, iv, None, None, None, 0)
        funding = load_funding(funding_db, md)
        exit_md = load_exit_data(cfg, md, exit_candles_db)
        rows = []
        for level in levels:
            rep = run_replay(cfg, md, funding=funding, initial_balance=initial_balance, slippage_bps=level,
                             with_trades=False, exit_md=exit_md)
            rows.append({k: rep[k] for k in ("slippage_bps", "total_pnl", "return_pct", "total_trades", "win_rate",
                                             "profit_factor", "max_drawdown_pct", "total_fees")})
    except user_errors() as exc:
        raise fail(str(exc)) from None
    at20 = next((r for r in rows if r["slippage_bps"] == 20.0), None)
    result = {"config_id": cfg.config_id, "levels": rows,
              "pnl_at_20bps_positive": None if at20 is None else at20["total_pnl"] > 0}
    table = Table(title=f"slippage stress {cfg.config_id[:12]}")
    for col in ("bps", "pnl", "return %", "trades", "pf", "max dd %"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['slippage_bps']:g}", f"{r['total_pnl']:.2f}", f"{r['return_pct']:.2f}",
                      str(r["total_trades"]), f"{r['profit_factor']:.3f}", f"{r['max_drawdown_pct'] * 100:.2f}")
    write_output(json.dumps(result, sort_keys=True, indent=2), output)  # first: a failed write is one line
    err.print(table)


if __name__ == "__main__":
    app()
