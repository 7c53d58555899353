#!/usr/bin/env python3
"""Promote a paper config to live on a 25 % -> 50 % -> 100 % ramp (one clean day per step).

Without --apply it evaluates the gates over the paper trades since the config's paper deploy and
says what it would do. --apply deploys to live at 25 % of the config's trade.size_multiplier, and
on later runs advances one ramp step once its day has passed with zero kill events in --live-db
(default: the live daemon's DB, resolved as the daemon resolves it, when that file exists).
The replay release blocker is enforced on every --apply. Exit 0 done / nothing to do, 1 refused
(gates failed, ramp held, blocked by the replay gate), 2 bad input.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from factory.deploy import DeployError, ReplayGateBlocked
from factory.promotion import PromotionGates, promote_to_live
from factory.registry import LifecycleError, Registry, RegistryError, default_registry_path
from strategy.cli_io import die
from tools.trading_dbs import TradingDbUnavailable, daemon_db_path

app = typer.Typer(add_completion=False, help=__doc__)


def _gate_table(report: dict) -> Table:
    table = Table(title=f"promotion gates ({report['fills']} fills, {report['close_trades']} closed trades)")
    for col in ("gate", "value", "threshold", "result"):
        table.add_column(col)
    for c in report["checks"]:
        value = c["value"] if not isinstance(c["value"], float) else f"{c['value']:.4g}"
        table.add_row(c["name"], str(value), str(c["threshold"]), "pass" if c["ok"] else "FAIL")
    return table


def _default_live_db() -> Path | None:
    """The live daemon's DB as the daemon resolves it (tools/trading_dbs.py), when it exists; None
    otherwise, so advancing the ramp asks for --live-db instead of reading a missing file."""
    try:
        path = daemon_db_path("live")
    except TradingDbUnavailable as exc:
        die(f"error: {exc}", 2)
    return path if path.is_file() else None


@app.command()
def main(
    paper_db: Path = typer.Option(..., "--paper-db", help="the paper trader's SQLite DB (trades, audit_events)"),
    config_id: str = typer.Option(..., "--config-id", help="config_id (or unique prefix) in the registry"),
    live_yaml_path: Path = typer.Option(Path("config/strategy_overrides.live.yaml"), "--live-yaml-path"),
    live_db: Path = typer.Option(None, "--live-db", help="live DB for ramp kill checks (default: the live daemon's DB)"),
    since_ms: int = typer.Option(None, "--since-ms", help="default: the config's last paper deploy in the registry"),
    min_trades: int = typer.Option(20, "--min-trades"),
    min_hours: float = typer.Option(24.0, "--min-hours"),
    min_profit_factor: float = typer.Option(1.2, "--min-profit-factor"),
    max_drawdown_pct: float = typer.Option(10.0, "--max-drawdown-pct"),
    stress_slippage_bps: float = typer.Option(20.0, "--stress-slippage-bps", help="PnL must stay > 0 at this slippage"),
    max_kill_events: int = typer.Option(0, "--max-kill-events"),
    apply: bool = typer.Option(False, "--apply", help="deploy / advance the ramp (gate enforced)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="evaluate only, even with --apply"),
    reason: str = typer.Option("promote_to_live", "--reason"),
    artifacts_dir: Path = typer.Option(Path("artifacts"), "--artifacts-dir"),
    registry_path: Path = typer.Option(None, "--registry"),
    ignore_replay_gate: bool = typer.Option(False, "--ignore-replay-gate"),
    replay_gate_blocker_file: Path = typer.Option(None, "--replay-gate-blocker-file"),
    max_replay_gate_age_minutes: float = typer.Option(None, "--max-replay-gate-age-minutes"),
) -> None:
    """Evaluate the paper -> live gates and (with --apply) promote or advance the ramp one step."""
    gates = PromotionGates(min_trades, min_hours, min_profit_factor, max_drawdown_pct, stress_slippage_bps,
                           max_kill_events)
    live_db = live_db or _default_live_db()
    try:
        res = promote_to_live(paper_db, config_id=config_id, live_yaml_path=live_yaml_path,
                              registry=Registry(registry_path or default_registry_path(artifacts_dir)),
                              artifacts_dir=artifacts_dir, since_ms=since_ms, gates=gates, apply=apply,
                              dry_run=dry_run, live_db=live_db, reason=reason, ignore_replay_gate=ignore_replay_gate,
                              blocker_file=replay_gate_blocker_file, max_age_minutes=max_replay_gate_age_minutes)
    except ReplayGateBlocked as exc:
        typer.echo(f"refused: {exc}; fix the replay gate or pass --ignore-replay-gate", err=True)
        raise typer.Exit(1) from None
    except (DeployError, LifecycleError, RegistryError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if res.gates:
        Console(stderr=False).print(_gate_table(res.gates))
    typer.echo(res.message, err=not res.ok)
    if not res.ok:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
