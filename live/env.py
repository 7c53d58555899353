"""Every environment variable the runtime reads, parsed in one typed place.

A daemon that misreads a limit (a typo turning a cap off) is worse than one that refuses to start,
so every value is validated here and a bad one raises `EnvError` with one line naming the variable.
Defaults follow OPS_RUNBOOK.md ("Quick Reference: Environment Variables (Risk)").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from live.kill_switch import CLOSE_ONLY, HALT_ALL, KillSwitchValueError, default_kill_file, parse_env_kill

REPO_ROOT = Path(__file__).resolve().parents[1]
MODES = ("paper", "dry_live", "live")


class EnvError(ValueError):
    """One-line message naming the variable and what is wrong with it."""


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_float(env: Mapping[str, str], name: str, default: float, lo: float | None = None,
              hi: float | None = None) -> float:
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise EnvError(f"{name}={raw!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise EnvError(f"{name}={raw!r} must be finite")
    if lo is not None and value < lo:
        raise EnvError(f"{name}={raw!r} must be >= {lo:g}")
    if hi is not None and value > hi:
        raise EnvError(f"{name}={raw!r} must be <= {hi:g}")
    return value


def env_int(env: Mapping[str, str], name: str, default: int, lo: int | None = None,
            hi: int | None = None) -> int:
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise EnvError(f"{name}={raw!r} is not an integer") from None
    if lo is not None and value < lo:
        raise EnvError(f"{name}={raw!r} must be >= {lo}")
    if hi is not None and value > hi:
        raise EnvError(f"{name}={raw!r} must be <= {hi}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = _raw(env, name)
    if raw is None:
        return default
    low = raw.lower()
    if low in ("1", "true", "yes", "y", "on"):
        return True
    if low in ("0", "false", "no", "n", "off"):
        return False
    raise EnvError(f"{name}={raw!r} is not a boolean (use 1 or 0)")


def env_path(env: Mapping[str, str], name: str, default: str | Path | None) -> Path | None:
    raw = _raw(env, name)
    if raw is None:
        return None if default is None else _anchor(Path(default))
    return _anchor(Path(raw).expanduser())


def _anchor(p: Path) -> Path:
    """Relative paths are relative to the repo root (systemd units run from anywhere)."""
    return p if p.is_absolute() else REPO_ROOT / p


class RiskLimits(BaseModel):
    """RiskManager limits; 0 means "off" where the runbook says so."""

    model_config = ConfigDict(frozen=True)

    kill_switch: str | None = None            # close_only | halt_all | clear | None, from the env
    kill_switch_file: Path | None = None
    kill_switch_poll_s: float = 2.0
    max_drawdown_pct: float = 0.0
    safe_mode_drawdown_pct: float = 20.0
    max_daily_loss_pct: float = 10.0
    max_leverage_exposure: float = 5.0
    max_entry_orders_per_min: int = 30
    max_entry_orders_per_min_per_symbol: int = 6
    max_exit_orders_per_min: int = 120
    max_cancels_per_min: int = 120
    max_notional_per_window_usd: float = 0.0
    notional_window_s: float = 60.0
    min_order_gap_ms: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RiskLimits:
        env = os.environ if env is None else env
        kill_mode_raw = (_raw(env, "AI_QUANT_KILL_SWITCH_MODE") or CLOSE_ONLY).lower()
        kill_mode = {"close_only": CLOSE_ONLY, "close": CLOSE_ONLY, "halt_all": HALT_ALL,
                     "halt": HALT_ALL}.get(kill_mode_raw)
        if kill_mode is None:
            raise EnvError(f"AI_QUANT_KILL_SWITCH_MODE={kill_mode_raw!r} must be close_only or halt_all")
        try:
            kill = parse_env_kill(env.get("AI_QUANT_KILL_SWITCH"), kill_mode)
        except KillSwitchValueError as exc:
            raise EnvError(str(exc)) from None
        per_min = dict(lo=1, hi=1000)
        return cls(
            kill_switch=kill,
            kill_switch_file=env_path(env, "AI_QUANT_KILL_SWITCH_FILE", None) or default_kill_file(env),
            kill_switch_poll_s=env_float(env, "AI_QUANT_KILL_SWITCH_POLL_S", 2.0, lo=0.1, hi=60),
            max_drawdown_pct=env_float(env, "AI_QUANT_RISK_MAX_DRAWDOWN_PCT", 0.0, lo=0, hi=100),
            safe_mode_drawdown_pct=env_float(env, "AI_QUANT_RISK_SAFE_MODE_DRAWDOWN_PCT", 20.0, lo=0, hi=100),
            max_daily_loss_pct=env_float(env, "AI_QUANT_RISK_MAX_DAILY_LOSS_PCT", 10.0, lo=0, hi=100),
            max_leverage_exposure=env_float(env, "AI_QUANT_RISK_MAX_LEVERAGE_EXPOSURE", 5.0, lo=0, hi=100),
            max_entry_orders_per_min=env_int(env, "AI_QUANT_RISK_MAX_ENTRY_ORDERS_PER_MIN", 30, **per_min),
            max_entry_orders_per_min_per_symbol=env_int(
                env, "AI_QUANT_RISK_MAX_ENTRY_ORDERS_PER_MIN_PER_SYMBOL", 6, **per_min),
            max_exit_orders_per_min=env_int(env, "AI_QUANT_RISK_MAX_EXIT_ORDERS_PER_MIN", 120, **per_min),
            max_cancels_per_min=env_int(env, "AI_QUANT_RISK_MAX_CANCELS_PER_MIN", 120, **per_min),
            max_notional_per_window_usd=env_float(env, "AI_QUANT_RISK_MAX_NOTIONAL_PER_WINDOW_USD", 0.0, lo=0),
            notional_window_s=env_float(env, "AI_QUANT_RISK_NOTIONAL_WINDOW_S", 60.0, lo=10, hi=3600),
            min_order_gap_ms=env_int(env, "AI_QUANT_RISK_MIN_ORDER_GAP_MS", 0, lo=0, hi=60_000),
        )


class LiveSettings(BaseModel):
    """Exchange, OMS and gate settings of dry_live / live (docs/LIVE.md)."""

    model_config = ConfigDict(frozen=True)

    live_enable: bool = False
    live_confirm: str = ""
    hard_kill: bool = False
    hl_base_url: str = "https://api.hyperliquid.xyz"
    hl_timeout_s: float = 10.0
    hl_read_attempts: int = 4         # transient read errors (5xx, 429, timeouts) retried with backoff
    hl_retry_base_s: float = 0.25
    slippage_pct: float = 0.01
    order_expires_s: float = 15.0
    bump_to_min_notional: bool = False
    cloid_prefix: str = "aiq_"
    max_bar_age_s: float | None = None       # None: one interval
    reconcile_secs: float = 10.0
    stale_order_ms: int = 30_000
    unknown_stale_order_ms: int = 300_000
    exit_retries: int = 2
    rest_fills_sync_secs: float = 60.0
    backfill_ms: int = 7_200_000
    match_ttl_ms: int = 600_000
    ws_enable: bool = True
    ws_stale_mids_s: float = 60.0
    ws_stale_strikes: int = 2
    fill_ingest_fails_to_kill: int = 5
    protective_stop_atr: float = 1.5  # live/protection.py: k of the catastrophe stop; 0 = off

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LiveSettings:
        age = _raw(env, "AI_QUANT_LIVE_MAX_BAR_AGE_S")
        return cls(
            live_enable=env_bool(env, "AI_QUANT_LIVE_ENABLE", False),
            live_confirm=(env.get("AI_QUANT_LIVE_CONFIRM") or "").strip(),
            hard_kill=env_bool(env, "AI_QUANT_HARD_KILL_SWITCH", False),
            hl_base_url=(_raw(env, "AI_QUANT_HL_BASE_URL") or "https://api.hyperliquid.xyz").rstrip("/"),
            hl_timeout_s=env_float(env, "AI_QUANT_HL_TIMEOUT_S", 10.0, lo=0.5, hi=30),
            hl_read_attempts=env_int(env, "AI_QUANT_HL_READ_ATTEMPTS", 4, lo=1, hi=20),
            hl_retry_base_s=env_float(env, "AI_QUANT_HL_RETRY_BASE_S", 0.25, lo=0.0, hi=10),
            slippage_pct=env_float(env, "HL_LIVE_MARKET_SLIPPAGE_PCT", 0.01, lo=0.0005, hi=0.10),
            order_expires_s=env_float(env, "AI_QUANT_HL_ORDER_EXPIRES_S", 15.0, lo=0.2, hi=120),
            bump_to_min_notional=env_bool(env, "AI_QUANT_LIVE_BUMP_TO_MIN_NOTIONAL", False),
            cloid_prefix=_raw(env, "AI_QUANT_OMS_CLOID_PREFIX") or "aiq_",
            max_bar_age_s=None if age is None else env_float(env, "AI_QUANT_LIVE_MAX_BAR_AGE_S", 0.0, lo=1),
            reconcile_secs=env_float(env, "AI_QUANT_OMS_RECONCILE_SECS", 10.0, lo=0.5, hi=3600),
            stale_order_ms=env_int(env, "AI_QUANT_OMS_STALE_ORDER_MS", 30_000, lo=0),
            unknown_stale_order_ms=env_int(env, "AI_QUANT_OMS_UNKNOWN_STALE_ORDER_MS", 300_000, lo=0),
            exit_retries=env_int(env, "AI_QUANT_LIVE_EXIT_RETRIES", 2, lo=0, hi=10),
            rest_fills_sync_secs=env_float(env, "AI_QUANT_LIVE_REST_FILLS_SYNC_SECS", 60.0, lo=0.1, hi=86_400),
            backfill_ms=env_int(env, "AI_QUANT_LIVE_BACKFILL_MS", 7_200_000, lo=60_000),
            match_ttl_ms=env_int(env, "AI_QUANT_OMS_MATCH_TTL_MS", 600_000, lo=0),
            ws_enable=env_bool(env, "AI_QUANT_WS_ENABLE", True),
            ws_stale_mids_s=env_float(env, "AI_QUANT_WS_STALE_MIDS_S", 60.0, lo=0.05, hi=3600),
            ws_stale_strikes=env_int(env, "AI_QUANT_WS_STALE_STRIKES", 2, lo=1, hi=1000),
            fill_ingest_fails_to_kill=env_int(env, "AI_QUANT_HEALTH_GUARD_FILL_INGEST_FAILS_TO_KILL", 5, lo=1, hi=1000),
            protective_stop_atr=env_float(env, "AI_QUANT_LIVE_PROTECTIVE_STOP_ATR", 1.5, lo=0, hi=50),
        )

    def gate_env(self, mode: str) -> dict[str, str]:
        return {"AI_QUANT_MODE": mode, "AI_QUANT_LIVE_ENABLE": "1" if self.live_enable else "0",
                "AI_QUANT_LIVE_CONFIRM": self.live_confirm,
                "AI_QUANT_HARD_KILL_SWITCH": "1" if self.hard_kill else ""}


class Settings(BaseModel):
    """The daemon's settings. Build with `load_settings()`; never read os.environ elsewhere."""

    model_config = ConfigDict(frozen=True)

    mode: str
    strategy_yaml: Path
    strategy_mode: str | None
    strategy_mode_file: Path
    mode_switch_enable: bool
    mode_switch_cooldown_s: float
    mode_switch_exit_on_restart_required: bool
    db_path: Path
    candles_db_dir: Path
    funding_db: Path | None
    interval: str | None
    symbols: tuple[str, ...]
    lock_path: Path
    secrets_path: Path
    heartbeat_secs: float
    paper_balance: float
    loop_target_secs: float
    candle_close_grace_ms: int
    runtime_log_keep_days: int
    risk: RiskLimits
    live: LiveSettings = None  # type: ignore[assignment]
    alerts: Any = None  # live.alerts.AlertSettings (imported lazily: that module builds on this one)

    @property
    def is_paper(self) -> bool:
        return self.mode == "paper"


def _symbols(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = _raw(env, "AI_QUANT_SYMBOLS") or ""
    out: list[str] = []
    for part in raw.split(","):
        sym = part.strip().upper()
        if not sym:
            continue
        if not sym.replace("-", "").replace("_", "").isalnum():
            raise EnvError(f"AI_QUANT_SYMBOLS: {part.strip()!r} is not a symbol name")
        if sym not in out:
            out.append(sym)
    return tuple(out)


def _interval(env: Mapping[str, str]) -> str | None:
    raw = _raw(env, "AI_QUANT_INTERVAL")
    if raw is None:
        return None
    iv = raw.lower()
    if len(iv) < 2 or iv[-1] not in "mhdw" or not iv[:-1].isdigit() or int(iv[:-1]) <= 0:
        raise EnvError(f"AI_QUANT_INTERVAL={raw!r} is not an interval like 1m, 5m, 1h or 1d")
    return iv


def _strategy_mode(env: Mapping[str, str]) -> str | None:
    from live.strategy_modes import normalize_mode

    raw = _raw(env, "AI_QUANT_STRATEGY_MODE")
    if raw is None:
        return None
    try:
        return normalize_mode(raw)
    except ValueError as exc:
        raise EnvError(str(exc)) from None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse the environment; raises EnvError (one line, naming the variable) on a bad value."""
    env = os.environ if environ is None else environ
    mode = (_raw(env, "AI_QUANT_MODE") or "paper").lower()
    if mode not in MODES:
        raise EnvError(f"AI_QUANT_MODE={mode!r} must be one of paper, dry_live, live")
    default_db = "trading_engine.db" if mode == "paper" else "trading_engine_live.db"
    default_lock = "ai_quant_paper.lock" if mode == "paper" else "ai_quant_live.lock"
    return Settings(
        mode=mode,
        strategy_yaml=env_path(env, "AI_QUANT_STRATEGY_YAML", "config/strategy_overrides.yaml"),
        strategy_mode=_strategy_mode(env),
        strategy_mode_file=env_path(env, "AI_QUANT_STRATEGY_MODE_FILE", "artifacts/state/strategy_mode.txt"),
        mode_switch_enable=env_bool(env, "AI_QUANT_MODE_SWITCH_ENABLE", False),
        mode_switch_cooldown_s=env_float(env, "AI_QUANT_MODE_SWITCH_COOLDOWN_S", 0.0, lo=0),
        mode_switch_exit_on_restart_required=env_bool(env, "AI_QUANT_MODE_SWITCH_EXIT_ON_RESTART_REQUIRED"),
        db_path=env_path(env, "AI_QUANT_DB_PATH", default_db),
        candles_db_dir=env_path(env, "AI_QUANT_CANDLES_DB_DIR", "candles_dbs"),
        funding_db=env_path(env, "AI_QUANT_FUNDING_DB", None),
        interval=_interval(env),
        symbols=_symbols(env),
        lock_path=env_path(env, "AI_QUANT_LOCK_PATH", default_lock),
        secrets_path=env_path(env, "AI_QUANT_SECRETS_PATH", Path.home() / ".config/openclaw/ai-quant-secrets.json"),
        heartbeat_secs=env_float(env, "AI_QUANT_HEARTBEAT_SECS", 30.0, lo=1, hi=3600),
        paper_balance=env_float(env, "AI_QUANT_PAPER_BALANCE", 10_000.0, lo=1.0),
        loop_target_secs=env_float(env, "AI_QUANT_LOOP_TARGET_SECS", 5.0, lo=0.5, hi=3600),
        candle_close_grace_ms=env_int(env, "AI_QUANT_CANDLE_CLOSE_GRACE_MS", 2000, lo=0, hi=600_000),
        runtime_log_keep_days=env_int(env, "AI_QUANT_RUNTIME_LOG_KEEP_DAYS", 14, lo=1, hi=3650),
        risk=RiskLimits.from_env(env),
        live=LiveSettings.from_env(env),
        alerts=_alert_settings(env),
    )


def _alert_settings(env: Mapping[str, str]):
    from live.alerts import AlertSettings

    return AlertSettings.from_env(env)
