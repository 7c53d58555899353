"""Exits on a finer interval: the order of events inside the hour decides the outcome."""

from __future__ import annotations

import numpy as np
import pytest

from cpu_replay.api import ReplayError, run_replay
from marketdata.candles import MarketData
from strategy.config import config_from_dict

H, M5 = 3_600_000, 300_000
T0 = 1_700_000_000_000 // H * H


def market(interval_ms: int, bars: list[tuple[float, float, float, float]], name: str) -> MarketData:
    a = np.array(bars, dtype=float).T[None, :, :]
    n = a.shape[2]
    return MarketData(name, interval_ms, ["ETH"], T0 + interval_ms * np.arange(n, dtype=np.int64),
                      a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.full((1, n), 1e6), np.ones((1, n), bool))


# One quiet hour, then an hour that first rallies through the partial target (102) and then falls
# through the stop (96). On the hourly bar alone both are touched and the stop wins.
HOURLY = market(H, [(100, 100.5, 99.5, 100), (100, 106, 94, 100), (100, 100.2, 99.8, 100)], "1h")
FIVE = [(100, 100.5, 99.5, 100)] * 12 + [(100, 102.5, 99.9, 102), (102, 102.1, 95, 95.5)] + [(95.5, 106, 94, 100)] * 10 + [(100, 100.2, 99.8, 100)] * 12
FIVE_MIN = market(M5, FIVE, "5m")
POSITION = {"version": 1, "balance": 10_000.0, "positions": [
    {"symbol": "ETH", "side": "LONG", "size": 10.0, "entry_price": 100.0, "entry_atr": 2.0, "leverage": 2.0,
     "open_time_ms": T0 - H}]}
CFG = {"global": {"trade": {"slippage_bps": 0.0, "exit_slippage_bps": 0.0, "tp_partial_atr_mult": 1.0, "tp_partial_pct": 0.7,
                            "sl_atr_mult": 2.0, "tp_atr_mult": 6.0, "trailing_start_atr": 50.0},
                  "engine": {"interval": "1h", "exit_fill": "touch"}}}


def exits(report):
    return [(f["action"], f["reason"], f["price"], f["t_ms"]) for f in report["fills"]]


def test_touch_hourly_bar_touching_stop_and_target_closes_at_the_stop():
    rep = run_replay(config_from_dict(CFG), HOURLY, init_state=POSITION)
    assert exits(rep) == [("CLOSE", "stop_loss", 96.0, T0 + 2 * H)]


def test_touch_five_minute_exits_take_the_partial_target_first():
    cfg = config_from_dict({"global": {**CFG["global"], "engine": {"interval": "1h", "exit_interval": "5m", "exit_fill": "touch"}}})
    rep = run_replay(cfg, HOURLY, init_state=POSITION, exit_md=FIVE_MIN)
    assert exits(rep) == [("REDUCE", "take_profit_partial", 102.0, T0 + H + M5),
                          ("CLOSE", "stop_loss", 96.0, T0 + H + 2 * M5)]
    assert rep["total_pnl"] == pytest.approx(7 * 2.0 - 3 * 4.0 - rep["total_fees"])


def test_exit_interval_without_its_candles_is_refused():
    cfg = config_from_dict({"global": {**CFG["global"], "engine": {"interval": "1h", "exit_interval": "5m", "exit_fill": "touch"}}})
    with pytest.raises(ReplayError, match="exit_interval=5m needs the 5m candles"):
        run_replay(cfg, HOURLY)


def gap(md: MarketData, *bars: int) -> MarketData:
    """``md`` with the given bars missing (valid False)."""
    from dataclasses import replace

    valid = md.valid.copy()
    valid[0, list(bars)] = False
    return replace(md, valid=valid)


def touch_cfg():
    return config_from_dict({"global": {**CFG["global"], "engine": {"interval": "1h", "exit_interval": "5m",
                                                                    "exit_fill": "touch"}}})


def test_touch_missing_exit_bar_the_present_ones_still_act_as_they_close():
    """Exits are decided on each sub-bar as it closes (live cannot know that a later one will be
    missing): the partial at 102 on the first 5m bar; the falling 5m bar is missing; the next one
    opens at 95.5, through the stop (96): a gap fills at its open, at its close time."""
    rep = run_replay(touch_cfg(), HOURLY, init_state=POSITION, exit_md=gap(FIVE_MIN, 13))
    assert exits(rep) == [("REDUCE", "take_profit_partial", 102.0, T0 + H + M5),
                          ("CLOSE", "stop_loss", 95.5, T0 + H + 3 * M5)]


# Hour 2 on 5m: quiet bars around 100, except the missing one that hid the fall to 95 (bar 13), and
# a last bar (23) that closes at 95.5 when it is there.
QUIET = [(100, 100.5, 99.5, 100)]
HIDDEN = market(M5, QUIET * 12 + QUIET + [(100, 100, 95, 99.5)] + QUIET * 9 + [(100, 100.2, 95.4, 95.5)] + QUIET * 12,
                "5m")
HOURLY_FALL = market(H, [(100, 100.5, 99.5, 100), (100, 100.5, 95, 95.5), (95.5, 95.7, 95.3, 95.5)], "1h")


def test_touch_missing_exit_bar_the_main_close_also_checks_the_hours_range():
    """When a sub-bar of the hour was missing while the position was open, the main close also
    evaluates the hour's range: the stop (96) touched inside it fills at the level, at the hour's
    close (the fall was in the missing 5m bar; no present one reaches 96)."""
    hidden = gap(HIDDEN, 13, 23)
    rep = run_replay(touch_cfg(), HOURLY_FALL, init_state=POSITION, exit_md=hidden)
    assert exits(rep) == [("CLOSE", "stop_loss", 96.0, T0 + 2 * H)]


def test_touch_complete_exit_bars_do_not_reevaluate_the_hours_range():
    """With every 5m bar of the hour present, only they decide: bar 13 touches 95 (the stop fills at
    96 on its close time)."""
    rep = run_replay(touch_cfg(), HOURLY_FALL, init_state=POSITION, exit_md=HIDDEN)
    assert exits(rep) == [("CLOSE", "stop_loss", 96.0, T0 + H + 2 * M5)]


def close_cfg(**engine):
    """exit_fill close (the default): exits decided on closes only."""
    trade = CFG["global"]["trade"]
    return config_from_dict({"global": {"trade": trade, "engine": {"interval": "1h", **engine}}})


def test_close_hourly_wicks_through_stop_and_target_do_nothing():
    """On the close, the hour that spans 94..106 but closes at 100 triggers neither; the long runs
    to the end of the data."""
    rep = run_replay(close_cfg(), HOURLY, init_state=POSITION)
    assert exits(rep) == [("CLOSE", "end_of_data", 100.0, T0 + 3 * H)]


def test_close_five_minute_closes_take_the_partial_then_the_stop_at_their_closes():
    """The 5m close at 102 reaches the partial level (filled at 102); the next 5m close, 95.5, is
    beyond the stop (96) and fills there, at 95.5, not at the stop."""
    rep = run_replay(close_cfg(exit_interval="5m"), HOURLY, init_state=POSITION, exit_md=FIVE_MIN)
    assert exits(rep) == [("REDUCE", "take_profit_partial", 102.0, T0 + H + M5),
                          ("CLOSE", "stop_loss", 95.5, T0 + H + 2 * M5)]
    assert rep["total_pnl"] == pytest.approx(7 * 2.0 - 3 * 4.5 - rep["total_fees"])


def test_close_missing_exit_bar_the_present_closes_still_act():
    """The partial on the first 5m close (102) is taken as it closes; the missing 5m bar hides the
    95.5 close, the later closes (100) and the hour's close (100) are above the stop: the rest runs to
    the end of the data."""
    rep = run_replay(close_cfg(exit_interval="5m"), HOURLY, init_state=POSITION, exit_md=gap(FIVE_MIN, 13))
    assert exits(rep) == [("REDUCE", "take_profit_partial", 102.0, T0 + H + M5),
                          ("CLOSE", "end_of_data", 100.0, T0 + 3 * H)]


def test_close_missing_last_exit_bar_the_main_close_is_evaluated():
    """The last 5m bar of the hour is missing (its close, 95.5, beyond the stop): the main close then
    evaluates the hour's own close, 95.5, and the stop fills there at the hour's close."""
    rep = run_replay(close_cfg(exit_interval="5m"), HOURLY_FALL, init_state=POSITION, exit_md=gap(HIDDEN, 13, 23))
    assert exits(rep) == [("CLOSE", "stop_loss", 95.5, T0 + 2 * H)]


def test_close_complete_exit_bars_decide_alone():
    """All 5m bars present: the 95.5 close of the last one fires the stop at the 5m close time (which
    is also the hour's)."""
    rep = run_replay(close_cfg(exit_interval="5m"), HOURLY_FALL, init_state=POSITION, exit_md=HIDDEN)
    assert exits(rep) == [("CLOSE", "stop_loss", 95.5, T0 + 2 * H)]
