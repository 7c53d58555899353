"""Walk-forward optimisation (factory/walk_forward.py) on generated and real candles.

Generated data: five symbols sharing trend legs (the edge a trend follower can take). "half": the
legs stop at mid-span and a driftless walk of the same variance follows; "persistent": legs all the
way. Walk-forward must show the first edge vanish out of sample and keep the second; a planted
look-ahead must be caught; the real 2018 set (../shared/data) must not pass.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from factory.pipeline import RunOptions, run_factory
from factory.walk_forward import LookAheadError, make_folds, run_fold, slice_bars

REPO = Path(__file__).resolve().parents[1]
REAL_1H = REPO.parent / "shared" / "data" / "candles_1h.db"
T0 = 1_700_000_000_000 // 3_600_000 * 3_600_000
SYMBOLS = ("BTC", "ETH", "SOL", "XRP", "ADA")
NBAR = 2400
SPEC = """\
axes:
  - path: trade.sl_atr_mult
    values: [1.0, 2.0, 3.0]
  - path: trade.tp_atr_mult
    values: [2.0, 4.0, 8.0]
  - path: indicators.ema_fast_window
    values: [10, 20]
  - path: trade.trailing_start_atr
    values: [1.0, 3.0]
  # the planted legs are smooth: RSI sits above REEF's limits through them, and REEF (by design)
  # refuses every entry there; the walk-forward machinery is tested on the strategy without it
  - path: trade.enable_reef_filter
    values: [false]
lookback: 200
initial_balance: 10000
"""


def _log_path(rng, nbar: int, edge_until: int, drift: float = 0.004, sigma: float = 0.003) -> np.ndarray:
    """Alternating trend legs of 80-200 bars before ``edge_until``; a driftless walk of the same
    per-bar variance after it."""
    lp = np.zeros(nbar)
    i, sign = 1, 1.0
    while i < nbar:
        leg = int(rng.integers(80, 200))
        for j in range(i, min(nbar, i + leg)):
            step = sign * drift + rng.normal(0, sigma) if j < edge_until else rng.normal(0, np.hypot(drift, sigma))
            lp[j] = lp[j - 1] + step
        i += leg
        sign = -sign
    return lp


def write_planted(path: Path, edge_until: int, seed: int = 7) -> Path:
    """Candles into a real SQLite candles DB (marketdata.write_candles)."""
    from marketdata.candles import write_candles

    rng = np.random.default_rng(seed)
    common = _log_path(rng, NBAR, edge_until)
    rows = []
    for k, sym in enumerate(SYMBOLS):
        c = np.exp(common + _log_path(rng, NBAR, 0, drift=0.0, sigma=0.001) + np.log(10.0 * (k + 1)))
        o = np.concatenate([[c[0]], c[:-1]])
        wig = np.abs(rng.normal(0, 0.0015, NBAR))
        hi, lo, vol = np.maximum(o, c) * (1 + wig), np.minimum(o, c) * (1 - wig), rng.uniform(1e5, 2e5, NBAR)
        rows += [{"symbol": sym, "t": T0 + t * 3_600_000, "o": o[t], "h": hi[t], "l": lo[t], "c": c[t], "v": vol[t]}
                 for t in range(NBAR)]
    write_candles(path, rows, "1h")
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    (root / "spec.yaml").write_text(SPEC)
    return {"root": root, "spec": root / "spec.yaml",
            "half": write_planted(root / "half.db", NBAR // 2), "persistent": write_planted(root / "full.db", NBAR)}


def _factory(db: Path, spec: Path, art: Path, run_id: str, *extra_gates: str, folds: int = 3) -> dict:
    opts = RunOptions(profile="smoke", candles_db=str(db), sweep_spec=str(spec), shortlist=3, replay=1,
                      gates=["walk_forward", "overfitting", *extra_gates], artifacts_dir=str(art), run_id=run_id,
                      no_deploy=True, progress=False, wf_folds=folds)
    out = io.StringIO()
    assert run_factory(opts, Console(file=out, width=200)) == 0, out.getvalue()
    (rd,) = art.glob(f"*/run_{run_id}")
    return {"report": json.loads((rd / "reports" / "report.json").read_text()),
            "selection": json.loads((rd / "reports" / "selection.json").read_text()), "console": out.getvalue()}


# ----- folds -------------------------------------------------------------------------------------
def test_fold_plans_anchored_rolling_and_embargo():
    anchored = make_folds(1200, 200, 3, "anchored", 10)
    assert [(f.is_start, f.is_end, f.oos_start, f.oos_end) for f in anchored] == [
        (200, 440, 450, 700), (200, 690, 700, 950), (200, 940, 950, 1200)]
    assert all(f.data_start == 0 for f in anchored)
    rolling = make_folds(1200, 200, 3, "rolling", 10)
    assert [(f.data_start, f.is_start, f.is_end) for f in rolling] == [(0, 200, 440), (250, 450, 690), (500, 700, 940)]
    for bad, needle in [((1200, 200, 0), "folds"), ((300, 200, 3, "anchored", 30), "no in-sample bars"), ((1200, 200, 3, "sideways"), "scheme")]:
        with pytest.raises(ValueError, match=needle):
            make_folds(*bad)


# ----- look-ahead --------------------------------------------------------------------------------
def _fold_runner(md, funding=None):
    import yaml

    from cpu_replay.api import run_replay
    from factory.shortlist import rank_rows
    from gpu.api import run_sweep
    from gpu.spec import parse_sweep_spec
    from strategy.config import apply_overrides, load_config

    base = load_config(REPO / "config" / "strategy_overrides.yaml.example")
    spec = parse_sweep_spec(yaml.safe_load(SPEC), source="test")

    def run(fold, data, slicer=slice_bars):
        return run_fold(
            fold, data, funding, None, initial_balance=10_000.0, slicer=slicer,
            sweep_fn=lambda m, f, e: run_sweep(base, spec, m, f, backend="cpu", progress=False),
            pick_fn=lambda rows: (rank_rows(rows, "balanced", 1) or [None])[0],
            replay_fn=lambda ov, m, f, e, start: run_replay(apply_overrides(base, ov), m, funding=f, start_ms=start,
                                                            with_trades=False))
    return run


def test_planted_look_ahead_is_caught_and_oos_bars_never_move_the_choice(planted):
    """A slicer that hands the in-sample sweep the out-of-sample bars is refused; and rewriting the
    test window (a planted rally after the embargo) changes the OOS figures but never the fold's
    winner or its in-sample figures."""
    from marketdata.candles import load_market_data

    md = load_market_data(str(planted["half"]), "1h")
    fold = make_folds(md.nbar, 200, 2, "anchored", 24)[0]
    run = _fold_runner(md)

    def leaky(m, f, e, lo, hi):
        return slice_bars(m, f, e, lo, fold.oos_end)

    with pytest.raises(LookAheadError, match="fold 1"):
        run(fold, md, slicer=leaky)
    honest = run(fold, md)
    rally = np.ones_like(md.close)
    rally[:, fold.is_end:] = np.exp(np.cumsum(np.full(md.nbar - fold.is_end, 0.01)))
    planted_md = replace(md, open=md.open * rally, high=md.high * rally, low=md.low * rally, close=md.close * rally)
    tampered = run(fold, planted_md)
    assert tampered["winner_config_id"] == honest["winner_config_id"]
    assert tampered["in_sample"] == honest["in_sample"]
    assert tampered["out_of_sample"] != honest["out_of_sample"]


# ----- both directions ---------------------------------------------------------------------------
def test_edge_in_first_half_vanishes_out_of_sample(planted, tmp_path):
    res = _factory(planted["half"], planted["spec"], tmp_path / "art", "half")
    wf = res["report"]["walk_forward"]
    assert len(wf["folds"]) == 3 and wf["passed"] is False
    assert wf["wf_median_oos_daily_return"] <= 0
    later = [f for f in wf["folds"] if f["oos_start_ms"] >= T0 + NBAR // 2 * 3_600_000]
    assert later and all(f["out_of_sample"]["return"] < f["in_sample"]["return"] for f in later)
    assert wf["stitched_oos_equity"][-1][1] < 10_000.0
    item = res["report"]["items"][0]
    assert any(g.startswith("walk_forward:") for g in item["gate_failures"])
    assert res["selection"]["selected"] is None  # a gate failed: never "selected"
    assert "best candidate (not deployable" in res["console"]


def test_persistent_edge_survives_walk_forward_and_pbo_is_low(planted, tmp_path):
    res = _factory(planted["persistent"], planted["spec"], tmp_path / "art", "full")
    wf = res["report"]["walk_forward"]
    assert wf["passed"] is True and wf["wf_median_oos_daily_return"] > 0
    assert all(f["out_of_sample"]["return"] > 0 for f in wf["folds"])
    assert wf["efficiency"] > 0 and wf["stitched_oos_equity"][-1][1] > 10_000.0
    assert res["report"]["overfitting"]["pbo"] < 0.3
    assert res["selection"]["overfitting"]["pbo"] == res["report"]["overfitting"]["pbo"]


@pytest.mark.skipif(not REAL_1H.is_file(), reason="../shared/data/candles_1h.db absent (a fresh clone has no ../shared)")
def test_real_2018_data_has_no_out_of_sample_edge(tmp_path):
    """The smoke sweep's winner on real 2018 candles has no out-of-sample edge, so nothing it
    shortlists is deployable. (The PBO is reported, not pinned: it is an empirical property of the
    rules on this data -- 0.36 with the reference's rules, above 0.5 with the earlier subset.)"""
    res = _factory(REAL_1H, REPO / "config" / "sweeps" / "smoke.yaml", tmp_path / "art", "real", folds=2)
    wf = res["report"]["walk_forward"]
    assert wf["passed"] is False and wf["wf_median_oos_daily_return"] <= 0
    assert 0.0 <= res["report"]["overfitting"]["pbo"] <= 1.0
    assert all(any("walk_forward" in g for g in item["gate_failures"]) for item in res["report"]["items"])
    assert res["report"]["data"]["synthetic"] is False and "SYNTHETIC" not in res["console"]


def test_too_little_data_for_the_folds_fails_the_gate_with_a_reason(planted, tmp_path):
    res = _factory(planted["persistent"], planted["spec"], tmp_path / "art", "short", folds=100)
    wf = res["report"]["walk_forward"]
    assert wf["folds"] == [] and wf["passed"] is False and "use fewer folds" in wf["error"]
    assert any("walk_forward: not run" in g for g in res["report"]["items"][0]["gate_failures"])
