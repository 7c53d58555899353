"""Funding-rate DB freshness, gap and outlier check (runbook §3): JSON on stdout, summary on stderr.

Exit codes: 2 on FAIL (or bad flags), 1 on WARN with --fail-on-warn, else 0.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from marketdata.checks import check_funding_db, default_candles_dir
from marketdata.intervals import MarketDataError

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def run(
    db: Path = typer.Option(None, help="funding DB (default <candles dir>/funding_rates.db)"),
    symbols: str = typer.Option(None, help="comma-separated symbols (default: all in the DB)"),
    lookback_hours: float = typer.Option(72.0, help="window checked for gaps and outliers"),
    lookback_days: float = typer.Option(None, help="alternative to --lookback-hours"),
    expected_interval_hours: float = typer.Option(1.0, help="funding period"),
    interval_tolerance_seconds: float = typer.Option(60.0, help="slack before a spacing counts as a gap"),
    max_age_warn_multiplier: float = typer.Option(8.0, help="WARN when the latest rate is this many periods old"),
    max_age_fail_multiplier: float = typer.Option(12.0, help="FAIL when the latest rate is this many periods old"),
    max_age_warn_hours: float = typer.Option(None, help="absolute override of the WARN age"),
    max_age_fail_hours: float = typer.Option(None, help="absolute override of the FAIL age"),
    warn_gap_hours: float = typer.Option(2.0, help="WARN at a gap this long"),
    max_gap_hours: float = typer.Option(4.0, help="FAIL at a gap this long"),
    abs_rate_warn: float = typer.Option(0.01, help="WARN at |rate| this large"),
    abs_rate_fail: float = typer.Option(0.02, help="FAIL at |rate| this large"),
    delta_rate_warn: float = typer.Option(0.01, help="WARN at a jump this large between adjacent rates"),
    delta_rate_fail: float = typer.Option(0.02, help="FAIL at a jump this large between adjacent rates"),
    fail_on_warn: bool = typer.Option(False, help="exit 1 when the worst status is WARN"),
    now_ms: int = typer.Option(None, help="evaluate as if now were this epoch ms (tests)"),
) -> None:
    path = db or Path(os.environ.get("AI_QUANT_FUNDING_DB", default_candles_dir() / "funding_rates.db"))
    names = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
    hours = lookback_days * 24 if lookback_days is not None else lookback_hours
    age_warn = max_age_warn_hours if max_age_warn_hours is not None else max_age_warn_multiplier * expected_interval_hours
    age_fail = max_age_fail_hours if max_age_fail_hours is not None else max_age_fail_multiplier * expected_interval_hours
    try:
        report = check_funding_db(
            path, names, hours, expected_interval_hours=expected_interval_hours,
            interval_tolerance_seconds=interval_tolerance_seconds, max_age_warn_hours=age_warn,
            max_age_fail_hours=age_fail, warn_gap_hours=warn_gap_hours, max_gap_hours=max_gap_hours,
            abs_rate_warn=abs_rate_warn, abs_rate_fail=abs_rate_fail, delta_rate_warn=delta_rate_warn,
            delta_rate_fail=delta_rate_fail, now=now_ms)
    except MarketDataError as exc:
        typer.echo(f"check_funding_rates_db: {exc}", err=True)
        raise typer.Exit(2) from None
    sys.stdout.write(json.dumps(report, sort_keys=True, separators=(",", ":")) + "\n")
    s = report["summary"]
    typer.echo(f"[funding-check] status={report['status']} db={path} symbols={s['symbols_checked']} "
               f"issues={s['issues_total']} (warn={s['issues_warn']} fail={s['issues_fail']}) "
               f"journal_mode={s['journal_mode']}", err=True)
    for issue in report["issues"]:
        typer.echo(f"[funding-check] {issue['severity']} {issue['message']}", err=True)
    for error in report["errors"]:
        typer.echo(f"[funding-check] FAIL {error}", err=True)
    status = report["status"]
    raise typer.Exit(2 if status == "FAIL" else 1 if status == "WARN" and fail_on_warn else 0)


def main(argv: list[str] | None = None) -> int:
    """In-process entry point: returns the exit code instead of exiting."""
    try:
        app(args=argv, prog_name="check_funding_rates_db.py")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    app(prog_name="check_funding_rates_db.py")
