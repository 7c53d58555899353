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


def test_touch_missing_exit_bar_falls_back_to_the_hourly_range():
    """A gap in the 5m data must not hide the stop: the whole hour then uses its own range."""
    from dataclasses import replace

    cfg = config_from_dict({"global": {**CFG["global"], "engine": {"interval": "1h", "exit_interval": "5m", "exit_fill": "touch"}}})
    valid = FIVE_MIN.valid.copy()
    valid[0, 13] = False  # the 5m bar that falls through the stop is missing
    gappy = replace(FIVE_MIN, valid=valid)
    rep = run_replay(cfg, HOURLY, init_state=POSITION, exit_md=gappy)
    assert exits(rep) == [("CLOSE", "stop_loss", 96.0, T0 + 2 * H)]


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


def test_close_missing_exit_bar_falls_back_to_the_hourly_close():
    from dataclasses import replace

    valid = FIVE_MIN.valid.copy()
    valid[0, 13] = False
    rep = run_replay(close_cfg(exit_interval="5m"), HOURLY, init_state=POSITION,
                     exit_md=replace(FIVE_MIN, valid=valid))
    assert exits(rep) == [("CLOSE", "end_of_data", 100.0, T0 + 3 * H)]
