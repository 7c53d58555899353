"""The canonical engine on real candles: determinism, accounting, gaps, daemon path == replay."""

from __future__ import annotations

import numpy as np
import pytest

from cpu_replay.api import run_replay
from cpu_replay.engine import Engine
from marketdata.candles import load_market_data
from marketdata.funding import funding_matrix
from strategy.config import config_from_dict
from strategy.layout import FL_ACTION, FL_SYM, FL_T, NFILL

# A config that trades often enough on three weeks of 5m candles to exercise every path.
ACTIVE = {
    "global": {
        "trade": {"entry_min_confidence": "low", "reentry_cooldown_minutes": 30, "add_cooldown_minutes": 30},
        "thresholds": {"entry": {"min_adx": 18.0, "macd_hist_entry_mode": "sign"}},
        "filters": {"enable_ranging_filter": False, "require_adx_rising": False},
        "engine": {"interval": "5m"},
    }
}


@pytest.fixture(scope="module")
def md5(shared_data):
    return load_market_data(str(shared_data / "candles_5m.db"), "5m")


@pytest.fixture(scope="module")
def cfg():
    return config_from_dict(ACTIVE)


@pytest.fixture(scope="module")
def report(cfg, md5):
    return run_replay(cfg, md5, with_trades=True)


def test_replay_trades_and_is_deterministic(cfg, md5, report):
    assert report["total_trades"] > 20
    again = run_replay(cfg, md5, with_trades=False)
    assert again["trace_checksum"] == report["trace_checksum"]
    assert again["total_pnl"] == report["total_pnl"]


def test_accounting_invariant(report):
    fills = report["fills"]
    realised = sum(f["pnl"] for f in fills)
    fees = sum(f["fee"] for f in fills)
    expected = report["initial_balance"] + realised - fees - report["total_funding"]
    assert report["final_balance"] == pytest.approx(expected, rel=1e-9)
    assert fees == pytest.approx(report["total_fees"], rel=1e-9)
    assert sum(t["pnl"] for t in report["trades"]) == pytest.approx(report["total_pnl"], rel=1e-9, abs=1e-9)
    assert report["total_pnl"] == pytest.approx(report["final_balance"] - report["initial_balance"], abs=1e-9)
    wins = sum(1 for t in report["trades"] if t["pnl"] > 0)
    assert report["win_rate"] == pytest.approx(wins / report["total_trades"])


def test_no_entry_on_a_missing_bar_or_after_one(report, md5):
    index = {s: i for i, s in enumerate(md5.symbols)}
    times = {int(t): b for b, t in enumerate(md5.times)}
    gaps = (~md5.valid).sum()
    assert gaps > 0, "the real 5m data has gaps (ADA)"
    for f in report["fills"]:
        if f["action"] not in ("OPEN", "ADD"):
            continue
        b = times[f["t_ms"] - md5.interval_ms]
        s = index[f["symbol"]]
        assert md5.valid[s, b] and md5.valid[s, b - 1]


def test_symbol_order_does_not_change_trades(cfg, report, shared_data):
    shuffled = load_market_data(str(shared_data / "candles_5m.db"), "5m", symbols=["NXT", "ADA", "LTC", "ETH", "ETC", "DASH"])
    other = run_replay(cfg, shuffled, with_trades=True)
    assert other["trades"] == report["trades"]
    assert other["trace_checksum"] == report["trace_checksum"]


def test_step_by_step_engine_equals_replay(cfg, md5, report):
    """The daemon's path (one bar at a time through Engine.step) makes the replay's fills."""
    engine = Engine(cfg.params_matrix(md5.symbols), cfg.windows(), md5.symbols, md5.interval_ms, 10_000.0)
    rows = []
    for b in range(len(md5.times)):
        prev = md5.valid[:, b - 1] if b else np.zeros(len(md5.symbols), bool)
        rows.append(engine.step(int(md5.times[b]), md5.open[:, b], md5.high[:, b], md5.low[:, b],
                                md5.close[:, b], md5.volume[:, b], md5.valid[:, b], prev))
    stepped = np.concatenate(rows) if rows else np.zeros((0, NFILL))
    replay_fills = report["fills"]
    opens_closes = [(int(r[FL_T]), md5.symbols[int(r[FL_SYM])], int(r[FL_ACTION])) for r in stepped]
    codes = {"OPEN": 1, "ADD": 2, "REDUCE": 3, "CLOSE": 4}
    expected = [(f["t_ms"], f["symbol"], codes[f["action"]]) for f in replay_fills if f["reason"] != "end_of_data"]
    assert opens_closes == expected


def test_slippage_costs_money(cfg, md5, report):
    worse = run_replay(cfg, md5, slippage_bps=30.0, with_trades=False)
    assert worse["slippage_bps"] == 30.0
    assert worse["total_pnl"] < report["total_pnl"]


def test_window_trades_only_inside_it(cfg, md5):
    start, end = int(md5.times[2000]), int(md5.times[4000])
    rep = run_replay(cfg, md5, start_ms=start, end_ms=end, with_trades=True)
    assert rep["start_ms"] == start
    assert all(start < f["t_ms"] <= end for f in rep["fills"])


def test_funding_is_charged_on_hyperliquid_btc(shared_data):
    hl = shared_data / "hyperliquid"
    md = load_market_data(str(hl / "candles_1h.db"), "1h")
    funding = funding_matrix(str(hl / "funding_rates.db"), md)
    assert np.count_nonzero(funding) > 1000
    cfg = config_from_dict({"global": {**ACTIVE["global"], "engine": {"interval": "1h"}}})
    rep = run_replay(cfg, md, funding=funding, with_trades=True)
    assert rep["total_trades"] > 5
    assert rep["total_funding"] != 0.0
    assert sum(t["funding"] for t in rep["trades"]) == pytest.approx(rep["total_funding"], rel=1e-9)
    no_funding = run_replay(cfg, md, with_trades=True)
    assert no_funding["total_funding"] == 0.0
    # funding moves equity (hence later sizes) but never a decision's timing
    timing = [(t["entry_time_ms"], t["exit_time_ms"], t["exit_reason"]) for t in rep["trades"]]
    assert timing == [(t["entry_time_ms"], t["exit_time_ms"], t["exit_reason"]) for t in no_funding["trades"]]


def test_init_state_continues_an_open_position(cfg, md5):
    close = float(md5.close[md5.symbols.index("ETH"), 10])
    state = {"version": 1, "balance": 5000.0, "positions": [
        {"symbol": "ETH", "side": "LONG", "size": 100.0 / close, "entry_price": close,
         "entry_atr": close * 0.004, "leverage": 2.0, "confidence": "medium", "open_time_ms": int(md5.times[10])}]}
    rep = run_replay(cfg, md5, init_state=state, with_trades=True)
    assert rep["initial_balance"] == 5000.0
    first_eth_close = next(f for f in rep["fills"] if f["symbol"] == "ETH")
    assert first_eth_close["action"] != "OPEN", "the seeded position is carried, not reopened"


# --- --init-state validation: every bad input is one InitStateError line -------------------------

GOOD_POSITION = {"symbol": "ETH", "side": "LONG", "size": 1.0, "entry_price": 100.0, "entry_atr": 1.0,
                 "leverage": 2.0, "open_time_ms": 1_700_000_000_000}


def _state(**changes):
    state = {"version": 1, "balance": 1000.0, "positions": [dict(GOOD_POSITION)]}
    for key, value in changes.items():
        if key.startswith("p_"):
            if value is _DROP:
                state["positions"][0].pop(key[2:])
            else:
                state["positions"][0][key[2:]] = value
        elif value is _DROP:
            state.pop(key)
        else:
            state[key] = value
    return state


_DROP = object()


@pytest.mark.parametrize("changes, expect", [
    ({"positions": [GOOD_POSITION, GOOD_POSITION]}, "position ETH appears more than once"),
    ({"p_side": _DROP}, "side must be LONG/BUY/1 or SHORT/SELL/-1 (got missing)"),
    ({"p_side": "FLAT"}, "side must be LONG/BUY/1 or SHORT/SELL/-1"),
    ({"p_side": 0}, "side must be LONG/BUY/1"),
    ({"p_open_time_ms": _DROP}, "open_time_ms is required"),
    ({"p_leverage": 0}, "leverage must be >= 1 (got 0)"),
    ({"p_leverage": 0.5}, "leverage must be >= 1"),
    ({"p_size": "abc"}, "size must be a finite number"),
    ({"p_entry_atr": None}, "entry_atr is required"),
    ({"p_adds_count": 1.5}, "adds_count must be a whole number"),
    ({"p_confidence": "huge"}, "confidence must be low, medium or high"),
    ({"positions": "ETH"}, "positions must be a list"),
    ({"positions": None}, "positions must be a list (got null)"),
    ({"positions": _DROP}, "positions must be a list (got missing)"),
    ({"positions": [None]}, "positions[0] must be an object"),
    ({"positions": [{**GOOD_POSITION, "symbol": 7}]}, "positions[0].symbol must be a non-empty string"),
    ({"balance": True}, "balance must be a positive finite number (got true)"),
    ({"balance": float("nan")}, "balance must be a positive finite number"),
    ({"balance": -5}, "balance must be a positive finite number"),
    ({"version": 2}, "expected version 1"),
    ({"version": True}, "expected version 1"),
])
def test_bad_init_state_is_one_line(tmp_path, changes, expect):
    import json

    from cpu_replay.state_io import InitStateError, load_init_state

    path = tmp_path / "state.json"
    path.write_text(json.dumps(_state(**changes)))
    with pytest.raises(InitStateError) as info:
        load_init_state(path)
    assert expect in str(info.value) and "\n" not in str(info.value)


def test_init_state_dict_is_checked_by_run_replay_too(cfg, md5):
    """A caller passing a dict gets the same one-line error, never a ZeroDivisionError."""
    from cpu_replay.state_io import InitStateError

    with pytest.raises(InitStateError, match="leverage must be >= 1"):
        run_replay(cfg, md5, init_state=_state(p_leverage=0))


def test_init_state_symbol_matching_and_sides():
    from cpu_replay.engine import EngineState
    from cpu_replay.state_io import InitStateError, apply_init_state
    from strategy.layout import A_MARGIN_USED, A_OPEN_COUNT, POS_OPEN_T, POS_SIDE

    symbols = ["kPEPE", "ETH", "BTC"]
    cfg = config_from_dict({})
    params = cfg.params_matrix(symbols)
    wv = np.ascontiguousarray(cfg.windows(), dtype=np.int64)
    positions = [{**GOOD_POSITION, "symbol": "kPEPE", "side": "SELL"},
                 {**GOOD_POSITION, "symbol": "eth", "side": -1},
                 {**GOOD_POSITION, "symbol": "BTC", "side": "buy", "open_time_ms": 5}]
    state = EngineState.fresh(3, wv, 1000.0)
    apply_init_state(state, {"version": 1, "balance": 1000.0, "positions": positions}, symbols, params)
    assert list(state.pos[:, POS_SIDE]) == [-1.0, -1.0, 1.0]
    assert state.pos[2, POS_OPEN_T] == 5.0
    assert state.acct[A_OPEN_COUNT] == 3.0 and state.acct[A_MARGIN_USED] == pytest.approx(3 * 50.0)
    # "kpepe" has one case-insensitive match; two spellings of one symbol are refused
    state = EngineState.fresh(3, wv, 1000.0)
    apply_init_state(state, {"version": 1, "balance": 1000.0,
                             "positions": [{**GOOD_POSITION, "symbol": "kpepe"}]}, symbols, params)
    assert state.pos[0, POS_SIDE] == 1.0
    with pytest.raises(InitStateError, match="more than one position maps to symbol ETH"):
        apply_init_state(EngineState.fresh(3, wv, 1000.0), {"version": 1, "balance": 1000.0, "positions": [
            GOOD_POSITION, {**GOOD_POSITION, "symbol": "eth"}]}, symbols, params)
    with pytest.raises(InitStateError, match="'DOGE' is not in the replayed symbols"):
        apply_init_state(EngineState.fresh(3, wv, 1000.0), {"version": 1, "balance": 1000.0, "positions": [
            {**GOOD_POSITION, "symbol": "DOGE"}]}, symbols, params)
