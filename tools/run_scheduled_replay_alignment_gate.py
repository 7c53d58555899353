#!/usr/bin/env python3
"""Scheduled replay alignment gate (systemd timer, every 4 h): writes the release blocker.

Takes the trader's fills in [now - lag - window, now - lag], replays the same bars with the
canonical engine from the trader's state at the window start, compares fill by fill
(factory.replay_gate), and writes a bundle dir plus release_blocker.json. Fail-closed: a missing
input or a crash still writes blocked:true. Exit 0 pass, 1 fail.

The replay starts from the trader's own engine checkpoint before the window when the trading DB
keeps them (live/checkpoint.py: streaming indicators included, so the comparison is exact); an
older DB falls back to positions rebuilt from its trades.

Environment (OPS_RUNBOOK): AI_QUANT_REPLAY_GATE_CANDLES_DB (required), _FUNDING_DB, _INTERVAL (1h),
_WINDOW_MINUTES (240), _LAG_MINUTES (2), _MIN_LIVE_TRADES (1), _STRICT_NO_RESIDUALS (1),
_BUNDLE_ROOT (/tmp/openclaw-ai-quant/replay_gate), _BLOCKER_FILE, _LIVE_DB or _PAPER_DB (live wins),
_CONFIG (config/strategy_overrides.yaml), _WARMUP_BARS (400).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import typer

from factory import replay_gate as rg
from factory.jsonio import write_json_atomic
from factory.release_blocker import blocker_path, write_blocker

DEFAULT_BUNDLE_ROOT = "/tmp/openclaw-ai-quant/replay_gate"
app = typer.Typer(add_completion=False, help=__doc__)


class GateInputError(Exception):
    """An input the gate cannot do without; carries the reason code it maps to."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Settings:
    candles_db: str
    funding_db: str | None
    trading_db: str | None
    config: str
    interval: str
    window_minutes: float
    lag_minutes: float
    min_live_trades: int
    strict: bool
    bundle_root: Path
    blocker_file: Path
    warmup_bars: int


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"AI_QUANT_REPLAY_GATE_{name}", "").strip() or default


def settings_from_env() -> Settings:
    def number(name: str, default: str) -> float:
        raw = _env(name, default)
        try:
            return float(raw)
        except ValueError:
            raise GateInputError("scheduler_unhandled_exception",
                                 f"AI_QUANT_REPLAY_GATE_{name}={raw!r} is not a number") from None

    return Settings(
        candles_db=_env("CANDLES_DB"), funding_db=_env("FUNDING_DB") or None,
        trading_db=_env("LIVE_DB") or _env("PAPER_DB") or None, config=_env("CONFIG", "config/strategy_overrides.yaml"),
        interval=_env("INTERVAL", "1h"), window_minutes=number("WINDOW_MINUTES", "240"),
        lag_minutes=number("LAG_MINUTES", "2"), min_live_trades=int(number("MIN_LIVE_TRADES", "1")),
        strict=_env("STRICT_NO_RESIDUALS", "1") not in ("0", "false", "no"),
        bundle_root=Path(_env("BUNDLE_ROOT", DEFAULT_BUNDLE_ROOT)), blocker_file=blocker_path(None),
        warmup_bars=int(number("WARMUP_BARS", "400")),
    )


def _require(s: Settings) -> None:
    if not s.candles_db:
        raise GateInputError("market_data_alignment_gap", "AI_QUANT_REPLAY_GATE_CANDLES_DB is not set")
    for part in s.candles_db.split(","):
        if not Path(part.strip()).exists():
            raise GateInputError("market_data_alignment_gap", f"candles DB not found: {part.strip()}")
    if not s.trading_db:
        raise GateInputError("state_initialisation_gap",
                             "neither AI_QUANT_REPLAY_GATE_LIVE_DB nor AI_QUANT_REPLAY_GATE_PAPER_DB is set")
    if not Path(s.trading_db).is_file():
        raise GateInputError("state_initialisation_gap", f"trading DB not found: {s.trading_db}")


def _missing_bars(md, lo: int, hi: int) -> set[tuple[str, int]]:
    """(symbol, bar close) pairs in the window whose candle is absent."""
    out = set()
    iv = int(md.interval_ms)
    for j, t in enumerate(md.times.tolist()):
        close = int(t) + iv
        if lo <= close <= hi:
            out.update((sym, close) for i, sym in enumerate(md.symbols) if not bool(md.valid[i, j]))
    return out


def run_alignment(s: Settings, now_ms: int, bundle: Path) -> dict:
    """Read, replay, compare; returns the alignment report (raises GateInputError on missing inputs)."""
    from cpu_replay.api import run_replay
    from factory.deploy import DeployError
    from factory.promotion import read_trading_rows
    from marketdata.candles import load_market_data
    from marketdata.funding import funding_matrix
    from marketdata.intervals import MarketDataError
    from marketdata.intervals import interval_ms as to_ms
    from strategy.config import ConfigError, load_config

    _require(s)
    iv = to_ms(s.interval)
    start, end = rg.window_bounds(now_ms, s.window_minutes, s.lag_minutes)
    lo, hi = rg.window_closes(start, end, iv)
    if hi < lo:
        raise GateInputError("insufficient_live_trades", f"window [{start}, {end}] holds no closed {s.interval} bar")
    try:
        rows = read_trading_rows(s.trading_db, 0, None)
    except DeployError as exc:
        raise GateInputError("state_initialisation_gap", str(exc)) from None
    live = rg.fills_from_db_rows(rows, iv, lo, hi)
    init_state = rg.state_at(rows, iv, lo)
    write_json_atomic(bundle / "init_state.json", init_state)
    if init_state is None:
        raise GateInputError("state_initialisation_gap", f"{s.trading_db}: no balance recorded before the window")
    try:
        cfg = load_config(s.config)
    except ConfigError as exc:
        raise GateInputError("state_initialisation_gap", f"config: {str(exc).splitlines()[0]}") from None
    symbols = sorted({f.symbol for f in live} | {p["symbol"] for p in init_state["positions"]}) or None
    try:
        md = load_market_data(s.candles_db, s.interval, symbols=None, start_ms=lo - iv * (s.warmup_bars + 1),
                              end_ms=hi + iv)
    except MarketDataError as exc:
        raise GateInputError("market_data_alignment_gap", str(exc)) from None
    unknown = [sym for sym in symbols or [] if sym not in md.symbols]
    if unknown:
        raise GateInputError("market_data_alignment_gap", f"no candles for traded symbol(s) {', '.join(unknown)}")
    funding = funding_matrix(s.funding_db, md) if s.funding_db else None
    resumed = replay_from_checkpoint(s, cfg, iv, lo, hi, bundle)
    if resumed is not None:
        report, md = resumed
    else:
        try:
            report = run_replay(cfg, md, funding=funding, initial_balance=init_state["balance"], start_ms=lo - iv,
                                end_ms=hi, init_state=init_state)
        except ValueError as exc:
            raise GateInputError("state_initialisation_gap",
                                 f"replay refused the window: {str(exc).splitlines()[0]}") from None
    replay = rg.fills_from_replay(report.get("fills", []), iv, lo, hi)
    result = rg.compare_fills(live, replay, lo=lo, hi=hi, min_live_trades=s.min_live_trades, strict=s.strict,
                              missing_bars=_missing_bars(md, lo, hi))
    write_json_atomic(bundle / "live_fills.json", [f.__dict__ for f in live])
    write_json_atomic(bundle / "replay_fills.json", [f.__dict__ for f in replay])
    result.update({"config_id": cfg.config_id, "trace_checksum": report.get("trace_checksum"),
                   "state_source": "engine_checkpoint" if resumed is not None else "trades",
                   "window": {"start_ms": start, "end_ms": end, "interval": s.interval}})
    return result


def replay_from_checkpoint(s: Settings, cfg, iv: int, lo: int, hi: int, bundle: Path):
    """Replay the window from the trader's own engine checkpoint taken before it (streaming
    indicators, positions and balance exactly as the trader held them), or None when the trading DB
    has none (a DB from before checkpoint history, a live DB copied without it)."""
    import sqlite3

    from cpu_replay.api import run_replay
    from live import checkpoint
    from marketdata.candles import align_to_symbols, load_market_data
    from marketdata.funding import funding_matrix
    from marketdata.intervals import MarketDataError

    conn = sqlite3.connect(f"file:{s.trading_db}?mode=ro", uri=True)
    try:
        saved = checkpoint.load_at_or_before(conn, lo - 2 * iv)  # its last bar precedes the window's first
    finally:
        conn.close()
    if saved is None:
        return None
    if saved["config_id"] != cfg.config_id or saved["windows"] != [int(w) for w in cfg.windows()]:
        raise GateInputError("state_initialisation_gap",
                             f"the trader ran config {saved['config_id'][:12]}, the gate replays {cfg.config_id[:12]} "
                             f"({s.config}); point AI_QUANT_REPLAY_GATE_CONFIG at the trader's YAML")
    start = int(saved["last_bar_t"])
    try:
        md = align_to_symbols(load_market_data(s.candles_db, s.interval, start_ms=start, end_ms=hi - iv),
                              saved["symbols"])
        exit_md = _exit_candles(s, cfg, md)
    except MarketDataError as exc:
        raise GateInputError("market_data_alignment_gap", str(exc)) from None
    if int(md.times[0]) != start:
        raise GateInputError("market_data_alignment_gap",
                             f"the checkpoint's bar {start} is no longer in {s.candles_db}")
    write_json_atomic(bundle / "checkpoint_used.json", {k: v for k, v in saved.items() if k != "arrays"})
    funding = funding_matrix(s.funding_db, md) if s.funding_db else None
    report = run_replay(cfg, md, funding=funding, resume=checkpoint.decode(saved), exit_md=exit_md)
    return report, md


def _exit_candles(s: Settings, cfg, md):
    """The exit-interval candles beside the main DB when the config checks exits on a finer interval."""
    from marketdata.candles import load_market_data

    exit_iv = cfg.exit_interval
    if not exit_iv or exit_iv == s.interval:
        return None
    path = Path(s.candles_db.split(",")[0]).parent / f"candles_{exit_iv}.db"
    return load_market_data(str(path), exit_iv, start_ms=int(md.times[0]), end_ms=int(md.times[-1] + md.interval_ms - 1))


def _previous_last_passed(path: Path) -> int | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("last_passed_at_ms")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@app.command()
def main(now_ms: int = typer.Option(None, "--now-ms", help="evaluate as of this time (tests, reruns)")) -> None:
    """Run one replay alignment check and write the release blocker (exit 0 pass, 1 fail)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        s = settings_from_env()
    except GateInputError as exc:
        s, settings_error = None, exc
    else:
        settings_error = None
    root = s.bundle_root if s else Path(_env("BUNDLE_ROOT", DEFAULT_BUNDLE_ROOT))
    blocker = s.blocker_file if s else blocker_path(None)
    bundle = root / f"bundle_{datetime.fromtimestamp(now / 1000, UTC).strftime('%Y%m%dT%H%M%SZ')}"
    bundle.mkdir(parents=True, exist_ok=True)
    report_path = bundle / "alignment_report.json"
    window = {}
    try:
        if settings_error:
            raise settings_error
        window = {"start_ms": now - int((s.lag_minutes + s.window_minutes) * 60_000),
                  "end_ms": now - int(s.lag_minutes * 60_000), "interval": s.interval}
        result = run_alignment(s, now, bundle)
        codes, detail = result["reason_codes"], f"{result['matched']}/{result['live_fills']} live fills matched"
    except GateInputError as exc:
        codes, detail = [exc.code], str(exc)
        result = {"ok": False, "reason_codes": codes, "error": detail}
    except Exception as exc:  # noqa: BLE001 - fail closed: any crash must still block deploys
        codes, detail = ["scheduler_unhandled_exception"], f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        result = {"ok": False, "reason_codes": codes, "error": detail, "traceback": traceback.format_exc()}
    blocked = bool(codes)
    result.setdefault("window", window)
    write_json_atomic(report_path, {"generated_at_ms": now, "blocked": blocked, **result})
    last_passed = now if not blocked else _previous_last_passed(blocker)
    write_blocker(blocker, blocked, codes, str(report_path), result.get("window") or window, last_passed,
                  bundle_dir=str(bundle), generated_at_ms=now, detail=detail)
    if blocked:
        typer.echo(f"replay alignment gate BLOCKED: {', '.join(codes)}: {detail} (blocker {blocker})", err=True)
        raise typer.Exit(1)
    typer.echo(f"replay alignment gate PASS: {detail} (blocker {blocker})")


if __name__ == "__main__":
    app()
