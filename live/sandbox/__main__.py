"""`python -m live.sandbox`: serve a local Hyperliquid replaying a candle DB.

With --speed X the path advances one bar every interval/X seconds (e.g. 1h bars at
--speed 3600 move one bar per second); without it the price stands still. A bad option
or a candle/funding row that no exchange would quote (NULL, NaN, inf or non-positive price)
is refused with one line on stderr and exit code 2.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path

import typer

from live.sandbox.matching import MAX_SPREAD_BPS, BookSpec
from live.sandbox.pricepath import (
    INTERVAL_MS,
    SandboxConfigError,
    default_asset_spec,
    load_candles_db,
    load_funding_db,
)
from live.sandbox.server import SandboxExchange

app = typer.Typer(add_completion=False, help=__doc__)


def _parse_accounts(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        addr, _, bal = item.partition("=")
        if not (addr.startswith("0x") and len(addr) == 42):
            raise SandboxConfigError(f"--account {item!r}: address must be 0x + 40 hex")
        try:
            value = float(bal or 100_000.0)
        except ValueError:
            raise SandboxConfigError(f"--account {item!r}: balance must be a number") from None
        if not (math.isfinite(value) and value >= 0):
            raise SandboxConfigError(f"--account {item!r}: balance must be a finite number >= 0")
        out[addr.lower()] = value
    return out


def _finite(value: float) -> float:
    """typer's min/max refuse NaN but let inf through, and an infinite speed busy-loops the replay."""
    if not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def _positive(value: float) -> float:
    """For sizes where 0 is as meaningless as a negative (typer's min is inclusive)."""
    if _finite(value) <= 0:
        raise typer.BadParameter(f"{value} must be > 0")
    return value


@app.command()
def main(
    port: int = typer.Option(..., min=0, max=65535, help="TCP port to listen on (0 = any free port)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    candles_db: Path = typer.Option(..., help="Candle SQLite DB: table candles(symbol, interval, t, ...)."),
    interval: str = typer.Option("1h", help="Candle interval to replay (must exist in the DB)."),
    symbols: str = typer.Option("", help="Comma-separated symbols to list (default: all in the DB)."),
    funding_db: Path | None = typer.Option(None, help="Optional funding DB: table funding_rates."),
    account: list[str] = typer.Option([], help="ADDRESS[=USDC] (repeatable); default balance 100000."),
    agent: list[str] = typer.Option([], help="AGENT_ADDRESS=OWNER_ADDRESS API wallet (repeatable)."),
    start_bar: int = typer.Option(200, min=0, help="Bars revealed at start (history for candleSnapshot)."),
    speed: float = typer.Option(0.0, min=0.0, callback=_finite,
                                help="Replay speed: bars advance every interval/speed seconds; 0 = frozen."),
    shift_to_now: bool = typer.Option(True, help="Shift the path so its start bar ends at the current hour."),
    half_spread_bps: float = typer.Option(1.0, min=0.0, max=MAX_SPREAD_BPS, help="Synthetic book half-spread."),
    level_notional: float = typer.Option(250_000.0, callback=_positive, help="USD depth per book level (> 0)."),
) -> None:
    try:
        if interval not in INTERVAL_MS:
            raise SandboxConfigError(f"--interval: unknown value {interval!r}")
        wanted = [s.strip() for s in symbols.split(",") if s.strip()] or None
        accounts = _parse_accounts(account)
        agents = {}
        for item in agent:
            a, _, owner = item.partition("=")
            agents[a.lower()] = owner.lower()
        bars = load_candles_db(candles_db, interval, wanted)
        assets = [default_asset_spec(coin, rows) for coin, rows in sorted(bars.items())]
        funding = load_funding_db(funding_db, list(bars)) if funding_db else None
        ex = SandboxExchange(assets, bars, accounts, interval=interval, host=host, port=port, start_bar=start_bar,
                             book=BookSpec(half_spread_bps=half_spread_bps, level_notional=level_notional),
                             funding=funding, agents=agents, shift_to_now=shift_to_now)
    except SandboxConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        ex.start()
    except OSError as exc:
        typer.echo(f"error: --port {port}: cannot listen on {host} ({exc.strerror})", err=True)
        raise typer.Exit(2) from None
    names = ", ".join(a.name for a in ex.venue.assets)
    typer.echo(f"sandbox Hyperliquid on {ex.base_url} (ws {ex.base_url.replace('http', 'ws', 1)}/ws); "
               f"{len(ex.venue.assets)} assets [{names}], {interval}, speed {speed or 'frozen'}")
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        _run(ex, interval, speed)
    except KeyboardInterrupt:
        pass
    finally:
        ex.stop()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _run(ex: SandboxExchange, interval: str, speed: float) -> None:
    period = INTERVAL_MS[interval] / 1000.0 / speed if speed > 0 else None
    while True:
        time.sleep(period if period else 3600)
        if period and ex.advance(1) == 0:
            typer.echo("end of price path reached; prices now frozen")
            period = None


def cli() -> None:
    """Typer prints a usage banner and a framed box for a bad option; the sandbox promises one line
    (`error: Invalid value for '--port': ...`) and exit 2 instead, like its own config errors."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:
        typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        code = exc.exit_code
    sys.exit(code or 0)


if __name__ == "__main__":
    cli()
