"""Kernel edge cases: zero sizing means no order, and no fill is ever recorded with size 0."""

from __future__ import annotations

import numpy as np
import pytest

from cpu_replay.api import run_replay
from cpu_replay.engine import Engine
from cpu_replay.state_io import apply_init_state
from marketdata.candles import load_market_data
from strategy.config import config_from_dict
from strategy.layout import FL_SIZE, POS_SIZE, POS_TP1_DONE
from strategy.params import P_TP_PARTIAL_PCT

ACTIVE = {
    "trade": {"entry_min_confidence": "low", "reentry_cooldown_minutes": 30, "add_cooldown_minutes": 30,
              "bump_to_min_notional": True, "min_notional_usd": 10.0},
    "thresholds": {"entry": {"min_adx": 18.0, "macd_hist_entry_mode": "sign"}},
    "filters": {"enable_ranging_filter": False, "require_adx_rising": False},
    "engine": {"interval": "5m"},
}


def _cfg(**trade):
    return config_from_dict({"global": {**ACTIVE, "trade": {**ACTIVE["trade"], **trade}}})


@pytest.fixture(scope="module")
def md5(shared_data):
    return load_market_data(str(shared_data / "candles_5m.db"), "5m")


def _actions(rep):
    out: dict[str, int] = {}
    for f in rep["fills"]:
        out[f["action"]] = out.get(f["action"], 0) + 1
    return out


def test_baseline_opens_and_adds(md5):
    acts = _actions(run_replay(_cfg(), md5, with_trades=True))
    assert acts.get("OPEN", 0) > 10 and acts.get("ADD", 0) > 0


@pytest.mark.parametrize("key", ["size_multiplier", "allocation_pct"])
def test_zero_margin_opens_nothing_even_with_bump_to_min_notional(md5, key):
    rep = run_replay(_cfg(**{key: 0.0}), md5, with_trades=True)
    assert rep["total_trades"] == 0 and rep["fills"] == []


def test_zero_add_fraction_adds_nothing(md5):
    acts = _actions(run_replay(_cfg(add_fraction_of_base_margin=0.0), md5, with_trades=True))
    assert acts.get("OPEN", 0) > 10 and acts.get("ADD", 0) == 0


H = 3_600_000
T0 = 1_700_000_000_000 // H * H


def test_zero_partial_fraction_records_no_zero_size_fill():
    """Even if a params row carries tp_partial_pct 0 (the schema refuses it), no size-0 REDUCE."""
    cfg = config_from_dict({"global": {"trade": {"slippage_bps": 0.0, "tp_partial_atr_mult": 1.0,
                                                 "sl_atr_mult": 2.0, "tp_atr_mult": 6.0,
                                                 "trailing_start_atr": 50.0}}})
    params = cfg.params_matrix(["ETH"])
    params[:, P_TP_PARTIAL_PCT] = 0.0
    engine = Engine(params, cfg.windows(), ["ETH"], H, 10_000.0)
    state = {"version": 1, "balance": 10_000.0, "positions": [
        {"symbol": "ETH", "side": "LONG", "size": 10.0, "entry_price": 100.0, "entry_atr": 2.0,
         "leverage": 2.0, "open_time_ms": T0 - H}]}
    apply_init_state(engine.state, state, ["ETH"], engine.params)
    one = np.ones(1)
    rows = [engine.step(T0, one * 100, one * 100.5, one * 99.5, one * 100, one * 1e6, [1], [0]),
            engine.step(T0 + H, one * 100, one * 103, one * 99.5, one * 102.5, one * 1e6, [1], [1])]
    fills = np.concatenate(rows)
    assert len(fills) == 0, fills[:, FL_SIZE]
    assert engine.state.pos[0, POS_SIZE] == 10.0 and engine.state.pos[0, POS_TP1_DONE] == 1.0


def test_engine_step_buffer_holds_a_bar_that_closes_hundreds_of_positions():
    """300 stops on one bar: more fills than the old fixed 256-row buffer, and no raise after the
    kernel already moved the state."""
    n = 300
    symbols = [f"S{i}" for i in range(n)]
    cfg = config_from_dict({"global": {"trade": {"slippage_bps": 0.0}}})
    engine = Engine(cfg.params_matrix(symbols), cfg.windows(), symbols, H, 1e9)
    positions = [{"symbol": s, "side": "LONG", "size": 1.0, "entry_price": 100.0, "entry_atr": 2.0,
                  "open_time_ms": T0 - H} for s in symbols]
    apply_init_state(engine.state, {"version": 1, "balance": 1e9, "positions": positions}, symbols, engine.params)
    ones = np.ones(n)
    fills = engine.step(T0, ones * 100, ones * 100.5, ones * 90, ones * 92, ones * 1e6, ones, np.zeros(n))
    assert len(fills) == n and (fills[:, FL_SIZE] == 1.0).all()
    assert (engine.state.pos[:, POS_SIZE] == 0.0).all()
