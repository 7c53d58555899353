#!/usr/bin/env python3
"""Scheduled replay alignment gate (systemd timer, every 4 h): writes the release blocker.

Takes the trader's fills in [now - lag - window, now - lag], replays the same bars with the
canonical engine from the trader's state at the window start, compares fill by fill
(factory.replay_gate), and writes a bundle dir plus release_blocker.json. Fail-closed: a missing
input or a crash still writes blocked:true. Exit 0 pass, 1 fail.

The replay starts from the trader's own engine checkpoint before the window when the trading DB
keeps them (live/checkpoint.py: streaming indicators included, so the comparison is exact); an
older DB falls back to positions rebuilt from its trades.

Beside the fill-by-fill verdict, every exit the trader made is matched with the replay's exit of
the same position (factory.exit_alignment): its delay and adverse price difference, their median
and worst, fail the gate past the exit limits (--max-exit-delay-s, --max-median-exit-delay-s,
--max-exit-adverse-bps, --max-median-exit-adverse-bps, or the _MAX_EXIT_DELAY_S,
_MAX_MEDIAN_EXIT_DELAY_S, _MAX_EXIT_ADVERSE_BPS, _MAX_MEDIAN_EXIT_ADVERSE_BPS variables; defaults
in factory.exit_alignment.default_limits). The bundle gets alignment_report.txt, the same verdict
and exit table for people.

Environment (OPS_RUNBOOK): AI_QUANT_REPLAY_GATE_CANDLES_DB (required), _FUNDING_DB, _INTERVAL (1h),
_WINDOW_MINUTES (240), _LAG_MINUTES (2), _MIN_LIVE_TRADES (1), _STRICT_NO_RESIDUALS (1),
_BUNDLE_ROOT (/tmp/openclaw-ai-quant/replay_gate), _BLOCKER_FILE, _LIVE_DB or _PAPER_DB (live wins),
_CONFIG (config/strategy_overrides.yaml), _WARMUP_BARS (400); the trader's own
AI_QUANT_CANDLE_CLOSE_GRACE_MS and HL_LIVE_MARKET_SLIPPAGE_PCT feed the default exit limits.
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

from factory import exit_alignment as ea
from factory import replay_gate as rg
from factory.jsonio import write_json_atomic, write_text_atomic
from factory.release_blocker import blocker_path, write_blocker

DEFAULT_BUNDLE_ROOT = "/tmp/openclaw-ai-quant/replay_gate"
# exit limit settings: (env suffix, Limits field, factor to the field's unit)
EXIT_LIMIT_ENV = (("MAX_EXIT_DELAY_S", "max_delay_ms", 1000.0), ("MAX_MEDIAN_EXIT_DELAY_S", "max_median_delay_ms", 1000.0),
                  ("MAX_EXIT_ADVERSE_BPS", "max_adverse_bps", 1.0),
                  ("MAX_MEDIAN_EXIT_ADVERSE_BPS", "max_median_adverse_bps", 1.0))
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
    exit_limits: dict          # Limits field -> configured value (ms / bps); absent ones take the default


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

    exit_limits = {}
    for suffix, field, factor in EXIT_LIMIT_ENV:
        if _env(suffix):
            exit_limits[field] = _limit_value(f"AI_QUANT_REPLAY_GATE_{suffix}", number(suffix, "0")) * factor
    return Settings(
        candles_db=_env("CANDLES_DB"), funding_db=_env("FUNDING_DB") or None,
        trading_db=_env("LIVE_DB") or _env("PAPER_DB") or None, config=_env("CONFIG", "config/strategy_overrides.yaml"),
        interval=_env("INTERVAL", "1h"), window_minutes=number("WINDOW_MINUTES", "240"),
        lag_minutes=number("LAG_MINUTES", "2"), min_live_trades=int(number("MIN_LIVE_TRADES", "1")),
        strict=_env("STRICT_NO_RESIDUALS", "1") not in ("0", "false", "no"),
        bundle_root=Path(_env("BUNDLE_ROOT", DEFAULT_BUNDLE_ROOT)), blocker_file=blocker_path(None),
        warmup_bars=int(number("WARMUP_BARS", "400")), exit_limits=exit_limits,
    )


def _flag_number(flag: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise GateInputError("scheduler_unhandled_exception", f"{flag} {raw!r} is not a number") from None


def _limit_value(name: str, value: float) -> float:
    if not (value == value and abs(value) != float("inf") and value >= 0):
        raise GateInputError("scheduler_unhandled_exception",
                             f"{name}={value!r} must be a finite number >= 0 (exit limits cannot be disabled)")
    return float(value)


def exit_limits(s: Settings, cfg, main_interval_ms: int) -> ea.Limits:
    """The configured exit limits, the others from default_limits (the sub-bar is the config's exit or
    entry interval, else the main one; grace and slippage cap are the trader's own settings)."""
    from factory.promotion import PromotionGates
    from live.env import EnvError, env_float, env_int
    from marketdata.intervals import interval_ms as to_ms

    try:
        grace = env_int(os.environ, "AI_QUANT_CANDLE_CLOSE_GRACE_MS", 2000, lo=0, hi=600_000)
        cap = env_float(os.environ, "HL_LIVE_MARKET_SLIPPAGE_PCT", 0.01, lo=0.0005, hi=0.10)
    except EnvError as exc:
        raise GateInputError("scheduler_unhandled_exception", str(exc)) from None
    # the trader's step: the finest of the exit and entry intervals (one sub-bar grid), else the main bar
    sub = min([to_ms(iv) for iv in (cfg.exit_interval, cfg.entry_interval) if iv] + [main_interval_ms])
    base = ea.default_limits(sub, grace, cap * 1e4, PromotionGates().stress_slippage_bps)
    return ea.Limits(**{**base.__dict__, **s.exit_limits})


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
    try:
        live_exits = ea.read_live_exits(s.trading_db)
    except ea.ExitDataError as exc:
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
    limits = exit_limits(s, cfg, iv)
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
    entry_grid = to_ms(cfg.entry_interval) if cfg.entry_interval else iv
    exits = ea.compare_exits(live_exits, ea.replay_exits(report.get("fills", []), report.get("trades", [])),
                             entry_grid_ms=entry_grid, interval_ms=iv, lo=lo, hi=hi, limits=limits)
    result["reason_codes"] = result["reason_codes"] + exits["reason_codes"]
    result["ok"] = result["ok"] and exits["ok"]
    result["exit_alignment"] = exits
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
    """The sub-bar candles beside the main DB when the config decides exits and/or entries on a finer
    interval (marketdata.subbars.sub_bar_plan: one grid, as the trader steps it)."""
    from marketdata.candles import load_market_data
    from marketdata.subbars import SubBarError, sub_bar_plan

    try:
        sub_iv, _exits, _entries = sub_bar_plan(s.interval, cfg.entry_interval, cfg.exit_interval)
    except SubBarError as exc:
        raise GateInputError("market_data_alignment_gap", str(exc)) from None
    if sub_iv is None:
        return None
    path = Path(s.candles_db.split(",")[0]).parent / f"candles_{sub_iv}.db"
    return load_market_data(str(path), sub_iv, start_ms=int(md.times[0]), end_ms=int(md.times[-1] + md.interval_ms - 1))


def _previous_last_passed(path: Path) -> int | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("last_passed_at_ms")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def human_report(payload: dict) -> str:
    """alignment_report.txt: the verdict, the fill comparison's counts and the exit table."""
    lines = [f"Replay alignment gate: {'BLOCKED' if payload['blocked'] else 'PASS'}"
             + (f" ({', '.join(payload.get('reason_codes') or [])})" if payload["blocked"] else "")]
    w = payload.get("window") or {}
    if w:
        lines.append(f"window: {w.get('start_ms')} .. {w.get('end_ms')} ms, interval {w.get('interval')}")
    if payload.get("error"):
        lines.append(f"error: {payload['error']}")
    if "matched" in payload:
        lines.append(f"fills: {payload['matched']}/{payload['live_fills']} live fills matched, "
                     f"{payload['replay_fills']} replay fills, {payload['diffs_total']} differences "
                     f"(state from {payload.get('state_source')})")
    if payload.get("exit_alignment"):
        lines += ["", ea.text_table(payload["exit_alignment"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _exit_summary(result: dict) -> dict | None:
    """The exit figures promotion and operators read from the blocker (the table stays in the report)."""
    ex = result.get("exit_alignment")
    if not ex:
        return None
    return {k: ex[k] for k in ("ok", "reason_codes", "exits_total", "matched", "live_only", "replay_only", "delay_ms",
                               "adverse_bps", "limits")}


@app.command()
def main(now_ms: int = typer.Option(None, "--now-ms", help="evaluate as of this time (tests, reruns)"),
         max_exit_delay_s: str = typer.Option(None, "--max-exit-delay-s",
                                                help="limit on every exit's |delay| (default: exit sub-bar + grace)"),
         max_median_exit_delay_s: str = typer.Option(None, "--max-median-exit-delay-s",
                                                       help="limit on the median |delay| (default: half a sub-bar + grace)"),
         max_exit_adverse_bps: str = typer.Option(None, "--max-exit-adverse-bps",
                                                    help="limit on every exit's adverse price difference (default: "
                                                         "the trader's market slippage cap, 100 bps)"),
         max_median_exit_adverse_bps: str = typer.Option(None, "--max-median-exit-adverse-bps",
                                                           help="limit on the median adverse difference (default: "
                                                                "the promotion stress slippage, 20 bps)")) -> None:
    """Run one replay alignment check and write the release blocker (exit 0 pass, 1 fail)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    flags = (("--max-exit-delay-s", max_exit_delay_s), ("--max-median-exit-delay-s", max_median_exit_delay_s),
             ("--max-exit-adverse-bps", max_exit_adverse_bps),
             ("--max-median-exit-adverse-bps", max_median_exit_adverse_bps))
    try:
        s = settings_from_env()
        for (flag, value), (_suffix, field, factor) in zip(flags, EXIT_LIMIT_ENV, strict=True):
            if value is not None:  # a flag wins over its variable
                s.exit_limits[field] = _limit_value(flag, _flag_number(flag, value)) * factor
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
        detail += f"; {ea.summary_line(result['exit_alignment'])}"
    except GateInputError as exc:
        codes, detail = [exc.code], str(exc)
        result = {"ok": False, "reason_codes": codes, "error": detail}
    except Exception as exc:  # noqa: BLE001 - fail closed: any crash must still block deploys
        codes, detail = ["scheduler_unhandled_exception"], f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        result = {"ok": False, "reason_codes": codes, "error": detail, "traceback": traceback.format_exc()}
    blocked = bool(codes)
    result.setdefault("window", window)
    payload = {"generated_at_ms": now, "blocked": blocked, **result}
    write_json_atomic(report_path, payload)
    try:
        text = human_report(payload)
    except Exception as exc:  # noqa: BLE001 - the people's copy must never keep the blocker from being written
        text = f"Replay alignment gate: {'BLOCKED' if blocked else 'PASS'} (see {report_path}; text report failed: {exc!r})\n"
    write_text_atomic(bundle / "alignment_report.txt", text)
    last_passed = now if not blocked else _previous_last_passed(blocker)
    write_blocker(blocker, blocked, codes, str(report_path), result.get("window") or window, last_passed,
                  bundle_dir=str(bundle), generated_at_ms=now, detail=detail, exit_alignment=_exit_summary(result))
    if blocked:
        typer.echo(f"replay alignment gate BLOCKED: {', '.join(codes)}: {detail} (blocker {blocker})", err=True)
        raise typer.Exit(1)
    typer.echo(f"replay alignment gate PASS: {detail} (blocker {blocker})")


if __name__ == "__main__":
    app()
