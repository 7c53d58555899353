"""The strategy's rules, one scenario row each: bars in, fills out.

Every row is a sentence (the rule, as docs/STRATEGY.md states it), a few hand-built bars, config
overrides, an optional starting position and the fills the rule must produce (bar, action, reason,
price; size where the rule is about size). The bars are the kernel's own input, feature rows
(open/high/low/close plus the indicator values of that bar), so each row sets exactly the numbers
its rule reads. The rows run the CPU kernel's ``step_bar`` (the function the canonical replay, the
sweep and the trader all run); removing or loosening the rule a row names makes that row fail.

Common ground of every row, unless the row overrides it:
- one symbol, ETH; bars one hour apart; balance 10,000; no slippage and no fees (prices stay round);
  pyramiding off (rows about adds switch it on); every other key at its default;
- ``LONG_BAR``: a bar every entry gate admits for a long (EMA 20 above EMA 50, ADX 30 rising,
  RSI 60, MACD histogram growing, volume above its SMA and rising: medium confidence);
  ``SHORT_BAR`` is its mirror for a short; ``QUIET``: a long-trend bar nothing fires on;
- the ATR equals its 50-bar mean (no AVE) and the slow EMA's slope is 0 (no slow drift);
- ``HELD_LONG``: a long of 10 ETH at 100 with an entry ATR of 2, opened long ago, so its stop is at
  96, its partial take-profit at 102 (70 %) and its take-profit at 112.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

from cpu_replay.state_io import apply_init_state
from strategy.config import config_from_dict, deep_merge
from strategy.features import F
from strategy.kernel import KERNEL_CPU as K
from strategy.layout import NACCT, NFILL, NPOS, NTRADE, A
from strategy.records import fill_dict

H = 3_600_000
T0 = 1_700_002_800_000 - 1_700_002_800_000 % H  # open of bar 0
BALANCE = 10_000.0
MISSING = None  # a symbol without a candle on that bar

LONG_BAR = {
    "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0, "volume": 1000.0,
    "ema_fast": 99.0, "ema_slow": 98.0, "ema_macro": 95.0, "adx": 30.0, "adx_pos": 25.0, "adx_neg": 15.0,
    "adx_slope": 1.0, "atr": 2.0, "rsi": 60.0, "bb_upper": 105.0, "bb_lower": 95.0, "bb_width": 0.1,
    "bb_width_avg": 0.1, "macd_hist": 0.5, "macd_hist_prev": 0.4, "stoch_rsi_k": 0.5, "stoch_rsi_d": 0.5,
    "vol_sma": 900.0, "vol_trend": 1.0, "avg_atr": 2.0, "ema_slow_slope": 0.0,
    "bar_count": 1000.0,
}
SHORT_BAR = {**LONG_BAR, "ema_fast": 101.0, "ema_slow": 102.0, "ema_macro": 105.0, "rsi": 40.0,
             "macd_hist": -0.5, "macd_hist_prev": -0.4}
QUIET = {**LONG_BAR, "adx": 10.0}  # ADX under min_adx: no entry; nothing in range of any exit level
HELD_LONG = {"symbol": "ETH", "side": "LONG", "entry_price": 100.0, "size": 10.0, "entry_atr": 2.0,
             "leverage": 5.0, "open_time_ms": T0 - 100 * H}
MACRO = {"filters": {"require_macro_alignment": True}}
COMMON = {"trade": {"slippage_bps": 0.0, "exit_slippage_bps": 0.0, "taker_fee_bps": 0.0, "enable_pyramiding": False}}


@dataclass(frozen=True)
class Fill:
    bar: int
    action: str
    reason: str
    price: float
    side: str = "LONG"
    symbol: str = "ETH"
    size: float | None = None  # checked only when given


def opens(bar: int, price: float = 100.0, side: str = "LONG", symbol: str = "ETH", size: float | None = None):
    return Fill(bar, "OPEN", "signal", price, side, symbol, size)


def closes(bar: int, reason: str, price: float, side: str = "LONG", symbol: str = "ETH", size=None):
    return Fill(bar, "CLOSE", reason, price, side, symbol, size)


@dataclass(frozen=True)
class Row:
    rule: str                        # the sentence
    bars: tuple                      # per bar: {feature: value} overrides of LONG_BAR for ETH, MISSING,
                                     # or {symbol: overrides | MISSING} when `symbols` has more than one
    expect: tuple = ()               # the fills, in order
    config: dict = field(default_factory=dict)
    start: tuple = ()                # starting positions (init-state records)
    symbols: tuple = ("ETH",)
    funding: tuple = ()              # per bar: the funding rate charged at that bar's open
    funding_paid: float | None = None  # checked when given
    base: dict = field(default_factory=lambda: LONG_BAR)


def bars(*rows) -> tuple:
    return tuple(rows)


def run(row: Row) -> tuple[list[Fill], np.ndarray]:
    """Drive the CPU kernel bar by bar; returns the fills (as Fill, exact prices) and the account."""
    symbols = list(row.symbols)
    nsym = len(symbols)
    cfg = config_from_dict({"global": deep_merge(COMMON, row.config)})
    params = cfg.params_matrix(symbols)
    pos, acct = np.zeros((nsym, NPOS)), np.zeros(NACCT)
    K.init_state(pos, acct, BALANCE)
    if row.start:
        apply_init_state(SimpleNamespace(pos=pos, acct=acct), {"version": 1, "balance": BALANCE,
                                                               "positions": list(row.start)}, symbols, params)
    fills, trades = np.zeros((64, NFILL)), np.zeros((64, NTRADE))
    book = (pos, acct, np.zeros(nsym), np.zeros(nsym, np.int64), fills, trades)
    z = np.zeros((nsym, 0))
    no_exit_bars = (z, z, z, z, np.zeros((nsym, 0), np.uint8), np.zeros(0), 0)
    feat = np.full((nsym, F.N), math.nan)
    valid = np.ones(nsym, np.uint8)
    btc_idx = symbols.index("BTC") if "BTC" in symbols else -1
    for b, bar in enumerate(row.bars):
        per_symbol = bar if nsym > 1 else {symbols[0]: bar}
        prev_valid = valid.copy()
        valid = np.zeros(nsym, np.uint8)
        for s, sym in enumerate(symbols):
            over = per_symbol.get(sym, {})
            if over is MISSING:
                continue
            valid[s] = 1
            values = {**row.base, **over}
            for name, v in values.items():
                feat[s, getattr(F, name.upper())] = v
        rate = row.funding[b] if b < len(row.funding) else 0.0
        K.step_bar(T0 + b * H, T0 + (b + 1) * H, feat, valid, prev_valid, np.full(nsym, rate), params, btc_idx,
                   book, no_exit_bars)
    out = []
    for r in fills[: int(acct[A.NFILLS])]:
        d = fill_dict(r, symbols)
        out.append(Fill((d["t_ms"] - T0) // H - 1, d["action"], d["reason"], d["price"], d["side"], d["symbol"],
                        d["size"]))
    return out, acct


def check(row: Row) -> None:
    got, acct = run(row)
    want = list(row.expect)
    assert len(got) == len(want), f"{row.rule}\n  fills: {got}\n  want:  {want}"
    for g, w in zip(got, want, strict=True):
        assert (g.bar, g.symbol, g.action, g.reason, g.side) == (w.bar, w.symbol, w.action, w.reason, w.side), (
            f"{row.rule}\n  fill {g}\n  want {w}")
        assert g.price == pytest.approx(w.price, rel=1e-12), f"{row.rule}: price {g.price} != {w.price}"
        if w.size is not None:
            assert g.size == pytest.approx(w.size, rel=1e-12), f"{row.rule}: size {g.size} != {w.size}"
    if row.funding_paid is not None:
        assert acct[A.FUNDING] == pytest.approx(row.funding_paid, rel=1e-12), row.rule


# ------------------------------------------------------------------------------------- entry gates
ENTRY_GATES = [
    Row("A bar every gate admits opens a long at the close", bars({}), (opens(0),)),
    Row("A mirrored bar opens a short at the close", bars({}), (opens(0, side="SHORT"),), base=SHORT_BAR),
    # gate 1: trend side
    Row("gate 1 trend_side: EMA fast equal to EMA slow gives no side, so no entry",
        bars({"ema_fast": 98.0}), ()),
    Row("gate 1 trend_side: a long also needs the close above the fast EMA: a close under it (98.9) gives "
        "no side", bars({"close": 98.9, "low": 98.5}), ()),
    Row("gate 1 trend_side: a short needs the close under the fast EMA (101): a close at 101.2 gives no side",
        bars({"close": 101.2, "high": 101.5}), (), base=SHORT_BAR),
    # gate 2: macro alignment
    Row("gate 2 macro_aligned: with require_macro_alignment, a long with the slow EMA (98) above the macro "
        "EMA (97.9) enters", bars({"ema_macro": 97.9}), (opens(0),), config=MACRO),
    Row("gate 2 macro_aligned: the slow EMA under the macro EMA (98.1) refuses a long, though the close is "
        "above it", bars({"ema_macro": 98.1}), (), config=MACRO),
    # gate 3: minimum ADX
    Row("gate 3 adx_above_min: ADX must be strictly above min_adx: 22 refuses", bars({"adx": 22.0}), ()),
    Row("gate 3 adx_above_min: ADX just above min_adx (22.1) admits", bars({"adx": 22.1}), (opens(0),)),
    Row("gate 3 adx_above_min: ADX rising fast (slope 1 > 0.5) caps min_adx 30 at 25: ADX 26 admits",
        bars({"adx": 26.0, "adx_slope": 1.0}), (opens(0),), config={"thresholds": {"entry": {"min_adx": 30.0}}}),
    Row("gate 3 adx_above_min: ADX rising slowly (slope 0.4) leaves min_adx 30: ADX 26 refuses",
        bars({"adx": 26.0, "adx_slope": 0.4}), (), config={"thresholds": {"entry": {"min_adx": 30.0}}}),
    # gate 4: ADX rising
    Row("gate 4 adx_rising: a falling ADX under adx_rising_saturation (40) refuses",
        bars({"adx_slope": -0.1}), ()),
    Row("gate 4 adx_rising: a falling ADX above the saturation admits",
        bars({"adx_slope": -0.1, "adx": 40.5}), (opens(0),)),
    Row("gate 4 adx_rising: with require_adx_rising off, a falling ADX admits",
        bars({"adx_slope": -0.1}), (opens(0),), config={"filters": {"require_adx_rising": False}}),
    # gate 5: extension filter
    Row("gate 5 not_extended: a close 3.95 % from the fast EMA admits (max_dist_ema_fast 4 %)",
        bars({"ema_fast": 96.2, "ema_slow": 90.0}), (opens(0),)),
    Row("gate 5 not_extended: a close 4.2 % from the fast EMA refuses",
        bars({"ema_fast": 96.0, "ema_slow": 90.0}), ()),
    # gate 6: MACD histogram
    Row("gate 6 macd_confirms (accel): a histogram shrinking against a long refuses",
        bars({"macd_hist": 0.4, "macd_hist_prev": 0.5}), ()),
    Row("gate 6 macd_confirms (sign): a positive but shrinking histogram admits a long",
        bars({"macd_hist": 0.4, "macd_hist_prev": 0.5}), (opens(0),),
        config={"thresholds": {"entry": {"macd_hist_entry_mode": "sign"}}}),
    Row("gate 6 macd_confirms (sign): a negative histogram refuses a long",
        bars({"macd_hist": -0.1, "macd_hist_prev": -0.5}), (),
        config={"thresholds": {"entry": {"macd_hist_entry_mode": "sign"}}}),
    Row("gate 6 macd_confirms (none): the histogram is not read by gate 6 (SSF off)",
        bars({"macd_hist": -0.4, "macd_hist_prev": 0.5}), (opens(0),),
        config={"thresholds": {"entry": {"macd_hist_entry_mode": "none"}}, "trade": {"enable_ssf_filter": False}}),
    # gate 7: stoch RSI
    Row("gate 7 stoch_rsi_allows: K equal to block_long_if_k_gt (0.85) admits a long",
        bars({"stoch_rsi_k": 0.85}), (opens(0),)),
    Row("gate 7 stoch_rsi_allows: K above block_long_if_k_gt refuses a long", bars({"stoch_rsi_k": 0.86}), ()),
    Row("gate 7 stoch_rsi_allows: K below block_short_if_k_lt (0.15) refuses a short",
        bars({"stoch_rsi_k": 0.14}), (), base=SHORT_BAR),
    Row("gate 7 stoch_rsi_allows: K equal to block_short_if_k_lt admits a short",
        bars({"stoch_rsi_k": 0.15}), (opens(0, side="SHORT"),), base=SHORT_BAR),
    # gate 8: ranging filter (min_adx lowered so that the ADX vote can be cast)
    Row("gate 8 not_ranging: two ranging votes (ADX under adx_below, narrow Bollinger width) refuse",
        bars({"adx": 20.0, "bb_width": 0.07}), (), config={"thresholds": {"entry": {"min_adx": 15.0}}}),
    Row("gate 8 not_ranging: one vote (narrow Bollinger width) is not enough to refuse",
        bars({"bb_width": 0.07}), (opens(0),), config={"thresholds": {"entry": {"min_adx": 15.0}}}),
    Row("gate 8 not_ranging: with the filter off, two votes do not refuse",
        bars({"adx": 20.0, "bb_width": 0.07}), (opens(0),),
        config={"thresholds": {"entry": {"min_adx": 15.0}}, "filters": {"enable_ranging_filter": False}}),
    # gate 9: RSI momentum
    # the limit slides with w = (ADX - min_adx 22) / (adx_strong_gt 40 - 22): ADX 30 -> w = 4/9
    Row("gate 9 rsi_momentum: at ADX 30 a long needs RSI above 56 - 4/9 x 4 = 54.22: RSI 54.2 refuses",
        bars({"rsi": 54.2}), ()),
    Row("gate 9 rsi_momentum: at ADX 30 RSI 54.3 admits a long", bars({"rsi": 54.3}), (opens(0),)),
    Row("gate 9 rsi_momentum: at ADX 22.5 (w = 1/36) the limit is nearly rsi_long_weak: RSI 55.8 refuses",
        bars({"rsi": 55.8, "adx": 22.5}), ()),
    Row("gate 9 rsi_momentum: from ADX adx_strong_gt (40) on, RSI above rsi_long_strong (52) suffices",
        bars({"rsi": 52.1, "adx": 41.0}), (opens(0),)),
    Row("gate 9 rsi_momentum: with a strong ADX, RSI at rsi_long_strong refuses",
        bars({"rsi": 52.0, "adx": 41.0}), ()),
    Row("gate 9 rsi_momentum: at ADX 30 a short needs RSI below 44 + 4/9 x 4 = 45.78: RSI 45.8 refuses",
        bars({"rsi": 45.8}), (), base=SHORT_BAR),
    Row("gate 9 rsi_momentum: at ADX 30 RSI 45.7 admits a short", bars({"rsi": 45.7}),
        (opens(0, side="SHORT"),), base=SHORT_BAR),
    # gate 10: BTC alignment on BTC's previous close vs its slow EMA (98) then; ETH enters on bar 1
    Row("gate 10 btc_allows: a long is refused while BTC's previous close (97) was under its slow EMA, though "
        "BTC's close now is above it",
        bars({"BTC": {"adx": 10.0, "close": 97.0, "low": 96.5}, "ETH": QUIET}, {"BTC": {"adx": 10.0}, "ETH": {}}),
        (), symbols=("BTC", "ETH")),
    Row("gate 10 btc_allows: a long is admitted while BTC's previous close was above its slow EMA, though BTC's "
        "close now is under it",
        bars({"BTC": {"adx": 10.0}, "ETH": QUIET}, {"BTC": {"adx": 10.0, "close": 97.0, "low": 96.5}, "ETH": {}}),
        (opens(1, symbol="ETH"),), symbols=("BTC", "ETH")),
    Row("gate 10 btc_allows: the candidate's own ADX above btc_adx_override (40) waives the alignment",
        bars({"BTC": {"adx": 10.0, "close": 97.0, "low": 96.5}, "ETH": QUIET},
             {"BTC": {"adx": 10.0}, "ETH": {"adx": 41.0}}),
        (opens(1, symbol="ETH"),), symbols=("BTC", "ETH")),
    Row("gate 10 btc_allows: BTC's own ADX above the override does not waive it",
        bars({"BTC": {"adx": 45.0, "close": 97.0, "low": 96.5}, "ETH": QUIET},
             {"BTC": {"adx": 45.0, "close": 97.0, "low": 96.5}, "ETH": {}}),
        (), symbols=("BTC", "ETH")),
    Row("gate 10 btc_allows: without any BTC data the alignment is not checked",
        bars({"BTC": MISSING, "ETH": QUIET}, {"BTC": MISSING, "ETH": {}}), (opens(1, symbol="ETH"),),
        symbols=("BTC", "ETH")),
    Row("gate 10 btc_allows: a short is refused while BTC's previous close was above its slow EMA",
        bars({"BTC": {"adx": 10.0}, "ETH": {**SHORT_BAR, "adx": 10.0}}, {"BTC": {"adx": 10.0}, "ETH": SHORT_BAR}),
        (), symbols=("BTC", "ETH")),
    Row("gate 10 btc_allows: with require_btc_alignment off, a bearish BTC does not refuse",
        bars({"BTC": {"adx": 10.0, "close": 97.0, "low": 96.5}, "ETH": QUIET}, {"BTC": {"adx": 10.0}, "ETH": {}}),
        (opens(1, symbol="ETH"),), symbols=("BTC", "ETH"), config={"filters": {"require_btc_alignment": False}}),
    # min_atr_pct: an ATR floor, not a gate
    Row("min_atr_pct: an ATR of 0.1 % still enters; its stop is 2 x the floor (0.3) below: a close at 99.35 "
        "stops it out", bars({"atr": 0.1}, {**QUIET, "atr": 0.3, "low": 99.3, "close": 99.35}),
        (opens(0), closes(1, "stop_loss", 99.35))),
    Row("min_atr_pct: with the floored ATR a close at 99.45 is inside the stop (99.4)",
        bars({"atr": 0.1}, {"atr": 0.3, "low": 99.4, "close": 99.45}), (opens(0),)),
    # SSF and REEF: new positions only
    Row("SSF: a new long needs a positive MACD histogram (accel mode admits -0.1 after -0.2; SSF refuses)",
        bars({"macd_hist": -0.1, "macd_hist_prev": -0.2}), ()),
    Row("SSF: with enable_ssf_filter off the same bar enters",
        bars({"macd_hist": -0.1, "macd_hist_prev": -0.2}), (opens(0),), config={"trade": {"enable_ssf_filter": False}}),
    Row("SSF: adds are not filtered (a held long adds on a negative histogram)",
        bars({"close": 101.5, "high": 101.8, "macd_hist": -0.1, "macd_hist_prev": -0.2}),
        (Fill(0, "ADD", "pyramid", 101.5),), start=(HELD_LONG,), config={"trade": {"enable_pyramiding": True}}),
    Row("REEF: below ADX 45 no new long above RSI 70", bars({"rsi": 70.5}), ()),
    Row("REEF: below ADX 45 RSI 70 admits", bars({"rsi": 70.0}), (opens(0),)),
    Row("REEF: from ADX 45 on the long limit is 75: RSI 72 admits, off the stoch filter",
        bars({"rsi": 72.0, "adx": 45.0}), (opens(0),)),
    Row("REEF: from ADX 45 on RSI 75.5 refuses a long", bars({"rsi": 75.5, "adx": 45.0}), ()),
    Row("REEF: below ADX 45 no new short below RSI 30", bars({"rsi": 29.5}), (), base=SHORT_BAR),
    Row("REEF: off, RSI 80 enters a long", bars({"rsi": 80.0}), (opens(0),),
        config={"trade": {"enable_reef_filter": False}}),
    # gate 12: volume confirmation
    Row("gate 12 volume_confirms: required, volume above its SMA with a rising SMA admits",
        bars({}), (opens(0),), config={"filters": {"require_volume_confirmation": True}}),
    Row("gate 12 volume_confirms: required (vol_confirm_include_prev), volume under its SMA with a rising SMA "
        "admits", bars({"volume": 800.0}), (opens(0),), config={"filters": {"require_volume_confirmation": True}}),
    Row("gate 12 volume_confirms: required (vol_confirm_include_prev), volume under a falling SMA refuses",
        bars({"volume": 800.0, "vol_trend": 0.0}), (), config={"filters": {"require_volume_confirmation": True}}),
    Row("gate 12 volume_confirms: required, without vol_confirm_include_prev volume under its SMA refuses",
        bars({"volume": 800.0}), (),
        config={"filters": {"require_volume_confirmation": True, "vol_confirm_include_prev": False}}),
    Row("gate 12 volume_confirms: required, without vol_confirm_include_prev a falling volume SMA refuses",
        bars({"vol_trend": 0.0}), (),
        config={"filters": {"require_volume_confirmation": True, "vol_confirm_include_prev": False}}),
    # anomaly filter: a bar 11 % above the previous close (EMAs moved with it, so gate 5 admits)
    Row("anomaly filter: a close 11 % from the previous one refuses the entry",
        bars(QUIET, {"close": 111.0, "high": 111.5, "ema_fast": 110.0, "ema_slow": 105.0, "ema_macro": 100.0}), (),
        config={"filters": {"enable_anomaly_filter": True}}),
    Row("anomaly filter: a close 9 % from the previous one admits",
        bars(QUIET, {"close": 109.0, "high": 109.5, "ema_fast": 108.0, "ema_slow": 105.0, "ema_macro": 100.0}),
        (opens(1, 109.0),), config={"filters": {"enable_anomaly_filter": True}}),
    Row("anomaly filter: off by default, the 11 % bar enters",
        bars(QUIET, {"close": 111.0, "high": 111.5, "ema_fast": 110.0, "ema_slow": 105.0, "ema_macro": 100.0}),
        (opens(1, 111.0),)),
    Row("anomaly filter: a close more than ema_fast_dev_pct_gt (50 %) from the fast EMA refuses (extension "
        "filter off)", bars({"close": 151.0, "high": 152.0, "ema_fast": 100.0, "ema_slow": 98.0}), (),
        config={"filters": {"enable_anomaly_filter": True, "enable_extension_filter": False}}),
    # gate 13: minimum confidence
    Row("gate 13 entry_min_confidence high: a high-confidence signal (volume spike) enters",
        bars({"volume": 2300.0}), (opens(0),), config={"trade": {"entry_min_confidence": "high"}}),
    Row("gate 13 entry_min_confidence high: a medium-confidence signal does not",
        bars({}), (), config={"trade": {"entry_min_confidence": "high"}}),
    Row("gate 13 entry_min_confidence gates new positions only: a medium signal still adds to a held long "
        "(add_min_confidence medium)",
        bars({"close": 101.5, "high": 101.8}), (Fill(0, "ADD", "pyramid", 101.5),), start=(HELD_LONG,),
        config={"trade": {"enable_pyramiding": True, "entry_min_confidence": "high"}}),
    # gate 14: reverse
    Row("gate 14 reverse_entry_signal: a long signal opens a short (SSF off)", bars({}), (opens(0, side="SHORT"),),
        config={"trade": {"reverse_entry_signal": True, "enable_ssf_filter": False}}),
    Row("gate 14 reverse_entry_signal: SSF reads the reversed side: a positive histogram refuses the short",
        bars({}), (), config={"trade": {"reverse_entry_signal": True}}),
    # readiness
    Row("readiness: an indicator that is not warmed up (NaN RSI) refuses the entry",
        bars({"rsi": math.nan}), ()),
    Row("readiness: no entry right after a missing bar; the bar after that enters",
        bars(MISSING, {}, {}), (opens(2),)),
]

# ------------------------------------------------------------------------- confidence and sizing
# A standard entry is high on a volume spike (volume > high_conf_volume_mult 2.5 x its SMA 900, i.e.
# > 2,250), else medium; ADX plays no part and a standard entry is never low.
# Margin = 3 % of 10,000 = 300; notional = margin x leverage; size = notional / 100.
CONFIDENCE = [
    Row("tiers: without a volume spike a standard entry is medium (leverage_medium 5): notional 1,500",
        bars({}), (opens(0, size=15.0),)),
    Row("tiers: a weak entry (ADX 25, volume under its SMA) is still medium, never low: notional 1,500",
        bars({"adx": 25.0, "volume": 800.0}), (opens(0, size=15.0),)),
    Row("tiers: a strong ADX (45) without a volume spike is medium, not high: notional 1,500",
        bars({"adx": 45.0, "volume": 2200.0}), (opens(0, size=15.0),), config={"trade": {"leverage_high": 7.0}}),
    Row("tiers: a volume spike at ADX 30 is high (leverage_high 7 here): notional 2,100",
        bars({"volume": 2300.0}), (opens(0, size=21.0),), config={"trade": {"leverage_high": 7.0}}),
    Row("tiers: volume exactly 2.5 x its SMA is not a spike: medium",
        bars({"volume": 2250.0}), (opens(0, size=15.0),), config={"trade": {"leverage_high": 7.0}}),
    Row("tiers: leverage_max_cap (3) caps the tier leverage (5): notional 900",
        bars({}), (opens(0, size=9.0),), config={"trade": {"leverage_max_cap": 3.0}}),
    Row("tiers: leverage_max_cap 0 is no cap", bars({}), (opens(0, size=15.0),),
        config={"trade": {"leverage_max_cap": 0.0}}),
    Row("tiers: without dynamic leverage every tier takes trade.leverage (2): notional 600",
        bars({"volume": 2300.0}), (opens(0, size=6.0),),
        config={"trade": {"enable_dynamic_leverage": False}}),
    Row("sizing: dynamic sizing: x confidence_mult_medium 0.7 x ADX 30 / 40 x clamp(1 % / ATR 2 %, 0.5, 1): "
        "margin 300 x 0.7 x 0.75 x 0.5, notional 393.75",
        bars({}), (opens(0, size=3.9375),), config={"trade": {"enable_dynamic_sizing": True}}),
    Row("sizing: dynamic sizing at ADX 45 (x1, capped) and ATR 1 % (x1): notional 300 x 0.7 x 5 = 1,050",
        bars({"adx": 45.0, "atr": 1.0}), (opens(0, size=10.5),), config={"trade": {"enable_dynamic_sizing": True}}),
    Row("sizing: dynamic sizing with ADX 23 / adx_sizing_full_adx 100 takes adx_sizing_min_mult (0.6), ATR 0.5 % "
        "takes vol_scalar_max (1): notional 1,050 x 0.6 = 630",
        bars({"adx": 23.0, "atr": 0.5}), (opens(0, size=6.3),),
        config={"trade": {"enable_dynamic_sizing": True, "adx_sizing_full_adx": 100.0}}),
    Row("sizing: a notional under min_notional_usd is bumped to it (size_multiplier 0.001: 1.5 -> 10)",
        bars({}), (opens(0, size=0.1),), config={"trade": {"size_multiplier": 0.001}}),
    Row("sizing: without bump_to_min_notional a notional under the minimum is skipped",
        bars({}), (), config={"trade": {"size_multiplier": 0.001, "bump_to_min_notional": False}}),
]

# ----------------------------------------------------------------------------------------- exits
NO_PARTIAL = {"trade": {"enable_partial_tp": False}}
TOUCH = {"engine": {"exit_fill": "touch"}}


def touch(config: dict | None = None) -> dict:
    """A row's config with engine.exit_fill touch (stops and targets on the bar's range)."""
    return deep_merge(TOUCH, config or {})


# engine.exit_fill close (the default): one price per evaluation, the close; the first exit that
# fires wins and fills at that close.
CLOSE_EXITS = [
    Row("close exits: a wick through the stop (96) with a close above it does not stop the long out",
        bars({**QUIET, "low": 95.0, "close": 97.0}), (), start=(HELD_LONG,)),
    Row("close exits: a close below the stop (96) closes the long at that close, not at the stop",
        bars({**QUIET, "low": 94.5, "close": 95.0}), (closes(0, "stop_loss", 95.0),), start=(HELD_LONG,)),
    Row("close exits: a close exactly at the stop closes the long there",
        bars({**QUIET, "low": 95.5, "close": 96.0}), (closes(0, "stop_loss", 96.0),), start=(HELD_LONG,)),
    Row("close exits: a high through the take-profit (112) with a close under it does not take profit",
        bars({**QUIET, "high": 113.0, "close": 101.5}), (), start=(HELD_LONG,), config=NO_PARTIAL),
    Row("close exits: a close at or above the take-profit closes all at that close",
        bars({**QUIET, "high": 113.0, "close": 112.5}), (closes(0, "take_profit", 112.5, size=10.0),),
        start=(HELD_LONG,), config=NO_PARTIAL),
    Row("close exits: one exit per close: the partial (70 % at a close >= 102) fires, the take-profit waits "
        "for the next close",
        bars({**QUIET, "high": 113.0, "close": 112.5}, {**QUIET, "close": 112.2}),
        (Fill(0, "REDUCE", "take_profit_partial", 112.5, size=7.0), closes(1, "take_profit", 112.2, size=3.0)),
        start=(HELD_LONG,)),
    Row("close exits: a partial on a close keeps the smart exits of that close from firing",
        bars({**QUIET, "high": 102.6, "close": 102.5, "rsi": 85.0}, {**QUIET, "high": 102.6, "close": 102.0,
                                                                       "rsi": 85.0}),
        (Fill(0, "REDUCE", "take_profit_partial", 102.5, size=7.0), closes(1, "rsi_overextension", 102.0)),
        start=(HELD_LONG,)),
    Row("close exits: the trailing stop set on one close (103 behind 104) fires on a later close beyond it, "
        "filled at that close",
        bars({**QUIET, "high": 104.5, "close": 104.0}, {**QUIET, "low": 102.0, "close": 103.5},
             {**QUIET, "low": 102.0, "close": 102.8}),
        (closes(2, "trailing_stop", 102.8),), start=(HELD_LONG,), config=NO_PARTIAL),
    Row("close exits: the stop comes before a smart exit on the same close",
        bars({**QUIET, "close": 95.0, "ema_fast": 97.0}), (closes(0, "stop_loss", 95.0),), start=(HELD_LONG,)),
    Row("close exits: with no price exit, the trend flip still closes at the close",
        bars({**QUIET, "ema_fast": 97.9, "close": 99.5}), (closes(0, "trend_flip", 99.5),), start=(HELD_LONG,)),
]

# The stop recomputed on every close from the average entry (sl_atr_mult 2 x ATR 2 = 4 below 100),
# the trailing distance modifiers and the partial take-profit rules (reference §4 items 4, 5, 8).
ADD_AVG = (10 * 100.0 + 750.0) / (10 + 750.0 / 101.5)  # HELD_LONG after a 750-notional add at 101.5
STOPS_AND_TARGETS = [
    Row("stop: ADX falling and the long underwater tighten the stop x0.8 (to 96.8): a close at 96.7 stops out",
        bars({**QUIET, "adx_slope": -0.5, "low": 96.5, "close": 96.7}), (closes(0, "stop_loss", 96.7),),
        start=(HELD_LONG,)),
    Row("stop: with ADX rising the same close (96.7) keeps the long (stop at 96)",
        bars({**QUIET, "adx_slope": 0.5, "low": 96.5, "close": 96.7}), (), start=(HELD_LONG,)),
    Row("stop: ADX above 45 widens the stop x1.10 (to 95.6): a close at 95.8 keeps the long",
        bars({**QUIET, "adx": 46.0, "low": 95.5, "close": 95.8}), (), start=(HELD_LONG,)),
    Row("stop: ADX above 45, a close under the widened stop (95.5 < 95.6) stops out at that close",
        bars({**QUIET, "adx": 46.0, "low": 95.4, "close": 95.5}), (closes(0, "stop_loss", 95.5),),
        start=(HELD_LONG,)),
    Row("stop: it is not ratcheted: tightened to 96.8 on one close, back at 96 on the next (a close at 96.5 "
        "keeps the long)",
        bars({**QUIET, "adx_slope": -0.5, "low": 96.8, "close": 97.0},
             {**QUIET, "adx_slope": 0.5, "low": 96.4, "close": 96.5}), (), start=(HELD_LONG,)),
    Row("stop (touch): after an add the stop-loss is measured from the new average entry",
        bars({"close": 101.5, "high": 101.8}, {**QUIET, "open": 100.0, "low": 96.0, "close": 97.0}),
        (Fill(0, "ADD", "pyramid", 101.5), closes(1, "stop_loss", ADD_AVG - 4.0)), start=(HELD_LONG,),
        config=touch({"trade": {"enable_pyramiding": True}})),
    Row("trailing: while RSI runs with the long (RSI 65) the distance is at least 0.7 ATR: trail at 102.6, "
        "a close at 102.7 keeps the long, 102.5 closes it",
        bars({**QUIET, "high": 104.5, "close": 104.0, "rsi": 65.0}, {**QUIET, "low": 102.6, "close": 102.7,
                                                                      "rsi": 65.0},
             {**QUIET, "low": 102.4, "close": 102.5, "rsi": 65.0}),
        (closes(2, "trailing_stop", 102.5),), start=(HELD_LONG,), config=NO_PARTIAL),
    Row("trailing: a wide Bollinger width (1.3 x its average) buffers the distance x1.25 but ADX under 25 "
        "re-chooses 0.7 x base, floored at 0.5 ATR: trail at 103",
        bars({**QUIET, "high": 104.5, "close": 104.0, "bb_width": 0.13},
             {**QUIET, "low": 102.9, "close": 103.0}),
        (closes(1, "trailing_stop", 103.0),), start=(HELD_LONG,), config=NO_PARTIAL),
    Row("trailing: with ADX 30 a wide Bollinger width buffers a 1 ATR distance to 1.25 ATR: trail at 101.5",
        bars({**QUIET, "adx": 30.0, "high": 104.5, "close": 104.0, "bb_width": 0.13},
             {**QUIET, "adx": 30.0, "low": 101.6, "close": 101.6},
             {**QUIET, "adx": 30.0, "low": 101.4, "close": 101.5}),
        (closes(2, "trailing_stop", 101.5),), start=(HELD_LONG,),
        config=deep_merge(NO_PARTIAL, {"trade": {"trailing_distance_atr": 1.0}})),
    Row("partial take-profit: held while what it leaves (3 x 102.5 = 307.5) is under "
        "tp_partial_min_notional_usd (400)",
        bars({**QUIET, "high": 102.6, "close": 102.5}), (), start=(HELD_LONG,),
        config={"trade": {"tp_partial_min_notional_usd": 400.0, "trailing_start_atr": 10.0}}),
    Row("partial take-profit: taken when what it leaves (307.5) is at least the minimum (300)",
        bars({**QUIET, "high": 102.6, "close": 102.5}), (Fill(0, "REDUCE", "take_profit_partial", 102.5, size=7.0),),
        start=(HELD_LONG,), config={"trade": {"tp_partial_min_notional_usd": 300.0, "trailing_start_atr": 10.0}}),
    Row("partial take-profit: with tp_partial_atr_mult 0 it sits at the take-profit (112) and no full "
        "take-profit follows",
        bars({**QUIET, "high": 111.0, "close": 110.0}, {**QUIET, "high": 112.6, "close": 112.5},
             {**QUIET, "high": 114.0, "close": 113.0}),
        (Fill(1, "REDUCE", "take_profit_partial", 112.5, size=7.0),), start=(HELD_LONG,),
        config={"trade": {"tp_partial_atr_mult": 0.0, "trailing_start_atr": 10.0}}),
    Row("partial take-profit: with tp_partial_atr_mult above 0 the full take-profit follows the partial",
        bars({**QUIET, "high": 102.6, "close": 102.5}, {**QUIET, "high": 112.6, "close": 112.5}),
        (Fill(0, "REDUCE", "take_profit_partial", 102.5, size=7.0), closes(1, "take_profit", 112.5, size=3.0)),
        start=(HELD_LONG,), config={"trade": {"trailing_start_atr": 10.0}}),
]

# Smart exits, on the main bar's close, in the reference's order (its kernel_exits §1-§7).
SMART_EXITS = [
    Row("trend exhaustion: ADX under the level the entry cleared (min_adx 22) closes the long at the close",
        bars({}, {"adx": 21.5}), (opens(0), closes(1, "trend_exhaustion", 100.0))),
    Row("trend exhaustion: ADX still above the entry's level (22.5) keeps the long", bars({}, {"adx": 22.5}),
        (opens(0),)),
    Row("trend exhaustion: a position without a stored level falls back to smart_exit_adx_exhaustion_lt (15)",
        bars(QUIET), (closes(0, "trend_exhaustion", 100.0),), start=(HELD_LONG,),
        config={"trade": {"smart_exit_adx_exhaustion_lt": 15.0}}),
    Row("trend breakdown: a weak cross (EMAs within 0.1 % of the slow EMA) with ADX above 25 is no breakdown",
        bars({**QUIET, "adx": 30.0, "ema_fast": 97.95}), (), start=(HELD_LONG,)),
    Row("trend breakdown: the same weak cross with ADX 10 closes the long",
        bars({**QUIET, "ema_fast": 97.95}), (closes(0, "trend_flip", 100.0),), start=(HELD_LONG,)),
    Row("macro breakdown: with require_macro_alignment a close under the macro EMA (99) closes the long",
        bars({**QUIET, "ema_macro": 99.0, "low": 98.4, "close": 98.5}), (closes(0, "ema_macro_breakdown", 98.5),),
        start=(HELD_LONG,), config=MACRO),
    Row("macro breakdown: without require_macro_alignment the same close keeps the long",
        bars({**QUIET, "ema_macro": 99.0, "low": 98.4, "close": 98.5}), (), start=(HELD_LONG,)),
    Row("stagnation: ATR under 70 % of the entry ATR (1.3 < 1.4) while underwater closes the long",
        bars({**QUIET, "atr": 1.3, "close": 99.5}), (closes(0, "stagnation", 99.5),), start=(HELD_LONG,)),
    Row("stagnation: the same low ATR in profit keeps the long", bars({**QUIET, "atr": 1.3, "close": 100.5}), (),
        start=(HELD_LONG,)),
    Row("stagnation: ATR at 75 % of the entry ATR while underwater keeps the long",
        bars({**QUIET, "atr": 1.5, "close": 99.5}), (), start=(HELD_LONG,)),
    Row("TSME: ADX above 50 and falling, 1.25 ATR in profit, the histogram fading two bars in a row closes",
        bars({**QUIET, "adx": 51.0, "adx_slope": -0.5, "close": 102.5, "high": 102.6, "macd_hist": 0.5,
              "macd_hist_prev": 0.6},
             {**QUIET, "adx": 51.0, "adx_slope": -0.5, "close": 102.5, "high": 102.6, "macd_hist": 0.4,
              "macd_hist_prev": 0.5}),
        (closes(1, "tsme", 102.5),), start=(HELD_LONG,), config=NO_PARTIAL),
    Row("TSME: with ADX rising (tsme_require_adx_slope_negative) the same bars keep the long",
        bars({**QUIET, "adx": 51.0, "adx_slope": 0.5, "close": 102.5, "high": 102.6, "macd_hist": 0.5,
              "macd_hist_prev": 0.6},
             {**QUIET, "adx": 51.0, "adx_slope": 0.5, "close": 102.5, "high": 102.6, "macd_hist": 0.4,
              "macd_hist_prev": 0.5}),
        (), start=(HELD_LONG,), config=NO_PARTIAL),
    Row("MMDE: 1.75 ATR in profit, ADX above 35, the histogram fading three bars in a row closes",
        bars(*({**QUIET, "adx": 36.0, "close": 103.5, "high": 103.6, "macd_hist": h, "macd_hist_prev": h + 0.1}
               for h in (0.7, 0.6, 0.5))),
        (closes(2, "mmde", 103.5),), start=(HELD_LONG,), config=NO_PARTIAL),
    Row("MMDE: a histogram that turns up on the last bar keeps the long",
        bars(*({**QUIET, "adx": 36.0, "close": 103.5, "high": 103.6, "macd_hist": h, "macd_hist_prev": p}
               for h, p in ((0.7, 0.8), (0.6, 0.7), (0.65, 0.6)))),
        (), start=(HELD_LONG,), config=NO_PARTIAL),
    Row("RSI overextension: from rsi_exit_profit_atr_switch (1.5 ATR) in profit a long exits above "
        "rsi_exit_ub_hi_profit (70)",
        bars({**QUIET, "close": 103.5, "high": 103.6, "rsi": 72.0}), (closes(0, "rsi_overextension", 103.5),),
        start=(HELD_LONG,), config=NO_PARTIAL),
    Row("RSI overextension: under 1.5 ATR in profit RSI 72 keeps the long (the limit is 80)",
        bars({**QUIET, "close": 101.5, "high": 101.6, "rsi": 72.0}), (), start=(HELD_LONG,), config=NO_PARTIAL),
    Row("glitch guard: with block_exits_on_extreme_dev a close 50 % from the previous one decides no exit",
        bars(QUIET, {**QUIET, "low": 49.0, "close": 50.0}), (), start=(HELD_LONG,),
        config={"trade": {"block_exits_on_extreme_dev": True}}),
    Row("glitch guard: a close more than glitch_atr_mult (12) x ATR (24) away decides no exit",
        bars(QUIET, {**QUIET, "low": 74.0, "close": 75.0}), (), start=(HELD_LONG,),
        config={"trade": {"block_exits_on_extreme_dev": True}}),
    Row("glitch guard: off by default, the 50 % close stops the long out",
        bars(QUIET, {**QUIET, "low": 49.0, "close": 50.0}), (closes(1, "stop_loss", 50.0),), start=(HELD_LONG,)),
]

EXITS = [
    Row("stop loss (touch): a bar trading down through the stop (96) closes the long at the stop",
        bars({**QUIET, "low": 95.5, "close": 97.0}), (closes(0, "stop_loss", 96.0),), start=(HELD_LONG,),
        config=touch()),
    Row("stop loss (touch): a bar opening below the stop (a gap) closes at the open, not at the stop",
        bars({**QUIET, "open": 94.0, "high": 95.0, "low": 93.0, "close": 94.5}),
        (closes(0, "stop_loss", 94.0),), start=(HELD_LONG,), config=touch()),
    Row("stop before target (touch): a bar touching both the stop (96) and the take-profit (112) closes at "
        "the stop",
        bars({**QUIET, "high": 113.0, "low": 95.0}), (closes(0, "stop_loss", 96.0),), start=(HELD_LONG,),
        config=touch()),
    Row("take-profit (touch): partial first (70 % at 102), then the rest at the take-profit (112) on a later bar",
        bars({**QUIET, "high": 102.5, "close": 101.0}, {**QUIET, "open": 101.0, "high": 112.5, "close": 101.0}),
        (Fill(0, "REDUCE", "take_profit_partial", 102.0, size=7.0), closes(1, "take_profit", 112.0, size=3.0)),
        start=(HELD_LONG,), config=touch()),
    Row("take-profit (touch): with partial TP off, a bar reaching 102 does nothing and 112 closes all",
        bars({**QUIET, "high": 102.5, "close": 101.0}, {**QUIET, "open": 101.0, "high": 112.5, "close": 101.0}),
        (closes(1, "take_profit", 112.0, size=10.0),), start=(HELD_LONG,), config=touch(NO_PARTIAL)),
    Row("trailing stop (touch): 2 ATR in profit it trails 1 ATR/2 behind the close, never loosens, and closes "
        "there",
        bars({**QUIET, "high": 104.5, "close": 104.0},                      # trail to 103
             {**QUIET, "open": 104.0, "high": 106.5, "low": 103.5, "close": 106.0},   # trail to 105
             {**QUIET, "open": 106.0, "high": 106.0, "low": 105.2, "close": 105.5},   # 104.5 would loosen: stays 105
             {**QUIET, "open": 105.5, "high": 105.6, "low": 104.8, "close": 105.0}),  # hits 105
        (closes(3, "trailing_stop", 105.0),), start=(HELD_LONG,), config=touch(NO_PARTIAL)),
    Row("break-even (touch): 0.5 ATR in profit the stop moves to entry + 0.05 ATR (100.1) and closes there",
        bars({**QUIET, "high": 101.2, "close": 101.0}, {**QUIET, "open": 100.8, "high": 100.9, "low": 100.0}),
        (closes(1, "breakeven_stop", 100.1),), start=(HELD_LONG,),
        config=touch({"trade": {"enable_breakeven_stop": True, "trailing_start_atr": 10.0}})),
    Row("break-even: on the close, a later close at or under entry + 0.05 ATR (100.1) closes at that close",
        bars({**QUIET, "high": 101.2, "close": 101.0}, {**QUIET, "low": 99.9, "close": 100.05}),
        (closes(1, "breakeven_stop", 100.05),), start=(HELD_LONG,),
        config={"trade": {"enable_breakeven_stop": True, "trailing_start_atr": 10.0}}),
    Row("break-even: off by default, the same bars leave the long open",
        bars({**QUIET, "high": 101.2, "close": 101.0}, {**QUIET, "open": 100.8, "high": 100.9, "low": 100.0}),
        (), start=(HELD_LONG,), config=touch({"trade": {"trailing_start_atr": 10.0}})),
    Row("trend flip: the fast EMA crossing under the slow one closes the long at the close",
        bars({**QUIET, "ema_fast": 97.9, "close": 99.5}), (closes(0, "trend_flip", 99.5),), start=(HELD_LONG,),
        config=touch()),
    Row("RSI overextension: RSI above rsi_exit_ub_lo_profit (80) closes the long at the close",
        bars({**QUIET, "rsi": 80.1, "close": 100.5}), (closes(0, "rsi_overextension", 100.5),),
        start=(HELD_LONG,)),
    Row("RSI overextension: RSI at 80 keeps the long", bars({**QUIET, "rsi": 80.0}), (), start=(HELD_LONG,)),
    Row("RSI overextension: off, RSI 90 keeps the long", bars({**QUIET, "rsi": 90.0}), (), start=(HELD_LONG,),
        config={"trade": {"enable_rsi_overextension_exit": False}}),
    Row("end of data: nothing closes a quiet long during the bars", bars(QUIET, QUIET), (), start=(HELD_LONG,)),
]

# ---------------------------------------------------------------------- ranking, caps, cooldowns
THREE = ("AAA", "BBB", "CCC")
RANKING = [
    Row("ranking: under max_open_positions 2, the two highest ADX of three medium signals open, best first",
        bars({"AAA": {"adx": 31.0}, "BBB": {"adx": 35.0}, "CCC": {"adx": 33.0}}),
        (opens(0, symbol="BBB"), opens(0, symbol="CCC")), symbols=THREE,
        config={"trade": {"max_open_positions": 2}}),
    Row("ranking: confidence outranks ADX (a high signal with ADX 31 before a medium one with ADX 45)",
        bars({"AAA": {"adx": 45.0}, "BBB": {"adx": 31.0, "volume": 2300.0}, "CCC": QUIET}),
        (opens(0, symbol="BBB"),), symbols=THREE, config={"trade": {"max_open_positions": 1}}),
    Row("ranking: the score reads the whole ADX: 31.9 ties with 31.2 and the tie goes by symbol order",
        bars({"AAA": {"adx": 31.2}, "BBB": {"adx": 31.9}, "CCC": QUIET}),
        (opens(0, symbol="AAA"),), symbols=THREE, config={"trade": {"max_open_positions": 1}}),
    Row("ranking: a whole point of ADX more ranks first (32.0 before 31.9)",
        bars({"AAA": {"adx": 31.9}, "BBB": {"adx": 32.0}, "CCC": QUIET}),
        (opens(0, symbol="BBB"),), symbols=THREE, config={"trade": {"max_open_positions": 1}}),
    Row("ranking: equal scores go by symbol order", bars({"AAA": {}, "BBB": {}, "CCC": {}}),
        (opens(0, symbol="AAA"),), symbols=THREE, config={"trade": {"max_open_positions": 1}}),
    Row("margin cap: with max_total_margin_pct 5 %, one 3 % margin (300) fits and the second-ranked is "
        "scaled down to the 200 left: notional 1,000",
        bars({"AAA": {"adx": 31.0}, "BBB": {"adx": 35.0}, "CCC": QUIET}),
        (opens(0, symbol="BBB", size=15.0), opens(0, symbol="AAA", size=10.0)), symbols=THREE,
        config={"trade": {"max_total_margin_pct": 0.05}}),
    Row("margin cap: a scaled-down entry under min_notional_usd is skipped (1 margin left: notional 5)",
        bars({"AAA": {"adx": 31.0}, "BBB": {"adx": 35.0}, "CCC": QUIET}),
        (opens(0, symbol="BBB", size=15.0),), symbols=THREE, config={"trade": {"max_total_margin_pct": 0.0301}}),
    Row("max_entry_orders_per_loop: at most that many new positions per bar (1: the best of three)",
        bars({"AAA": {"adx": 31.0}, "BBB": {"adx": 35.0}, "CCC": {"adx": 33.0}}),
        (opens(0, symbol="BBB"),), symbols=THREE, config={"trade": {"max_entry_orders_per_loop": 1}}),
    Row("max_open_positions: a held position counts, so with a cap of 1 a new signal does not open",
        bars({"AAA": QUIET, "BBB": {}, "CCC": QUIET}), (), symbols=THREE,
        start=({**HELD_LONG, "symbol": "AAA"},), config={"trade": {"max_open_positions": 1}}),
    # re-entry cooldown (PESC): ADX 30 -> 180 - (30 - 25) / 15 x (180 - 45) = 135 minutes
    Row("re-entry cooldown: stopped out of a long on bar 0, a long at ADX 30 waits 135 minutes (bar 3)",
        bars({**QUIET, "low": 95.5, "close": 95.9}, {"close": 99.5}, {"close": 99.5}, {"close": 99.5}),
        (closes(0, "stop_loss", 95.9), opens(3, 99.5)), start=(HELD_LONG,)),
    Row("re-entry cooldown: at ADX 40 and above it is reentry_cooldown_min_mins (45): re-enters on the next bar",
        bars({**QUIET, "low": 95.5, "close": 95.9}, {"close": 99.5, "adx": 40.0}),
        (closes(0, "stop_loss", 95.9), opens(1, 99.5)), start=(HELD_LONG,)),
    Row("re-entry cooldown: the other side is never delayed (a short on the next bar)",
        bars({**QUIET, "low": 95.5, "close": 95.9}, SHORT_BAR),
        (closes(0, "stop_loss", 95.9), opens(1, side="SHORT")), start=(HELD_LONG,)),
    Row("re-entry cooldown: reentry_cooldown_minutes 0 switches it off: re-enters on the next bar",
        bars({**QUIET, "low": 95.5, "close": 95.9}, {"close": 99.5}),
        (closes(0, "stop_loss", 95.9), opens(1, 99.5)), start=(HELD_LONG,),
        config={"trade": {"reentry_cooldown_minutes": 0.0}}),
    # signal flip: an opposite signal closes the position at the close and may open the new side
    Row("signal flip: a short signal on a held long (reverse_entry_signal) closes it and opens the short",
        bars({}), (closes(0, "signal_flip", 100.0), opens(0, side="SHORT")), start=(HELD_LONG,),
        config={"trade": {"reverse_entry_signal": True, "enable_ssf_filter": False}}),
    Row("signal flip: a short signal while the EMAs only weakly crossed (no breakdown) flips the long",
        bars({"ema_fast": 97.95, "ema_slow": 98.0, "close": 97.5, "low": 97.4}),
        (closes(0, "signal_flip", 97.5), opens(0, 97.5, side="SHORT")),
        start=(HELD_LONG,), base=SHORT_BAR),
    Row("signal flip: a trend breakdown comes first: the flipped short closes on the EMAs turning up "
        "(trend_flip), and the reversed short signal then waits out the re-entry cooldown",
        bars({}, {}), (closes(0, "signal_flip", 100.0), opens(0, side="SHORT"),
                       closes(1, "trend_flip", 100.0, side="SHORT")),
        start=(HELD_LONG,), config={"trade": {"reverse_entry_signal": True, "enable_ssf_filter": False}}),
    Row("add cooldown: pyramiding adds once add_cooldown_minutes (90) have passed since the last open/add",
        bars({"close": 101.5, "high": 101.8}, {"close": 101.5, "high": 101.8}),
        (Fill(1, "ADD", "pyramid", 101.5),), start=({**HELD_LONG, "open_time_ms": T0},),
        config={"trade": {"enable_pyramiding": True, "add_cooldown_minutes": 90.0}}),
    Row("add: a position less than add_min_profit_atr (0.5 ATR = 1) in profit is not added to",
        bars({"close": 100.9, "high": 101.0}), (), start=(HELD_LONG,), config={"trade": {"enable_pyramiding": True}}),
    Row("add: at max_adds_per_symbol no further add", bars({"close": 101.5, "high": 101.8}), (),
        start=({**HELD_LONG, "adds_count": 2},), config={"trade": {"enable_pyramiding": True}}),
    Row("add: an add's margin is the balance (10,000) x allocation_pct (3 %) x add_fraction_of_base_margin "
        "(0.5) = 150, at the position's leverage (5): notional 750",
        bars({"close": 101.5, "high": 101.8}), (Fill(0, "ADD", "pyramid", 101.5, size=750.0 / 101.5),),
        start=(HELD_LONG,), config={"trade": {"enable_pyramiding": True}}),
    Row("add: the add's size ignores the confidence multiple of dynamic sizing: still notional 750",
        bars({"close": 101.5, "high": 101.8}), (Fill(0, "ADD", "pyramid", 101.5, size=750.0 / 101.5),),
        start=(HELD_LONG,), config={"trade": {"enable_pyramiding": True, "enable_dynamic_sizing": True}}),
    Row("add: an add under min_notional_usd is bumped to it (allocation_pct 0.0001: notional 2.5 -> 10)",
        bars({"close": 101.5, "high": 101.8}), (Fill(0, "ADD", "pyramid", 101.5, size=10.0 / 101.5),),
        start=(HELD_LONG,), config={"trade": {"enable_pyramiding": True, "allocation_pct": 0.0001}}),
    Row("add: without bump_to_min_notional an add under the minimum is skipped",
        bars({"close": 101.5, "high": 101.8}), (), start=(HELD_LONG,),
        config={"trade": {"enable_pyramiding": True, "allocation_pct": 0.0001, "bump_to_min_notional": False}}),
    Row("add: refused, not scaled down, when its margin (150) would take the margin in use (200) over "
        "max_total_margin_pct (3.4 % of 10,000 = 340)",
        bars({"close": 101.5, "high": 101.8}), (), start=(HELD_LONG,),
        config={"trade": {"enable_pyramiding": True, "max_total_margin_pct": 0.034}}),
    Row("add: a margin exactly filling the cap (200 + 150 = 3.5 % of 10,000) is allowed",
        bars({"close": 101.5, "high": 101.8}), (Fill(0, "ADD", "pyramid", 101.5, size=750.0 / 101.5),),
        start=(HELD_LONG,), config={"trade": {"enable_pyramiding": True, "max_total_margin_pct": 0.035}}),
    Row("add: adds come before new positions, in symbol order: the held BBB's add (ADX 31) takes the room a "
        "higher-ranked new AAA signal (ADX 35) would have needed",
        bars({"AAA": {"adx": 35.0}, "BBB": {"close": 101.5, "high": 101.8, "adx": 31.0}}),
        (Fill(0, "ADD", "pyramid", 101.5, symbol="BBB", size=750.0 / 101.5),), symbols=("AAA", "BBB"),
        start=({**HELD_LONG, "symbol": "BBB"},),
        config={"trade": {"enable_pyramiding": True, "max_total_margin_pct": 0.035}}),
]

# --------------------------------------------------------------------------------------- funding
FUNDING = [
    Row("funding: a long pays size x open x rate at the bar's open (10 x 100 x 0.001)",
        bars(QUIET), (), start=(HELD_LONG,), funding=(0.001,), funding_paid=1.0),
    Row("funding on a missing bar: owed anyway, at the last close (10 x 100 x 0.001)",
        bars(MISSING), (), start=(HELD_LONG,), funding=(0.001,), funding_paid=1.0),
    Row("funding: a short receives a positive rate", bars({**SHORT_BAR, "adx": 10.0}), (),
        start=({**HELD_LONG, "side": "SHORT"},), funding=(0.001,), funding_paid=-1.0),
    Row("funding: off with simulate_funding false", bars(QUIET), (), start=(HELD_LONG,), funding=(0.001,),
        funding_paid=0.0, config={"trade": {"simulate_funding": False}}),
]

# ----------------------------------------------------------------------------------------- costs
COSTS_ON = {"trade": {"slippage_bps": 10.0, "exit_slippage_bps": 0.5, "taker_fee_bps": 4.5}}
COSTS = [
    Row("costs: an open fills slippage_bps (10) above the close (100.1); a stop on a close at 95 fills "
        "exit_slippage_bps (0.5) below it (94.99525)",
        bars({}, {**QUIET, "low": 94.5, "close": 95.0}),
        (opens(0, 100.1, size=15.0), closes(1, "stop_loss", 95.0 * (1 - 0.5e-4), size=15.0)), config=COSTS_ON),
    Row("costs: a short's exit fills exit_slippage_bps above the close (a take-profit close at 88: 88.0044)",
        bars({**SHORT_BAR, "adx": 10.0, "close": 88.0, "low": 87.9}),
        (closes(0, "take_profit", 88.0 * (1 + 0.5e-4), side="SHORT"),), start=({**HELD_LONG, "side": "SHORT", "entry_price": 100.0},),
        base=SHORT_BAR, config=deep_merge(COSTS_ON, NO_PARTIAL)),
]


def test_taker_fee_is_charged_on_every_fill_notional():
    """taker_fee_bps (4.5) of each fill's notional leaves the balance: 15 x 100.1 in, 15 x 94.99525 out."""
    _, acct = run(COSTS[0])
    assert acct[A.FEES] == pytest.approx(4.5e-4 * 15 * (100.1 + 95.0 * (1 - 0.5e-4)), rel=1e-12)


# ------------------------------------------------------ AVE, pullback and slow-drift entries, breadth
# AVE (reference §4 item 7): the effective min ADX is min_adx, capped at 25 while ADX rises faster
# than 0.5 a bar (TMC), times ave_adx_mult (1.25) when ATR / its 50-bar mean > ave_atr_ratio_gt (1.5).
VOLATILE = {"atr": 3.2, "avg_atr": 2.0}  # ATR 1.6 x its mean
AVE = [
    Row("AVE: on a volatile bar (ATR 1.6 x its mean) a long needs ADX above 22 x 1.25 = 27.5: ADX 27 refuses",
        bars({**VOLATILE, "adx": 27.0}), ()),
    Row("AVE: on the volatile bar ADX 27.6 admits", bars({**VOLATILE, "adx": 27.6}), (opens(0),)),
    Row("AVE: ATR exactly ave_atr_ratio_gt (1.5) x its mean is not volatile: ADX 23 admits",
        bars({"atr": 3.0, "avg_atr": 2.0, "adx": 23.0}), (opens(0),)),
    Row("AVE: with ave_enabled off the volatile bar needs only min_adx: ADX 23 admits",
        bars({**VOLATILE, "adx": 23.0}), (opens(0),), config={"thresholds": {"entry": {"ave_enabled": False}}}),
    Row("AVE: an ave_adx_mult <= 0 counts as 1: ADX 23 admits on the volatile bar",
        bars({**VOLATILE, "adx": 23.0}), (opens(0),), config={"thresholds": {"entry": {"ave_adx_mult": 0.0}}}),
    Row("AVE: while the ATR mean is not known yet the bar is not volatile: ADX 23 admits",
        bars({"atr": 3.2, "avg_atr": math.nan, "adx": 23.0}), (opens(0),)),
    Row("AVE after TMC: min_adx 30 capped at 25 (ADX slope 1), x1.25 = 31.25 on a volatile bar: ADX 31 refuses",
        bars({**VOLATILE, "adx": 31.0}), (), config={"thresholds": {"entry": {"min_adx": 30.0}}}),
    Row("AVE: the long keeps 27.5 as its trend-exhaustion level: ADX 27 on the next bar closes it",
        bars({**VOLATILE, "adx": 28.0}, {**QUIET, "adx": 27.0}),
        (opens(0), closes(1, "trend_exhaustion", 100.0))),
]

# Pullback continuation (reference B16): tried when the standard entry gives nothing; the close
# crosses the fast EMA (99) in the trend's direction. Bar 0 closes at 98.5, under the fast EMA;
# bar 1 closes at 100 with a decelerating MACD histogram (0.4 after 0.5), so the standard entry refuses.
PULLBACK = {"thresholds": {"entry": {"enable_pullback_entries": True}}}
UNDER_FAST = {**QUIET, "close": 98.5, "low": 98.2}
DECEL = {"macd_hist": 0.4, "macd_hist_prev": 0.5}
OVER_FAST_SHORT = {**SHORT_BAR, "adx": 10.0, "close": 101.5, "high": 101.8}
DECEL_SHORT = {"macd_hist": -0.4, "macd_hist_prev": -0.5}
PULLBACKS = [
    Row("pullback: the close crossing back above the fast EMA in an up-trend opens a low-confidence long "
        "(leverage_low 1: notional 300) where the standard entry refuses",
        bars(UNDER_FAST, DECEL), (opens(1, size=3.0),), config=PULLBACK),
    Row("pullback: off by default, the same bars open nothing", bars(UNDER_FAST, DECEL), ()),
    Row("pullback: no cross (the previous close 99.5 already above the previous fast EMA) opens nothing",
        bars({**QUIET, "close": 99.5}, DECEL), (), config=PULLBACK),
    Row("pullback: a previous close exactly at the previous fast EMA counts as under it (a cross)",
        bars({**QUIET, "close": 99.0, "low": 98.8}, DECEL), (opens(1, size=3.0),), config=PULLBACK),
    Row("pullback: ADX under pullback_min_adx (22) refuses", bars(UNDER_FAST, {**DECEL, "adx": 21.9}), (),
        config=PULLBACK),
    Row("pullback: ADX at pullback_min_adx admits (at least, not above)",
        bars(UNDER_FAST, {**DECEL, "adx": 22.0}), (opens(1, size=3.0),), config=PULLBACK),
    Row("pullback: RSI under pullback_rsi_long_min (50) refuses a long", bars(UNDER_FAST, {**DECEL, "rsi": 49.9}),
        (), config=PULLBACK),
    Row("pullback: the fast EMA under the slow one (no alignment) refuses",
        bars(UNDER_FAST, {**DECEL, "ema_slow": 99.5}), (), config=PULLBACK),
    Row("pullback: with pullback_require_macd_sign a negative histogram refuses (SSF off)",
        bars(UNDER_FAST, {"macd_hist": -0.1, "macd_hist_prev": 0.0}), (),
        config=deep_merge(PULLBACK, {"trade": {"enable_ssf_filter": False}})),
    Row("pullback: without pullback_require_macd_sign a negative histogram admits (SSF off)",
        bars(UNDER_FAST, {"macd_hist": -0.1, "macd_hist_prev": 0.0}), (opens(1, size=3.0),),
        config=deep_merge(PULLBACK, {"trade": {"enable_ssf_filter": False},
                                     "thresholds": {"entry": {"pullback_require_macd_sign": False}}})),
    Row("pullback: an extended close (4.2 % from the fast EMA) refuses",
        bars({**QUIET, "close": 95.0, "low": 94.8, "ema_fast": 96.0, "ema_slow": 90.0},
             {**DECEL, "ema_fast": 96.0, "ema_slow": 90.0}), (), config=PULLBACK),
    Row("pullback: pullback_confidence medium opens at leverage_medium (5): notional 1,500",
        bars(UNDER_FAST, DECEL), (opens(1, size=15.0),),
        config=deep_merge(PULLBACK, {"thresholds": {"entry": {"pullback_confidence": "medium"}}})),
    Row("pullback: the mirror, the close crossing back under the fast EMA in a down-trend, opens a short",
        bars(OVER_FAST_SHORT, DECEL_SHORT), (opens(1, side="SHORT", size=3.0),), base=SHORT_BAR, config=PULLBACK),
    Row("pullback: RSI above pullback_rsi_short_max (50) refuses a short",
        bars(OVER_FAST_SHORT, {**DECEL_SHORT, "rsi": 50.1}), (), base=SHORT_BAR, config=PULLBACK),
    Row("pullback: the long keeps pullback_min_adx (25 here) as its exhaustion level: ADX 24.5 closes it",
        bars(UNDER_FAST, {**DECEL, "adx": 26.0}, {**DECEL, "adx": 24.5}),
        (opens(1, size=3.0), closes(2, "trend_exhaustion", 100.0)),
        config=deep_merge(PULLBACK, {"thresholds": {"entry": {"pullback_min_adx": 25.0}}})),
]

# Slow drift (reference B17, B8): ADX 15 is under min_adx (22), so the standard entry refuses; the
# slow EMA's slope over slow_drift_slope_window bars is 0.001 of the close (>= 0.0006).
DRIFT = {"thresholds": {"entry": {"enable_slow_drift_entries": True}}}
DRIFT_BAR = {"adx": 15.0, "ema_slow_slope": 0.001}
SLOW_DRIFT = [
    Row("slow drift: an aligned trend with the close above the slow EMA and the slope >= 0.0006 opens a "
        "low-confidence long (notional 300)", bars(DRIFT_BAR), (opens(0, size=3.0),), config=DRIFT),
    Row("slow drift: off by default the same bar opens nothing", bars(DRIFT_BAR), ()),
    Row("slow drift: a slope under slow_drift_min_slope_pct refuses", bars({**DRIFT_BAR, "ema_slow_slope": 0.0005}),
        (), config=DRIFT),
    Row("slow drift: a slope not known yet (a short history) counts as 0 and refuses",
        bars({**DRIFT_BAR, "ema_slow_slope": math.nan}), (), config=DRIFT),
    Row("slow drift: ADX under slow_drift_min_adx (10) refuses", bars({**DRIFT_BAR, "adx": 9.9}), (), config=DRIFT),
    Row("slow drift: the close under the slow EMA refuses a long",
        bars({**DRIFT_BAR, "close": 97.5, "low": 97.2, "ema_fast": 98.5}), (), config=DRIFT),
    Row("slow drift: RSI under slow_drift_rsi_long_min (50) refuses", bars({**DRIFT_BAR, "rsi": 49.0}), (),
        config=DRIFT),
    Row("slow drift: with slow_drift_require_macd_sign a negative histogram refuses (SSF off)",
        bars({**DRIFT_BAR, "macd_hist": -0.1}), (),
        config=deep_merge(DRIFT, {"trade": {"enable_ssf_filter": False}})),
    Row("slow drift: the mirror (slope -0.001, close under the slow EMA) opens a short",
        bars({"adx": 15.0, "ema_slow_slope": -0.001}), (opens(0, side="SHORT", size=3.0),), base=SHORT_BAR,
        config=DRIFT),
    Row("slow drift: a rising slope does not open a short", bars({"adx": 15.0, "ema_slow_slope": 0.001}), (),
        base=SHORT_BAR, config=DRIFT),
    Row("slow drift: the long keeps slow_drift_min_adx (10) as its exhaustion level: ADX 12 keeps it",
        bars(DRIFT_BAR, {**DRIFT_BAR, "adx": 12.0}), (opens(0, size=3.0),), config=DRIFT),
    Row("slow drift: ADX 9.5 on the next bar closes it (trend exhaustion)",
        bars(DRIFT_BAR, {**DRIFT_BAR, "adx": 9.5}), (opens(0, size=3.0), closes(1, "trend_exhaustion", 100.0)),
        config=DRIFT),
    Row("ranging cleared by slow drift (B8): two ranging votes refuse a standard long without slow drift",
        bars({"adx": 20.0, "bb_width": 0.07, "ema_slow_slope": 0.001}), (),
        config={"thresholds": {"entry": {"min_adx": 15.0}}}),
    Row("ranging cleared by slow drift (B8): with slow-drift entries on and |slope| >= 0.0006 the market is not "
        "ranging: the standard (medium) long enters",
        bars({"adx": 20.0, "bb_width": 0.07, "ema_slow_slope": -0.001}), (opens(0, size=15.0),),
        config=deep_merge(DRIFT, {"thresholds": {"entry": {"min_adx": 15.0}}})),
    Row("ranging cleared by slow drift (B8): a flatter slope (0.0005) leaves it ranging",
        bars({"adx": 20.0, "bb_width": 0.07, "ema_slow_slope": 0.0005}), (),
        config=deep_merge(DRIFT, {"thresholds": {"entry": {"min_adx": 15.0}}})),
]

# Breadth (reference B19): the percentage of symbols whose previous bar had the fast EMA above the
# slow one; 50 when no symbol's EMAs were known on its previous bar.
REGIME = {"market_regime": {"enable_regime_filter": True}}
AUTO = {"market_regime": {"enable_auto_reverse": True}, "trade": {"enable_ssf_filter": False}}
BEARISH_QUIET = {**SHORT_BAR, "adx": 10.0}
BREADTH = [
    Row("regime filter: no long while breadth is under breadth_block_long_below (0 % < 10)",
        bars(BEARISH_QUIET, LONG_BAR), (), config=REGIME),
    Row("regime filter: off, the same long opens", bars(BEARISH_QUIET, LONG_BAR), (opens(1),)),
    Row("regime filter: no short while breadth is above breadth_block_short_above (100 % > 90)",
        bars(QUIET, SHORT_BAR), (), config=REGIME),
    Row("regime filter: breadth exactly at breadth_block_short_above (50 % of two) does not block a short",
        bars({"ETH": QUIET, "SOL": BEARISH_QUIET}, {"ETH": SHORT_BAR, "SOL": BEARISH_QUIET}),
        (opens(1, side="SHORT"),), symbols=("ETH", "SOL"),
        config=deep_merge(REGIME, {"market_regime": {"breadth_block_short_above": 50.0}})),
    Row("regime filter: breadth counts only symbols whose EMAs were known: SOL without a bar leaves 100 % > 50",
        bars({"ETH": QUIET, "SOL": MISSING}, {"ETH": SHORT_BAR, "SOL": MISSING}), (), symbols=("ETH", "SOL"),
        config=deep_merge(REGIME, {"market_regime": {"breadth_block_short_above": 50.0}})),
    Row("regime filter: breadth reads the previous bar: a bullish previous bar blocks a short though the "
        "EMAs turned now", bars(QUIET, SHORT_BAR), (), config=REGIME),
    Row("regime filter: with no EMAs known yet breadth is 50: under breadth_block_long_below 60 a long is refused",
        bars(LONG_BAR), (), config=deep_merge(REGIME, {"market_regime": {"breadth_block_long_below": 60.0}})),
    Row("auto-reverse: while auto_reverse_breadth_low <= breadth (50) <= high a long signal opens a short",
        bars(LONG_BAR), (opens(0, side="SHORT"),), config=AUTO),
    Row("auto-reverse: above auto_reverse_breadth_high (100 % > 90) the long is followed",
        bars(QUIET, LONG_BAR), (opens(1),), config=AUTO),
    Row("auto-reverse decides instead of reverse_entry_signal: at 100 % the long stays a long",
        bars(QUIET, LONG_BAR), (opens(1),), config=deep_merge(AUTO, {"trade": {"reverse_entry_signal": True}})),
    Row("auto-reverse: the breadth limits are inclusive (breadth 100 with auto_reverse_breadth_high 100 reverses)",
        bars(QUIET, LONG_BAR), (opens(1, side="SHORT"),),
        config=deep_merge(AUTO, {"market_regime": {"auto_reverse_breadth_high": 100.0}})),
    Row("regime filter reads the reversed side: auto-reversed to a short at breadth 50, over "
        "breadth_block_short_above 40, nothing opens",
        bars(LONG_BAR), (), config=deep_merge(AUTO, {"market_regime": {"enable_regime_filter": True,
                                                                        "breadth_block_short_above": 40.0}})),
]

# The funding-headwind exit (reference F14; its rate is ours: the symbol's last settlement per hour).
# HELD_LONG is held for 100 h: its level decays to the 0.35 floor, x1.5 for the histogram moving with
# it (at least 0.5) = 0.525, x1.3 for the close above the macro EMA = 0.6825 ATR = 1.365 below 100.
HEADWIND = {"trade": {"enable_funding_headwind_exit": True}}
FRESH_LONG = {**HELD_LONG, "open_time_ms": T0 + H}  # opened at bar 0's close time: held 0 h on bar 0
NO_BOOST = {**QUIET, "macd_hist": 0.4, "macd_hist_prev": 0.5, "ema_macro": 101.0}  # no momentum, no macro
FUNDING_HEADWIND = [
    Row("funding headwind: a long paying 0.02 %/h, 0.75 ATR underwater (over its 0.68 ATR level) closes at "
        "the close", bars({**QUIET, "low": 98.3, "close": 98.5}), (closes(0, "funding_headwind", 98.5),),
        start=(HELD_LONG,), funding=(0.0002,), config=HEADWIND),
    Row("funding headwind: 0.65 ATR underwater (under 0.68) keeps the long",
        bars({**QUIET, "low": 98.5, "close": 98.7}), (), start=(HELD_LONG,), funding=(0.0002,), config=HEADWIND),
    Row("funding headwind: off by default, 0.75 ATR underwater keeps the long",
        bars({**QUIET, "low": 98.3, "close": 98.5}), (), start=(HELD_LONG,), funding=(0.0002,)),
    Row("funding headwind: a long receiving funding (a negative rate) is not in a headwind",
        bars({**QUIET, "low": 98.3, "close": 98.5}), (), start=(HELD_LONG,), funding=(-0.0002,), config=HEADWIND),
    Row("funding headwind: a short paying a negative rate, 0.75 ATR underwater, closes",
        bars({**BEARISH_QUIET, "high": 101.7, "close": 101.5}), (closes(0, "funding_headwind", 101.5, side="SHORT"),),
        start=({**HELD_LONG, "side": "SHORT"},), funding=(-0.0002,), config=HEADWIND, base=SHORT_BAR),
    Row("funding headwind: a bar without a settlement keeps the last rate: the long closes on bar 1",
        bars(QUIET, {**QUIET, "low": 98.3, "close": 98.5}), (closes(1, "funding_headwind", 98.5),),
        start=(HELD_LONG,), funding=(0.0002, 0.0), config=HEADWIND),
    Row("funding headwind: a long in profit is never closed by it", bars({**QUIET, "close": 100.5}), (),
        start=(HELD_LONG,), funding=(0.002,), config=HEADWIND),
    Row("funding headwind: a fresh long (held 0 h) at a rate above 0.01 %/h has the ladder's first level, 0.15 "
        "ATR: 0.2 ATR underwater closes it", bars({**NO_BOOST, "low": 99.5, "close": 99.6}),
        (closes(0, "funding_headwind", 99.6),), start=(FRESH_LONG,), funding=(0.00011,), config=HEADWIND),
    Row("funding headwind: at 0.003 %/h the fresh long's level is 0.60 ATR: 0.2 ATR underwater keeps it",
        bars({**NO_BOOST, "low": 99.5, "close": 99.6}), (), start=(FRESH_LONG,), funding=(0.00003,), config=HEADWIND),
    Row("funding headwind: at 0.003 %/h, 0.65 ATR underwater (over 0.60) closes the fresh long",
        bars({**NO_BOOST, "low": 98.6, "close": 98.7}), (closes(0, "funding_headwind", 98.7),), start=(FRESH_LONG,),
        funding=(0.00003,), config=HEADWIND),
    Row("funding headwind: ADX falling shrinks the level x0.75 (0.60 -> 0.45): 0.5 ATR underwater closes it",
        bars({**NO_BOOST, "adx_slope": -0.5, "low": 98.9, "close": 99.0}), (closes(0, "funding_headwind", 99.0),),
        start=(FRESH_LONG,), funding=(0.00003,), config=HEADWIND),
]

# The per-symbol warm-up (reference A13): a symbol enters only once it has had
# engine.symbol_warmup_bars bars of its own, this one included; exits always run.
WARMUP = {"engine": {"symbol_warmup_bars": 200}}
SYMBOL_WARMUP = [
    Row("warm-up: with symbol_warmup_bars 200, a symbol's 199th bar does not enter", bars({"bar_count": 199.0}), (),
        config=WARMUP),
    Row("warm-up: its 200th bar enters", bars({"bar_count": 200.0}), (opens(0),), config=WARMUP),
    Row("warm-up: 0 (the default) leaves only each indicator's readiness: a symbol's 5th bar enters",
        bars({"bar_count": 5.0}), (opens(0),)),
    Row("warm-up: the symbols count their own bars: ETH's 300th bar enters while SOL's 150th does not",
        bars({"ETH": {"bar_count": 300.0}, "SOL": {"bar_count": 150.0}}), (opens(0, symbol="ETH"),),
        symbols=("ETH", "SOL"), config=WARMUP),
    Row("warm-up: exits always run: a held long is stopped out on its symbol's 10th bar",
        bars({**QUIET, "bar_count": 10.0, "low": 94.5, "close": 95.0}), (closes(0, "stop_loss", 95.0),),
        start=(HELD_LONG,), config=WARMUP),
]

TABLE = ENTRY_GATES + AVE + SYMBOL_WARMUP + PULLBACKS + SLOW_DRIFT + BREADTH + CONFIDENCE + CLOSE_EXITS + STOPS_AND_TARGETS + SMART_EXITS + EXITS + RANKING + FUNDING + FUNDING_HEADWIND + COSTS


@pytest.mark.parametrize("row", TABLE, ids=[r.rule for r in TABLE])
def test_rule(row: Row) -> None:
    check(row)


def test_every_gate_is_a_kernel_function_called_directly():
    """Single gates, straight from the CPU kernel: each admits the long bar and refuses one value."""
    cfg = config_from_dict({"global": COMMON})
    p = cfg.params_for(None)
    f = np.full(F.N, math.nan)
    for name, v in LONG_BAR.items():
        f[getattr(F, name.upper())] = v
    long = 1.0
    assert K.trend_side(f) == long
    for gate, args, field_name, refusing in (
        (K.adx_above_min, (p, f), "adx", 21.0),
        (K.adx_rising, (p, f), "adx_slope", -1.0),
        (K.not_extended, (p, f), "ema_fast", 90.0),
        (K.macd_confirms, (p, f, long), "macd_hist", 0.3),
        (K.stoch_rsi_allows, (p, f, long), "stoch_rsi_k", 0.9),
        (K.rsi_momentum, (p, f, long), "rsi", 50.0),
        (K.momentum_sign_agrees, (p, f, long), "macd_hist", -0.1),
        (K.rsi_not_extreme, (p, f, long), "rsi", 71.0),
    ):
        assert gate(*args), gate
        col = getattr(F, field_name.upper())
        kept, f[col] = f[col], refusing
        assert not gate(*args), (gate, field_name, refusing)
        f[col] = kept


def _held_row(**ind) -> np.ndarray:
    """A position row of HELD_LONG (entry 100, ATR 2) with the noted main-bar indicators ``ind``."""
    from strategy.layout import POS

    ps = np.zeros(NPOS)
    ps[POS.SIDE], ps[POS.SIZE], ps[POS.ENTRY], ps[POS.ENTRY_ATR], ps[POS.CONF] = 1.0, 10.0, 100.0, 2.0, 1.0
    ps[POS.IND_BBW_RATIO] = 1.0
    for k, v in ind.items():
        ps[getattr(POS, k.upper())] = v
    return ps


def test_stop_loss_multiple_modifiers_in_the_reference_order():
    """sl_atr_mult 2: x0.8 (ADX falling, underwater), x1.15 (ADX > 40 and > 0.5 ATR in profit),
    x1.10 (ADX > 45); recomputed from the evaluation's price."""
    p = config_from_dict({"global": COMMON}).params_for(None)
    assert K.stop_loss_mult(p, _held_row(ind_adx=30.0, ind_adx_slope=-1.0), 99.0) == pytest.approx(1.6)
    assert K.stop_loss_mult(p, _held_row(ind_adx=30.0, ind_adx_slope=-1.0), 101.0) == pytest.approx(2.0)
    assert K.stop_loss_mult(p, _held_row(ind_adx=41.0, ind_adx_slope=1.0), 101.2) == pytest.approx(2.3)
    assert K.stop_loss_mult(p, _held_row(ind_adx=41.0, ind_adx_slope=1.0), 101.0) == pytest.approx(2.0)
    assert K.stop_loss_mult(p, _held_row(ind_adx=46.0, ind_adx_slope=1.0), 102.0) == pytest.approx(2.0 * 1.15 * 1.1)
    assert K.stop_loss_mult(p, _held_row(ind_adx=46.0, ind_adx_slope=-1.0), 99.0) == pytest.approx(2.0 * 0.8 * 1.1)


def test_trailing_distance_modifiers_and_floors():
    """Base 1 ATR: above 2 ATRs in profit it is re-chosen (ADX > 35 and rising: 1; ATR rising: 0.75;
    else 0.5); otherwise ADX < 25 gives 0.7; the floor is 0.7 with RSI running, else 0.5; low
    confidence reads the _low_conf values when above 0."""
    cfg = config_from_dict({"global": deep_merge(COMMON, {"trade": {"trailing_distance_atr": 1.0}})})
    p = cfg.params_for(None)
    d = K.trailing_distance
    assert d(p, _held_row(ind_adx=36.0, ind_adx_slope=1.0, ind_rsi=50.0), 2.5) == pytest.approx(1.0)
    assert d(p, _held_row(ind_adx=30.0, ind_atr_slope=0.1, ind_rsi=50.0), 2.5) == pytest.approx(0.75)
    assert d(p, _held_row(ind_adx=30.0, ind_atr_slope=-0.1, ind_rsi=50.0), 2.5) == pytest.approx(0.5)
    assert d(p, _held_row(ind_adx=30.0, ind_atr_slope=-0.1, ind_rsi=65.0), 2.5) == pytest.approx(0.7)
    assert d(p, _held_row(ind_adx=20.0, ind_rsi=50.0), 1.5) == pytest.approx(0.7)
    assert d(p, _held_row(ind_adx=30.0, ind_rsi=50.0, ind_bbw_ratio=1.3), 1.5) == pytest.approx(1.25)
    assert d(p, _held_row(ind_adx=30.0, ind_rsi=50.0, ind_bbw_ratio=1.2), 1.5) == pytest.approx(1.0)
    low = config_from_dict({"global": deep_merge(COMMON, {"trade": {"trailing_distance_atr": 1.0,
                                                                    "trailing_distance_atr_low_conf": 2.0}})})
    assert d(low.params_for(None), _held_row(ind_adx=30.0, ind_rsi=50.0, conf=0.0), 1.5) == pytest.approx(2.0)
    assert d(low.params_for(None), _held_row(ind_adx=30.0, ind_rsi=50.0, conf=1.0), 1.5) == pytest.approx(1.0)


def test_reentry_cooldown_is_not_held_after_a_signal_flip():
    """PESC holds a same-side re-entry after a stop, never after a close by signal flip."""
    from strategy.layout import POS, R

    p = config_from_dict({"global": COMMON}).params_for(None)
    ps = np.zeros(NPOS)
    ps[POS.LAST_EXIT_T], ps[POS.LAST_EXIT_SIDE] = T0, 1.0
    ps[POS.LAST_EXIT_REASON] = R.STOP_LOSS
    assert K.reentry_blocked(p, ps, 1.0, 30.0, float(T0 + H))
    assert not K.reentry_blocked(p, ps, -1.0, 30.0, float(T0 + H))
    assert not K.reentry_blocked(p, ps, 1.0, 30.0, float(T0 + 3 * H))
    ps[POS.LAST_EXIT_REASON] = R.SIGNAL_FLIP
    assert not K.reentry_blocked(p, ps, 1.0, 30.0, float(T0 + H))
    assert K.reentry_cooldown_ms(p, 30.0) == pytest.approx(135 * 60_000)
    assert K.reentry_cooldown_ms(p, 20.0) == pytest.approx(180 * 60_000)
    assert K.reentry_cooldown_ms(p, 45.0) == pytest.approx(45 * 60_000)


# ------------------------------------------------------------------ sub-bars (exit and entry sub-bars)
# Rows in which each hourly bar has K_SUB 30-minute sub-bars that the kernel steps as they close
# (step_sub_bar), before the main close (step_main_close), in the engine's order: during the
# sub-bars the feature rows still hold the last CLOSED main bar; with entry sub-bars their
# open/high/low/close are the sub-bar's (stage_sub_prices). A fill is placed at (bar, sub-bar
# index) or (bar, "close").
K_SUB = 2
SUB_MS = H // K_SUB


def px(close: float) -> dict:
    """A sub-bar that trades at one price."""
    return {"open": close, "high": close, "low": close, "close": close}


@dataclass(frozen=True)
class SubFill:
    bar: int
    step: object   # sub-bar index, or "close"
    action: str
    reason: str
    price: float
    side: str = "LONG"
    symbol: str = "ETH"


@dataclass(frozen=True)
class SubRow:
    rule: str
    bars: tuple                      # main bars, as Row.bars
    subs: tuple                      # per main bar: K_SUB sub-bars (px(...), MISSING, or {symbol: ...}); None = all missing
    expect: tuple = ()
    config: dict = field(default_factory=dict)
    start: tuple = ()
    symbols: tuple = ("ETH",)
    base: dict = field(default_factory=lambda: LONG_BAR)
    exits: bool = False              # exits decided on the sub-bars (engine.exit_interval)
    entries: bool = True             # entries too (engine.entry_interval)


def run_subs(row: SubRow) -> list[SubFill]:
    symbols = list(row.symbols)
    nsym = len(symbols)
    cfg = config_from_dict({"global": deep_merge(COMMON, row.config)})
    params = cfg.params_matrix(symbols)
    pos, acct = np.zeros((nsym, NPOS)), np.zeros(NACCT)
    K.init_state(pos, acct, BALANCE)
    if row.start:
        apply_init_state(SimpleNamespace(pos=pos, acct=acct), {"version": 1, "balance": BALANCE,
                                                               "positions": list(row.start)}, symbols, params)
    fills, trades = np.zeros((64, NFILL)), np.zeros((64, NTRADE))
    book = (pos, acct, np.zeros(nsym), np.zeros(nsym, np.int64), fills, trades)
    feat = np.full((nsym, F.N), math.nan)
    valid = np.zeros(nsym, np.uint8)
    fund = np.zeros(nsym)
    tags: list[tuple[int, object]] = []

    def tag(b, step):
        tags.extend([(b, step)] * (int(acct[A.NFILLS]) - len(tags)))

    for b, bar in enumerate(row.bars):
        prev_valid = valid.copy()
        for j in range(K_SUB):
            sub = row.subs[b][j] if row.subs[b] is not None else MISSING
            per_symbol = sub if nsym > 1 else {symbols[0]: sub}
            o, h, lo, c = (np.full(nsym, math.nan) for _ in range(4))
            sv = np.zeros(nsym, np.uint8)
            for s, sym in enumerate(symbols):
                one = per_symbol.get(sym, MISSING) if per_symbol is not MISSING else MISSING
                if one is not MISSING:
                    o[s], h[s], lo[s], c[s], sv[s] = one["open"], one["high"], one["low"], one["close"], 1
            if row.entries:
                K.stage_sub_prices(feat, o, h, lo, c, sv)
            K.step_sub_bar(T0 + b * H, j, (o, h, lo, c, sv, float(T0 + b * H + (j + 1) * SUB_MS)), feat, prev_valid,
                           fund, params, -1, book, int(row.exits), int(row.entries))
            tag(b, j)
        per_symbol = bar if nsym > 1 else {symbols[0]: bar}
        valid = np.zeros(nsym, np.uint8)
        for s, sym in enumerate(symbols):
            over = per_symbol.get(sym, {})
            if over is MISSING:
                continue
            valid[s] = 1
            for name, v in {**row.base, **over}.items():
                feat[s, getattr(F, name.upper())] = v
        K.step_main_close(T0 + b * H, T0 + (b + 1) * H, feat, valid, prev_valid, fund, params, -1, book, K_SUB,
                          int(row.exits))
        tag(b, "close")
    out = []
    for r, (b, step) in zip(fills[: int(acct[A.NFILLS])], tags, strict=True):
        d = fill_dict(r, symbols)
        expect_t = T0 + (b + 1) * H if step == "close" else T0 + b * H + (step + 1) * SUB_MS
        assert d["t_ms"] == expect_t, (d, b, step)  # a fill is stamped at the close of the step that made it
        out.append(SubFill(b, step, d["action"], d["reason"], d["price"], d["side"], d["symbol"]))
    return out


UNDER_FAST = {"close": 98.9, "low": 98.5}  # LONG_BAR closing under its fast EMA (99): no long at its close
WEAK_CROSS_DOWN = {"ema_fast": 99.95, "ema_slow": 100.0, "close": 100.1}  # a short trend too weak to exit a long
NO_TRAIL = {"trade": {"trailing_start_atr": 50.0, "enable_breakeven_stop": False}}
SUB_ROWS = [
    SubRow("Entry sub-bars: entries are decided on each sub-bar's close from the last closed main bar's "
           "indicators with the sub-bar's OHLC: bar 0 closes under the fast EMA (no long), the first sub-bar of "
           "bar 1 closes above it (99.5): the long opens there, at 99.5",
           bars(UNDER_FAST, UNDER_FAST), ((px(98.9), px(98.9)), (px(99.5), px(99.5))),
           (SubFill(1, 0, "OPEN", "signal", 99.5),)),
    SubRow("Entry sub-bars read no later bar: the sub-bars of bar 1 read bar 0's ADX (10, refused) though bar 1's "
           "own ADX (30) admits; the long opens at bar 1's close",
           bars({"adx": 10.0}, {}), ((px(100.0), px(100.0)), (px(100.0), px(100.0))),
           (SubFill(1, "close", "OPEN", "signal", 100.0),)),
    SubRow("Entry sub-bars: a symbol enters on a sub-bar only when it had the previous main bar: bar 1 is "
           "missing, so bar 2's sub-bars (closing above the fast EMA) do not enter",
           bars(UNDER_FAST, MISSING, UNDER_FAST), ((px(98.9), px(98.9)), None, (px(99.5), px(99.5)))),
    SubRow("Entry sub-bars: a missing sub-bar decides nothing; the next present one does (sub-bar 1 of bar 1)",
           bars(UNDER_FAST, UNDER_FAST), ((px(98.9), px(98.9)), (MISSING, px(99.5))),
           (SubFill(1, 1, "OPEN", "signal", 99.5),)),
    SubRow("max_entry_orders_per_loop counts the main bar and its entry sub-bars: with 1, ETH opening on "
           "sub-bar 0 of bar 1 leaves SOL's signal at bar 1's close unfilled; SOL opens on bar 2's first sub-bar",
           bars({"ETH": UNDER_FAST, "SOL": {"adx": 10.0}}, {"ETH": UNDER_FAST, "SOL": {}},
                {"ETH": UNDER_FAST, "SOL": {}}),
           (({"ETH": px(98.9), "SOL": px(100.0)},) * 2, ({"ETH": px(99.5), "SOL": px(100.0)},) * 2,
            ({"ETH": px(99.0), "SOL": px(100.0)},) * 2),
           (SubFill(1, 0, "OPEN", "signal", 99.5), SubFill(2, 0, "OPEN", "signal", 100.0, symbol="SOL")),
           config={"trade": {"max_entry_orders_per_loop": 1}}, symbols=("ETH", "SOL")),
    SubRow("max_entry_orders_per_loop: with room (the default 6) SOL opens at bar 1's close beside ETH's sub-bar "
           "entry",
           bars({"ETH": UNDER_FAST, "SOL": {"adx": 10.0}}, {"ETH": UNDER_FAST, "SOL": {}}),
           (({"ETH": px(98.9), "SOL": px(100.0)},) * 2, ({"ETH": px(99.5), "SOL": px(100.0)},) * 2),
           (SubFill(1, 0, "OPEN", "signal", 99.5), SubFill(1, "close", "OPEN", "signal", 100.0, symbol="SOL")),
           symbols=("ETH", "SOL")),
    SubRow("Entry sub-bars keep the signal flip (the reference drops it there, its §5.5): a short signal on a "
           "sub-bar's close (99.9, under the fast EMA 99.95) closes the held long and opens the short at 99.9",
           bars(WEAK_CROSS_DOWN, WEAK_CROSS_DOWN), ((px(100.1), px(100.1)), (px(99.9), px(99.9))),
           (SubFill(1, 0, "CLOSE", "signal_flip", 99.9), SubFill(1, 0, "OPEN", "signal", 99.9, side="SHORT")),
           start=(HELD_LONG,), base=SHORT_BAR),
    SubRow("Exit sub-bars decide as each closes: the held long's stop (96) fires on the first sub-bar's close "
           "(95.5) and fills there",
           bars({"low": 95.0}), ((px(95.5), px(100.0)),), (SubFill(0, 0, "CLOSE", "stop_loss", 95.5),),
           start=(HELD_LONG,), base=QUIET, exits=True, entries=False),
    SubRow("Exit sub-bars: when one is missing while the position is open, the main close also evaluates the "
           "main bar: its close (95.5) is beyond the stop",
           bars({"close": 95.5, "low": 95.4}), ((px(100.0), MISSING),),
           (SubFill(0, "close", "CLOSE", "stop_loss", 95.5),), start=(HELD_LONG,), base=QUIET, exits=True,
           entries=False),
    SubRow("Exit sub-bars: a partial take-profit on the last sub-bar's close holds the smart exits at the main "
           "close (the trend flip of the bar does not close the rest)",
           bars({"close": 102.5, "ema_fast": 97.0}), ((px(100.0), px(102.5)),),
           (SubFill(0, 1, "REDUCE", "take_profit_partial", 102.5),), config=NO_TRAIL, start=(HELD_LONG,), base=QUIET,
           exits=True, entries=False),
    SubRow("Exit sub-bars: a partial on an earlier sub-bar, then a quiet last one: the smart exits run at the main "
           "close (trend flip at 101)",
           bars({"close": 101.0, "ema_fast": 97.0}), ((px(102.5), px(101.0)),),
           (SubFill(0, 0, "REDUCE", "take_profit_partial", 102.5), SubFill(0, "close", "CLOSE", "trend_flip", 101.0)),
           config=NO_TRAIL, start=(HELD_LONG,), base=QUIET, exits=True, entries=False),
    SubRow("Entry sub-bars with pullback entries: the sub-bar's close (99.5) crosses above the last main bar's "
           "fast EMA (99) from the last close seen (bar 0's 98.9), where the standard entry refuses (bar 0's MACD "
           "histogram decelerates): the pullback long opens on that sub-bar, at 99.5",
           bars({**UNDER_FAST, **DECEL}, {**UNDER_FAST, **DECEL}), ((px(98.9), px(98.9)), (px(99.5), px(99.5))),
           (SubFill(1, 0, "OPEN", "signal", 99.5),), config=PULLBACK),
    SubRow("Entry sub-bars without pullback entries: the same bars open nothing (the standard entry refuses the "
           "decelerating histogram on every sub-bar and close)",
           bars({**UNDER_FAST, **DECEL}, {**UNDER_FAST, **DECEL}), ((px(98.9), px(98.9)), (px(99.5), px(99.5)))),
]


@pytest.mark.parametrize("row", SUB_ROWS, ids=[r.rule for r in SUB_ROWS])
def test_sub_bar_rule(row: SubRow) -> None:
    got = run_subs(row)
    want = list(row.expect)
    assert len(got) == len(want), f"{row.rule}\n  fills: {got}\n  want:  {want}"
    for g, w in zip(got, want, strict=True):
        assert (g.bar, g.step, g.symbol, g.action, g.reason, g.side) == (w.bar, w.step, w.symbol, w.action,
                                                                        w.reason, w.side), f"{row.rule}\n  {g}\n  {w}"
        assert g.price == pytest.approx(w.price, rel=1e-12), f"{row.rule}: price {g.price} != {w.price}"
