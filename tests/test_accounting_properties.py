"""Accounting invariants of the canonical engine over random markets and random configs (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpu_replay.api import run_replay
from marketdata.candles import MarketData
from strategy.config import config_from_dict

H = 3_600_000


def random_market(seed: int, nsym: int, nbar: int, gap_rate: float, price_scale: float) -> MarketData:
    """Trending random walks with gaps; prices anywhere from 1e-5 to 1e4 (no fixed decimals)."""
    rng = np.random.default_rng(seed)
    drift = 0.002 * np.sin(np.arange(nbar) / rng.uniform(20, 80) + rng.uniform(0, 6, (nsym, 1)))
    logp = np.cumsum(drift + 0.01 * rng.standard_normal((nsym, nbar)), axis=1)
    close = price_scale * np.exp(logp) * rng.uniform(0.5, 2.0, (nsym, 1))
    open_ = np.concatenate([close[:, :1], close[:, :-1]], axis=1)
    wiggle = np.exp(np.abs(0.006 * rng.standard_normal((nsym, nbar))))
    high, low = np.maximum(open_, close) * wiggle, np.minimum(open_, close) / wiggle
    volume = rng.lognormal(10, 0.6, (nsym, nbar))
    valid = rng.random((nsym, nbar)) >= gap_rate
    for arr in (open_, high, low, close, volume):
        arr[~valid] = np.nan
    symbols = ["BTC"] + [f"A{i}" for i in range(1, nsym)]
    times = 1_600_000_000_000 + H * np.arange(nbar, dtype=np.int64)
    return MarketData("1h", H, symbols, times, open_, high, low, close, volume, valid)


configs = st.fixed_dictionaries({
    "sl_atr_mult": st.floats(0.5, 4.0), "tp_atr_mult": st.floats(1.0, 10.0),
    "allocation_pct": st.floats(0.01, 0.3), "leverage": st.floats(1.0, 10.0),
    "slippage_bps": st.floats(0.0, 50.0), "taker_fee_bps": st.floats(0.0, 10.0),
    "enable_partial_tp": st.booleans(), "enable_pyramiding": st.booleans(),
    "enable_breakeven_stop": st.booleans(), "reverse_entry_signal": st.booleans(),
    "max_open_positions": st.integers(1, 6),
})


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), trade=configs, gap_rate=st.sampled_from([0.0, 0.02, 0.1]),
       price_scale=st.sampled_from([3e-5, 1.0, 5e3]), funding_rate=st.floats(-1e-4, 1e-4))
def test_balance_is_initial_plus_realised_minus_fees_minus_funding(seed, trade, gap_rate, price_scale, funding_rate):
    md = random_market(seed, nsym=4, nbar=400, gap_rate=gap_rate, price_scale=price_scale)
    cfg = config_from_dict({"global": {
        "trade": {**trade, "min_notional_usd": 1.0, "reentry_cooldown_minutes": 0, "max_total_margin_pct": 1.0},
        "thresholds": {"entry": {"min_adx": 10.0, "macd_hist_entry_mode": "none"}},
        "filters": {"enable_ranging_filter": False, "require_adx_rising": False, "use_stoch_rsi_filter": False}}})
    funding = np.full(md.close.shape, funding_rate)  # also charged on bars a symbol did not print
    rep = run_replay(cfg, md, funding=funding, with_trades=True)
    assert rep["total_trades"] > 0, "the random market must exercise trading, not an idle account"

    realised = sum(f["pnl"] for f in rep["fills"])
    fees = sum(f["fee"] for f in rep["fills"])
    expected = rep["initial_balance"] + realised - fees - rep["total_funding"]
    assert math.isclose(rep["final_balance"], expected, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(sum(t["pnl"] for t in rep["trades"]), rep["total_pnl"], rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(sum(t["funding"] for t in rep["trades"]), rep["total_funding"], rel_tol=1e-9, abs_tol=1e-12)
    assert all(math.isfinite(x) for x in (rep["final_balance"], rep["max_drawdown_pct"], rep["sharpe"]))
    assert 0.0 <= rep["win_rate"] <= 1.0 and 0.0 <= rep["max_drawdown_pct"]
    assert all(math.isfinite(f["balance"]) for f in rep["fills"])

    times = {int(t): b for b, t in enumerate(md.times)}
    index = {s: i for i, s in enumerate(md.symbols)}
    open_count = 0
    for f in rep["fills"]:
        b, s = times[f["t_ms"] - H], index[f["symbol"]]
        if f["action"] in ("OPEN", "ADD"):
            assert md.valid[s, b] and md.valid[s, b - 1], "entry on a missing bar or right after one"
        open_count += {"OPEN": 1, "CLOSE": -1}.get(f["action"], 0)
        assert 0 <= open_count <= trade["max_open_positions"]
    assert open_count == 0, "everything is closed at the end of the data"
