"""Sweep specs, grids, constraints and indicator sharing (no kernel compile: fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpu.grid import expand_grid
from gpu.precompute import precompute
from gpu.spec import SweepSpecError, load_sweep_spec, parse_sweep_spec
from strategy.params import W_EMA_FAST, WINDOW_SPECS

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_unknown_path_is_one_line_naming_file_and_axis(tmp_path):
    p = write(tmp_path, """
axes:
  - {path: trade.sl_atr_mult, values: [1.5]}
  - {path: trade.tp_atr_mult, values: [3.0]}
  - {path: trade.allocation_pct, values: [0.1]}
  - {path: trade.sl_atr_mul, values: [1.5, 2.0]}
""")
    with pytest.raises(SweepSpecError) as info:
        load_sweep_spec(p, None)
    assert str(info.value) == (f"gpu.spec.SweepSpecError: {p}: axes[3].path: "
                               "unknown config path 'trade.sl_atr_mul'")


@pytest.mark.parametrize(("axes", "fragment"), [
    ("[{path: trade.max_open_positions, values: [ten]}]", "axes[0].values[0]"),
    ("[{path: indicators.ema_fast_window, values: [0]}]", "axes[0].values[0]"),
    ("[{path: trade.entry_min_confidence, values: [huge]}]", "axes[0].values[0]"),
    ("[{path: trade.sl_atr_mult, range: {start: 3, stop: 1, step: 1}}]", "axes[0].range.stop"),
    ("[{path: trade.sl_atr_mult, range: {start: 1, stop: 3, step: 0}}]", "axes[0].range.step"),
    ("[{path: trade.sl_atr_mult, values: [1.0], range: {start: 1, stop: 2, step: 1}}]", "exactly one"),
    ("[{path: trade.sl_atr_mult, values: [1.0, 1.0]}]", "duplicate values"),
    ("[{path: engine.interval, values: [1h]}]", "axes[0].path"),
])
def test_bad_values_are_rejected_before_anything_runs(tmp_path, axes, fragment):
    p = write(tmp_path, f"axes: {axes}\n")
    with pytest.raises(SweepSpecError) as info:
        load_sweep_spec(p, None)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_constraints_reject_python_and_unknown_names(tmp_path):
    base = "axes: [{path: trade.sl_atr_mult, values: [1.0, 2.0]}]\nconstraints: "
    for bad, frag in (('["__import__(\'os\')"]', "Call is not allowed"),
                      ('["sl_atr_mult < nope"]', "'nope'"),
                      ('["sl_atr_mult <"]', "cannot parse")):
        with pytest.raises(SweepSpecError) as info:
            load_sweep_spec(write(tmp_path, base + bad), None)
        assert frag in str(info.value) and "constraints[0]" in str(info.value)


def test_smoke_spec_grid_is_288_and_matches_reference():
    spec = load_sweep_spec(REPO / "config" / "sweeps" / "smoke.yaml", None)
    assert len(expand_grid(spec)) == 288
    assert spec.lookback == 200 and spec.initial_balance == 10_000.0


def test_full_spec_has_at_least_20_axes():
    spec = load_sweep_spec(REPO / "config" / "sweeps" / "full.yaml", None)
    assert len(spec.axes) >= 20
    assert spec.grid_size_unconstrained > 10**12


def test_grid_size_and_constraints():
    spec = parse_sweep_spec({
        "axes": [
            {"path": "indicators.ema_fast_window", "range": {"start": 8, "stop": 20, "step": 2}},
            {"path": "indicators.ema_slow_window", "values": [10, 14, 30]},
            {"path": "global.trade.sl_atr_mult", "range": {"start": 1.0, "stop": 2.0, "step": 0.5}},
            {"path": "trade.entry_min_confidence", "values": ["low", "medium", "high"]},
        ],
        "constraints": ["ema_fast_window < ema_slow_window",
                        "trade.sl_atr_mult >= 1.5 or entry_min_confidence == 'high'"],
    })
    assert spec.axes[0].values == (8, 10, 12, 14, 16, 18, 20)
    assert spec.axes[2].values == (1.0, 1.5, 2.0)
    grid = expand_grid(spec)
    # fast < slow: slow=10 -> {8}, 14 -> {8,10,12}, 30 -> all 7  => 11 pairs
    # sl/conf: 3x3=9 minus (sl=1.0 and conf in low/medium) = 7
    assert len(grid) == 11 * 7
    for i in range(len(grid)):
        ov = grid.overrides(i)
        assert ov["indicators.ema_fast_window"] < ov["indicators.ema_slow_window"]
        assert ov["trade.sl_atr_mult"] >= 1.5 or ov["trade.entry_min_confidence"] == "high"


def _tiny_market(nsym=3, nbar=300):
    from marketdata.candles import MarketData

    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (nsym, nbar)), axis=1))
    valid = np.ones((nsym, nbar), dtype=bool)
    valid[1, 40:43] = False  # a real gap: indicators skip it, the pool holds NaN there
    arrays = [np.where(valid, a, np.nan) for a in (close, close * 1.01, close * 0.99, close, close * 0 + 5.0)]
    return MarketData("1h", 3_600_000, ["AAA", "BBB", "CCC"][:nsym],
                      np.arange(nbar, dtype=np.int64) * 3_600_000, *arrays, valid)


def test_precompute_computes_each_distinct_window_once():
    md = _tiny_market()
    base = np.array([w for _, w in WINDOW_SPECS], dtype=np.int64)
    cand = np.tile(base, (10_000, 1))
    cand[:, W_EMA_FAST] = np.array([5, 8, 10, 12, 15])[np.arange(10_000) % 5]
    pre = precompute(md, cand)
    assert pre.computed["ema"] == 5 + 2  # five fast windows + slow 50 + macro 200
    assert pre.computed["atr"] == 1 and pre.computed["macd"] == 1
    # pool rows: 5 candles + 7 EMA + ADX(4) + ATR + RSI + Bollinger(3) + bb avg + MACD(2) + stoch(2) + 2 vol
    # + the ATR mean (AVE) + the slow-EMA slope + the bar count
    assert pre.pool.shape[0] == 5 + 7 + 4 + 1 + 1 + 3 + 1 + 2 + 2 + 1 + 1 + 1 + 1 + 1
    # candidates sharing a window share the pool row; different windows differ
    assert pre.fidx[0, 5] == pre.fidx[5, 5] and pre.fidx[0, 5] != pre.fidx[1, 5]
    assert np.isnan(pre.pool[pre.fidx[0, 5], 1, 40:43]).all()


def test_precompute_matches_compute_features_bitwise():
    import strategy.indicators as ind
    from strategy.features import NF

    md = _tiny_market()
    wv = np.array([w for _, w in WINDOW_SPECS], dtype=np.int64)
    pre = precompute(md, wv[None, :])
    for s in range(md.nsym):
        bars = np.flatnonzero(md.valid[s])
        ref = ind.compute_features(*[np.ascontiguousarray(a[s, bars]) for a in
                                     (md.open, md.high, md.low, md.close, md.volume)], wv)
        got = np.stack([pre.pool[pre.fidx[0, f], s, bars] for f in range(NF)], axis=1)
        np.testing.assert_array_equal(got, ref)


def test_unshared_precompute_costs_one_set_per_candidate():
    md = _tiny_market(nbar=120)
    wv = np.tile(np.array([w for _, w in WINDOW_SPECS], dtype=np.int64), (4, 1))
    assert precompute(md, wv, share=False).computed["rsi"] == 4
    assert precompute(md, wv, share=True).computed["rsi"] == 1
