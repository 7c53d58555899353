"""The strategy config schema: what a key may hold, and what its default is.

The pydantic models here are the single statement of the core keys' types, ranges and defaults
(``strategy.params.PARAM_SPECS`` / ``WINDOW_SPECS``, and so the kernel's parameter vector, are
derived from the trade, filters, thresholds and indicators sections in declaration order). They
are strict on purpose: a quoted "2.0" or a ``yes`` where a number belongs is a mistake in a file
that moves money, so it is reported rather than coerced. Merging, file loading and error
collection live in ``strategy.config``.
"""

from __future__ import annotations

import difflib
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

VALID_INTERVALS: tuple[str, ...] = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d")
_INTERVAL_MINUTES = {"m": 1, "h": 60, "d": 1440}

MODE_NAMES: tuple[str, ...] = ("primary", "fallback", "conservative", "flat")
MODE_ALIASES: dict[str, str] = {
    "m1": "primary",
    "mode1": "primary",
    "m2": "fallback",
    "m3": "conservative",
    "safe": "conservative",
    "safety": "conservative",
    "halt": "flat",
    "pause": "flat",
}
SYMBOL_SECTIONS: tuple[str, ...] = ("trade", "filters", "thresholds")
# Caps over the whole portfolio: a per-symbol value would let one symbol break the global cap.
PORTFOLIO_WIDE_KEYS: tuple[str, ...] = (
    "trade.max_open_positions", "trade.max_total_margin_pct", "trade.max_entry_orders_per_loop",
)
PORTFOLIO_WIDE_MESSAGE = "is a portfolio-wide cap (one limit over all symbols); set it under global.trade, not per symbol"
# Indicator windows that the reference files under thresholds.entry: one window per run (the
# indicators are computed once for every symbol), so they cannot be set per symbol either.
WINDOW_KEYS_IN_THRESHOLDS: tuple[str, ...] = (
    "thresholds.entry.ave_avg_atr_window", "thresholds.entry.slow_drift_slope_window",
)
WINDOW_GLOBAL_MESSAGE = "is an indicator window (one per run, for every symbol); set it under global, not per symbol"
GLOBAL_ONLY_KEYS: dict[str, str] = {
    **{k: PORTFOLIO_WIDE_MESSAGE for k in PORTFOLIO_WIDE_KEYS},
    **{k: WINDOW_GLOBAL_MESSAGE for k in WINDOW_KEYS_IN_THRESHOLDS},
}
TOP_LEVEL_KEYS: tuple[str, ...] = ("global", "symbols", "live", "modes")
OVERLAY_KEYS: tuple[str, ...] = ("global", "symbols")

# Keys the earlier implementation had (spec/reference/strategy_overrides.reference.yaml) that
# this version does not implement yet, by section path under `global`. A key listed here is
# rejected with "not implemented" instead of "unknown", so nobody thinks it silently applies.
# Every key of the reference config acts now; the table stays for the next key that does not.
REFERENCE_ONLY_KEYS: dict[str, frozenset[str]] = {}

# Keys the reference's canonical backtester accepts and never reads (docs/STRATEGY.md, "Keys
# accepted that do not act"): its live trader's keys (BBO fills, the regime gate), cooldowns in
# seconds that are inert between bar closes, and the dynamic take-profit multiples it computes but
# never applies. A config that carries them loads, with one warning line naming them.
INERT_KEYS: dict[str, frozenset[str]] = {
    "trade": frozenset({"use_bbo_for_fills", "entry_cooldown_s", "exit_cooldown_s"}),
    "thresholds.tp_and_momentum": frozenset({"adx_weak_lt", "tp_mult_strong", "tp_mult_weak"}),
    "market_regime": frozenset(
        """
        enable_regime_gate regime_gate_breadth_low regime_gate_breadth_high
        regime_gate_btc_adx_min regime_gate_btc_atr_pct_min regime_gate_fail_open
        """.split()
    ),
}
INERT_MESSAGE = "accepted; the reference backtester never reads it, so it does not act here either"


def interval_minutes(interval: str) -> int:
    return int(interval[:-1]) * _INTERVAL_MINUTES[interval[-1]]


def _whole_float_to_int(value: Any) -> Any:
    """YAML writers sometimes emit 20.0 for a count; accept it, but never 20.5 or "20"."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Count = Annotated[int, BeforeValidator(_whole_float_to_int)]
Window = Annotated[Count, Field(ge=1)]


def _at_least_two(why: str) -> AfterValidator:
    def check(value: int) -> int:
        if value < 2:
            raise ValueError(f"must be >= 2 (got {value}): {why}")
        return value

    return AfterValidator(check)


# Windows that measure a spread over their bars: one bar has no spread, so the indicator is degenerate.
StochWindow = Annotated[
    Count, _at_least_two("stoch RSI K over 1 bar divides by max - min = 0, so K is NaN forever and no entry passes")
]
BbWindow = Annotated[Count, _at_least_two("a Bollinger width over 1 bar is a standard deviation of one value, always 0")]
AdxWindow = Annotated[Count, _at_least_two("ADX over 1 bar is unsmoothed DX, jumping between 0 and 100")]
NonNeg = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Percent100 = Annotated[float, Field(ge=0, le=100)]  # RSI and ADX live on a 0..100 scale
Leverage = Annotated[float, Field(ge=1, le=50)]
Confidence = Literal["low", "medium", "high"]
MacdMode = Literal["accel", "sign", "none"]
ExitFill = Literal["close", "touch"]
Interval = Literal["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class TradeConfig(_Section):
    allocation_pct: Fraction = 0.03
    leverage: Leverage = 2.0
    max_open_positions: Annotated[Count, Field(ge=1)] = 20
    max_total_margin_pct: Fraction = 0.25
    min_notional_usd: NonNeg = 10.0
    bump_to_min_notional: bool = True
    min_atr_pct: NonNeg = 0.003
    sl_atr_mult: Positive = 2.0
    tp_atr_mult: Positive = 6.0
    trailing_start_atr: NonNeg = 1.0
    trailing_distance_atr: Positive = 0.5
    trailing_start_atr_low_conf: NonNeg = 0.0  # 0 = low-confidence positions use trailing_start_atr
    trailing_distance_atr_low_conf: NonNeg = 0.0  # 0 = they use trailing_distance_atr
    enable_vol_buffered_trailing: bool = True
    enable_breakeven_stop: bool = False
    breakeven_start_atr: NonNeg = 0.5
    breakeven_buffer_atr: NonNeg = 0.05
    enable_partial_tp: bool = True
    tp_partial_pct: Annotated[float, Field(gt=0, lt=1)] = 0.7  # 0 sells nothing, 1 is the full target
    tp_partial_atr_mult: NonNeg = 1.0  # 0 = the partial at the full take-profit, and no full take-profit after it
    tp_partial_min_notional_usd: NonNeg = 10.0
    enable_pyramiding: bool = True
    max_adds_per_symbol: Annotated[Count, Field(ge=0)] = 2
    add_fraction_of_base_margin: NonNeg = 0.5
    add_cooldown_minutes: NonNeg = 60.0
    add_min_profit_atr: NonNeg = 0.5
    add_min_confidence: Confidence = "medium"
    reentry_cooldown_minutes: NonNeg = 60.0  # 0 switches the re-entry cooldown off; its length is below
    reentry_cooldown_min_mins: NonNeg = 45.0  # the cooldown at ADX >= 40
    reentry_cooldown_max_mins: NonNeg = 180.0  # the cooldown at ADX <= 25 (linear in between)
    max_entry_orders_per_loop: Annotated[Count, Field(ge=0)] = 6  # new positions per bar, at most
    enable_ssf_filter: bool = True  # a new long needs a positive MACD histogram, a short a negative one
    enable_reef_filter: bool = True  # no new long / short at an extreme RSI
    reef_adx_threshold: Percent100 = 45.0
    reef_long_rsi_block_gt: Percent100 = 70.0
    reef_short_rsi_block_lt: Percent100 = 30.0
    reef_long_rsi_extreme_gt: Percent100 = 75.0
    reef_short_rsi_extreme_lt: Percent100 = 25.0
    entry_min_confidence: Confidence = "low"
    enable_dynamic_leverage: bool = True
    leverage_low: Leverage = 1.0
    leverage_medium: Leverage = 5.0
    leverage_high: Leverage = 5.0
    leverage_max_cap: Annotated[float, Field(ge=0, le=50)] = 0.0  # 0 = no cap
    enable_dynamic_sizing: bool = False
    confidence_mult_high: NonNeg = 1.0
    confidence_mult_medium: NonNeg = 0.7
    confidence_mult_low: NonNeg = 0.5
    adx_sizing_min_mult: Fraction = 0.6  # dynamic sizing: x clamp(ADX / adx_sizing_full_adx, this, 1)
    adx_sizing_full_adx: Positive = 40.0
    vol_baseline_pct: NonNeg = 0.01  # dynamic sizing: x clamp(this / (ATR / close), vol_scalar_min, vol_scalar_max)
    vol_scalar_min: NonNeg = 0.5
    vol_scalar_max: NonNeg = 1.0
    enable_rsi_overextension_exit: bool = True
    rsi_exit_ub_lo_profit: Percent100 = 80.0
    rsi_exit_lb_lo_profit: Percent100 = 20.0
    rsi_exit_profit_atr_switch: NonNeg = 1.5  # at this many ATRs in profit the _hi_profit limits apply
    rsi_exit_ub_hi_profit: Percent100 = 70.0
    rsi_exit_lb_hi_profit: Percent100 = 30.0
    rsi_exit_ub_lo_profit_low_conf: Percent100 = 0.0  # 0 = low-confidence positions use the main value
    rsi_exit_ub_hi_profit_low_conf: Percent100 = 0.0
    rsi_exit_lb_lo_profit_low_conf: Percent100 = 0.0
    rsi_exit_lb_hi_profit_low_conf: Percent100 = 0.0
    smart_exit_adx_exhaustion_lt: Percent100 = 0.0  # fallback exhaustion level (0 = off)
    smart_exit_adx_exhaustion_lt_low_conf: Percent100 = 0.0
    # the funding-headwind exit on our real funding rates (ours: the reference's rule has no switch and
    # never fires in its backtests, whose funding rate is 0; off keeps that behaviour)
    enable_funding_headwind_exit: bool = False
    tsme_min_profit_atr: NonNeg = 1.0
    tsme_require_adx_slope_negative: bool = True
    block_exits_on_extreme_dev: bool = False
    glitch_price_dev_pct: NonNeg = 0.40
    glitch_atr_mult: NonNeg = 12.0
    reverse_entry_signal: bool = False
    # Costs (docs/STRATEGY.md, "Fills and costs"): entries fill slippage_bps against us, exits
    # exit_slippage_bps (the reference: 10 and 0.5); every fill pays taker_fee_bps (Hyperliquid's
    # base-tier perp taker fee, 0.045 %; the reference hard-codes 3.5, a higher volume tier).
    slippage_bps: Annotated[float, Field(ge=0, le=1000)] = 10.0
    exit_slippage_bps: Annotated[float, Field(ge=0, le=1000)] = 0.5
    size_multiplier: NonNeg = 1.0  # 0 = open no new risk (the `flat` mode uses it)
    taker_fee_bps: Annotated[float, Field(ge=0, le=100)] = 4.5
    maker_fee_bps: Annotated[float, Field(ge=-10, le=100)] = 1.5  # negative = rebate
    simulate_funding: bool = True


class IndicatorsConfig(_Section):
    ema_fast_window: Window = 20
    ema_slow_window: Window = 50
    ema_macro_window: Window = 200
    adx_window: AdxWindow = 14
    atr_window: Window = 14
    rsi_window: Window = 14
    bb_window: BbWindow = 20
    bb_width_avg_window: Window = 30
    vol_sma_window: Window = 20
    vol_trend_window: Window = 5
    stoch_rsi_window: StochWindow = 14
    stoch_rsi_smooth1: Window = 3
    stoch_rsi_smooth2: Window = 3

    @field_validator("ema_slow_window")
    @classmethod
    def _slow_after_fast(cls, slow: int, info: ValidationInfo) -> int:
        fast = info.data.get("ema_fast_window")
        if fast is not None and fast >= slow:
            raise ValueError(f"must be > ema_fast_window (ema_fast_window={fast}, ema_slow_window={slow})")
        return slow


class FiltersConfig(_Section):
    enable_extension_filter: bool = True
    enable_ranging_filter: bool = True
    require_btc_alignment: bool = True
    require_volume_confirmation: bool = False
    require_macro_alignment: bool = False
    require_adx_rising: bool = True
    adx_rising_saturation: Percent100 = 40.0
    use_stoch_rsi_filter: bool = True
    enable_anomaly_filter: bool = False  # no entry on a bar that jumped, or far from its fast EMA
    vol_confirm_include_prev: bool = True  # volume confirmation: above its SMA *or* the SMA rising


class EntryThresholds(_Section):
    min_adx: Percent100 = 22.0
    max_dist_ema_fast: NonNeg = 0.04
    btc_adx_override: Percent100 = 40.0
    high_conf_volume_mult: NonNeg = 2.5
    macd_hist_entry_mode: MacdMode = "accel"
    # AVE: a volatile bar (ATR above ave_atr_ratio_gt x its mean over ave_avg_atr_window bars)
    # needs ave_adx_mult x the minimum ADX (a multiple <= 0 counts as 1)
    ave_enabled: bool = True
    ave_atr_ratio_gt: NonNeg = 1.5
    ave_adx_mult: float = 1.25
    ave_avg_atr_window: Window = 50  # an indicator window (global only), not a parameter
    # pullback continuation entries: the close crosses back over the fast EMA in the trend's direction
    enable_pullback_entries: bool = False
    pullback_confidence: Confidence = "low"
    pullback_min_adx: Percent100 = 22.0
    pullback_rsi_long_min: Percent100 = 50.0
    pullback_rsi_short_max: Percent100 = 50.0
    pullback_require_macd_sign: bool = True
    # slow-drift entries: a slow EMA climbing (falling) at least slow_drift_min_slope_pct of the close
    # over slow_drift_slope_window bars; always low confidence
    enable_slow_drift_entries: bool = False
    slow_drift_slope_window: Window = 20  # an indicator window (global only), not a parameter
    slow_drift_min_slope_pct: NonNeg = 0.0006
    slow_drift_min_adx: Percent100 = 10.0
    slow_drift_rsi_long_min: Percent100 = 50.0
    slow_drift_rsi_short_max: Percent100 = 50.0
    slow_drift_require_macd_sign: bool = True


class RangingThresholds(_Section):
    min_signals: Annotated[Count, Field(ge=1, le=3)] = 2  # of the three ranging signals
    adx_below: Percent100 = 21.0
    bb_width_ratio_below: NonNeg = 0.8
    rsi_low: Percent100 = 47.0
    rsi_high: Percent100 = 53.0

    @field_validator("rsi_high")
    @classmethod
    def _band_ordered(cls, high: float, info: ValidationInfo) -> float:
        low = info.data.get("rsi_low")
        if low is not None and low > high:
            raise ValueError(f"must be >= rsi_low (rsi_low={low:g}, rsi_high={high:g})")
        return high


class TpAndMomentumThresholds(_Section):
    adx_strong_gt: Percent100 = 40.0
    rsi_long_strong: Percent100 = 52.0
    rsi_long_weak: Percent100 = 56.0
    rsi_short_strong: Percent100 = 48.0
    rsi_short_weak: Percent100 = 44.0


class StochRsiThresholds(_Section):
    block_long_if_k_gt: Fraction = 0.85
    block_short_if_k_lt: Fraction = 0.15


class AnomalyThresholds(_Section):
    price_change_pct_gt: NonNeg = 0.10  # |close / previous close - 1| above this is an anomaly
    ema_fast_dev_pct_gt: NonNeg = 0.50  # |close - fast EMA| / fast EMA above this is an anomaly


class ThresholdsConfig(_Section):
    entry: EntryThresholds = EntryThresholds()
    ranging: RangingThresholds = RangingThresholds()
    tp_and_momentum: TpAndMomentumThresholds = TpAndMomentumThresholds()
    stoch_rsi: StochRsiThresholds = StochRsiThresholds()
    anomaly: AnomalyThresholds = AnomalyThresholds()


class MarketRegimeConfig(_Section):
    """Breadth = the percentage of symbols whose previous bar had the fast EMA above the slow one."""

    enable_regime_filter: bool = False  # no short above breadth_block_short_above, no long below ..._long_below
    enable_auto_reverse: bool = False  # reverse every signal while auto_reverse_breadth_low <= breadth <= _high
    breadth_block_short_above: Percent100 = 90.0
    breadth_block_long_below: Percent100 = 10.0
    auto_reverse_breadth_low: Percent100 = 10.0
    auto_reverse_breadth_high: Percent100 = 90.0


class EngineConfig(_Section):
    interval: Interval = "1h"
    entry_interval: Interval | None = None
    exit_interval: Interval | None = None
    # close: every exit is decided on the close of the bar (or exit sub-bar) and fills at that close,
    # as the reference backtester does; touch: stops and targets fill at their level when the range
    # reaches it (at the open on a gap).
    exit_fill: ExitFill = "close"
    # bars of its own a symbol must have (this one included) before it may enter or add; exits
    # always run. 0 = only each indicator's own readiness; the reference's backtester waits 200
    # (its `lookback`)
    symbol_warmup_bars: Annotated[Count, Field(ge=0)] = 0
    signal_on_candle_close: bool = True
    loop_target_s: Positive = 5.0
    candle_close_grace_ms: Annotated[Count, Field(ge=0)] = 2000

    @field_validator("entry_interval", "exit_interval")
    @classmethod
    def _sub_interval_tiles_main(cls, sub: str | None, info: ValidationInfo) -> str | None:
        main = info.data.get("interval")
        if sub is None or main is None:
            return sub
        if interval_minutes(main) % interval_minutes(sub) != 0:
            raise ValueError(f"must be {main} or a shorter interval that divides it evenly (got {sub})")
        return sub


def _sorted_unique(symbols: Any) -> Any:
    """An exclusion list is a set; sorting it keeps config_id independent of its order."""
    if isinstance(symbols, list) and all(isinstance(s, str) for s in symbols):
        return sorted(set(symbols))
    return symbols


class GlobalConfig(_Section):
    trade: TradeConfig = TradeConfig()
    indicators: IndicatorsConfig = IndicatorsConfig()
    filters: FiltersConfig = FiltersConfig()
    thresholds: ThresholdsConfig = ThresholdsConfig()
    market_regime: MarketRegimeConfig = MarketRegimeConfig()
    engine: EngineConfig = EngineConfig()
    watchlist_exclude: Annotated[list[str], BeforeValidator(_sorted_unique)] = []


# --- schema introspection -------------------------------------------------------------------


def section_model(rel_path: str) -> type[_Section] | None:
    """The model of a section path under `global` ("" -> GlobalConfig), or None for a leaf/unknown."""
    model: type[_Section] = GlobalConfig
    for part in [p for p in rel_path.split(".") if p]:
        field = model.model_fields.get(part)
        if field is None or not _is_section(field.annotation):
            return None
        model = field.annotation  # type: ignore[assignment]
    return model


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, _Section)


def field_names(model: type[_Section]) -> tuple[str, ...]:
    return tuple(model.model_fields)


def is_section_field(model: type[_Section], name: str) -> bool:
    return _is_section(model.model_fields[name].annotation)


@cache
def leaf_adapter(rel_path: str) -> TypeAdapter | None:
    """A validator for one leaf's type and range alone (no cross-field rules), or None."""
    parent, _, name = rel_path.rpartition(".")
    model = section_model(parent)
    if model is None or name not in model.model_fields or is_section_field(model, name):
        return None
    field = model.model_fields[name]
    annotated = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return TypeAdapter(annotated, config=ConfigDict(strict=True, allow_inf_nan=False))


def leaf_paths(model: type[_Section] = GlobalConfig, prefix: str = "") -> list[str]:
    out: list[str] = []
    for name in model.model_fields:
        path = f"{prefix}{name}"
        if is_section_field(model, name):
            out.extend(leaf_paths(model.model_fields[name].annotation, path + "."))
        else:
            out.append(path)
    return out


def key_problem(section_rel: str, key: str, candidates: tuple[str, ...]) -> str:
    """Why a key is not accepted in a section: not implemented yet, or unknown (with a hint)."""
    if key in REFERENCE_ONLY_KEYS.get(section_rel, ()):
        return "known key of the reference strategy, not implemented in this version (remove it)"
    if key in INERT_KEYS.get(section_rel, ()):
        return "a key the reference backtester never reads: it does not act, so it cannot be overridden or swept"
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f"unknown key (did you mean {close[0]}?)" if close else "unknown key"


# --- error wording ----------------------------------------------------------------------------


def _yaml_repr(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def error_message(err: dict[str, Any]) -> str:
    """One pydantic error as a short sentence an operator can act on."""
    kind, ctx, got = err["type"], err.get("ctx") or {}, _yaml_repr(err.get("input"))
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        bound = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {_num(bound)} (got {got})"
    simple = {
        "float_type": "must be a number",
        "int_type": "must be a whole number",
        "bool_type": "must be true or false",
        "string_type": "must be a string",
        "list_type": "must be a list",
        "model_type": "must be a mapping",
        "dict_type": "must be a mapping",
        "finite_number": "must be a finite number",
    }
    if kind in simple:
        return f"{simple[kind]} (got {got})"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '').replace(chr(39), '')} (got {got})"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg']} (got {got})"


def error_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(relative path, message) per error; literal/union noise collapsed to one line per path."""
    out: dict[str, str] = {}
    for err in exc.errors():
        out.setdefault(error_path(err["loc"]), error_message(err))
    return list(out.items())
