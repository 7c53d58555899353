"""The kernel's view of a strategy config: one float64 vector per symbol.

Kernels (CUDA device functions and numba njit functions alike) cannot read pydantic models or
dicts, so every core key the decision kernel reads lives at a fixed index of a float64 vector.
Booleans are 0.0/1.0, enumerations are small integers (see ``ENUMS``). The order below is the
contract between ``strategy.config`` (which fills the vector) and ``strategy.kernel`` (which
reads it). Adding a key is one field in ``strategy.config_schema`` (type, range, default; its
place in the vector and its index ``P.<LAST_KEY>`` follow) plus the rule that reads it;
tests/test_params_layout.py proves that every path lands at the index the kernel reads and that
the kernel reads every column.
"""

from __future__ import annotations

from pydantic import BaseModel

from strategy.config_schema import (
    WINDOW_KEYS_IN_THRESHOLDS,
    EngineConfig,
    FiltersConfig,
    IndicatorsConfig,
    MarketRegimeConfig,
    ThresholdsConfig,
    TradeConfig,
)
from strategy.layout import CONF, EXIT_FILL, MACD, declare


def _schema_fields(model: type[BaseModel], prefix: str) -> tuple[tuple[str, object], ...]:
    """(dot path, default) of every leaf field of a schema section, in declaration order."""
    out: list[tuple[str, object]] = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(_schema_fields(ann, f"{prefix}{name}."))
        else:
            out.append((f"{prefix}{name}", info.default))
    return tuple(out)


# (dot path under `global`, default) of every core key, in the schema's declaration order: the
# vector layout. The schema (strategy.config_schema) is the one statement of a key's type, range
# and default; this table and the P namespace below are derived from it.
PARAM_SPECS: tuple[tuple[str, object], ...] = (
    *_schema_fields(TradeConfig, "trade."),
    *_schema_fields(FiltersConfig, "filters."),
    *((p, d) for p, d in _schema_fields(ThresholdsConfig, "thresholds.") if p not in WINDOW_KEYS_IN_THRESHOLDS),
    *_schema_fields(MarketRegimeConfig, "market_regime."),
    # the one engine key a rule reads (the intervals choose the data, not a rule)
    *((p, d) for p, d in _schema_fields(EngineConfig, "engine.")
      if p in ("engine.exit_fill", "engine.symbol_warmup_bars")),
)

# Indicator windows are not in the parameter vector: they select which precomputed indicator
# arrays a candidate reads (sweep) or how streaming indicators are sized (engine).
# Two windows the reference files under thresholds.entry (its AVE ATR average and its slow-drift
# slope) follow the indicators section's windows.
WINDOW_SPECS: tuple[tuple[str, int], ...] = (  # type: ignore[assignment]
    *_schema_fields(IndicatorsConfig, "indicators."),
    *((p, d) for p, d in _schema_fields(ThresholdsConfig, "thresholds.") if p in WINDOW_KEYS_IN_THRESHOLDS),
)

# Enumerations: YAML strings <-> kernel numbers (declared once, in strategy.layout).
ENUMS: dict[str, dict[str, int]] = {
    "trade.add_min_confidence": CONF.CODES,
    "trade.entry_min_confidence": CONF.CODES,
    "thresholds.entry.macd_hist_entry_mode": MACD.CODES,
    "thresholds.entry.pullback_confidence": CONF.CODES,
    "engine.exit_fill": EXIT_FILL.CODES,
}

PARAM_PATHS: tuple[str, ...] = tuple(p for p, _ in PARAM_SPECS)
PARAM_INDEX: dict[str, int] = {p: i for i, p in enumerate(PARAM_PATHS)}
NP: int = len(PARAM_SPECS)
WINDOW_PATHS: tuple[str, ...] = tuple(p for p, _ in WINDOW_SPECS)
NW: int = len(WINDOW_SPECS)


def kernel_name(path: str) -> str:
    """The kernel's name of a config path: its last key, upper case (``trade.sl_atr_mult`` ->
    ``SL_ATR_MULT``); keys of ``thresholds.ranging`` carry ``RANGING_`` (their last keys alone,
    ``adx_below`` or ``rsi_low``, would not say which rule they belong to)."""
    parts = path.split(".")
    name = parts[-1].upper()
    return f"RANGING_{name}" if parts[:2] == ["thresholds", "ranging"] else name


# The parameter vector's layout, derived from PARAM_SPECS: the kernel reads ``p[P.SL_ATR_MULT]``
# (p = params[s]); callers outside the kernel may import the flat ``P_SL_ATR_MULT``.
P = declare("P", tuple((kernel_name(path), path) for path, _ in PARAM_SPECS), globals(), "NP")
# The window vector's layout (W.EMA_FAST, W_EMA_FAST, ...), derived from WINDOW_SPECS.
W = declare("W", tuple((name, path) for name, path in (
    ("ema_fast", "indicators.ema_fast_window"), ("ema_slow", "indicators.ema_slow_window"),
    ("ema_macro", "indicators.ema_macro_window"), ("adx", "indicators.adx_window"),
    ("atr", "indicators.atr_window"), ("rsi", "indicators.rsi_window"), ("bb", "indicators.bb_window"),
    ("bb_width_avg", "indicators.bb_width_avg_window"), ("vol_sma", "indicators.vol_sma_window"),
    ("vol_trend", "indicators.vol_trend_window"), ("stoch_rsi", "indicators.stoch_rsi_window"),
    ("stoch_s1", "indicators.stoch_rsi_smooth1"), ("stoch_s2", "indicators.stoch_rsi_smooth2"),
    ("avg_atr", "thresholds.entry.ave_avg_atr_window"), ("ema_slow_slope", "thresholds.entry.slow_drift_slope_window"),
)), globals(), "NW")
assert W.MEANINGS and tuple(W.MEANINGS.values()) == WINDOW_PATHS, "W must follow WINDOW_SPECS"
assert len(set(P.NAMES)) == NP, "two config paths map to one kernel name"


def encode_value(path: str, value: object) -> float:
    """One config value as the kernel sees it (bool -> 0/1, enum -> int, number -> float)."""
    if path in ENUMS:
        return float(ENUMS[path][str(value)])
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return float(value)  # type: ignore[arg-type]
