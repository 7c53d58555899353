"""The issue's main check: on real candles, for every candidate of a ~50-combo grid,
cpu backend == cudasim backend (float64, bitwise-level) == canonical cpu_replay.run_replay.
Also trace mode (trade lists) and the CLI end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not (DATA / "candles_1h.db").exists():
    pytest.skip(f"../shared/data absent: {DATA} (real candles needed)", allow_module_level=True)

from gpu.api import run_sweep, trace_candidates  # noqa: E402
from gpu.spec import parse_sweep_spec  # noqa: E402
from marketdata.candles import load_market_data  # noqa: E402
from strategy.config import apply_overrides, config_from_dict  # noqa: E402

GRID = {
    "axes": [
        {"path": "trade.sl_atr_mult", "values": [1.5, 2.5, 3.5]},
        {"path": "trade.tp_atr_mult", "values": [3.0, 6.0]},
        {"path": "indicators.ema_fast_window", "values": [8, 12, 20]},
        {"path": "thresholds.entry.min_adx", "values": [15, 22]},
        {"path": "engine.exit_fill", "values": ["close", "touch"]},
    ],
    "lookback": 60,
    "initial_balance": 10_000,
}
SIM_BARS = 240
CUDASIM_SCRIPT = r"""
import json, sys
from dataclasses import replace
from gpu.api import run_sweep
from gpu.spec import parse_sweep_spec
from marketdata.candles import load_market_data
from strategy.config import config_from_dict
md = load_market_data(sys.argv[1], "1h")
n = int(sys.argv[2])
md = replace(md, times=md.times[:n], open=md.open[:, :n], high=md.high[:, :n], low=md.low[:, :n],
             close=md.close[:, :n], volume=md.volume[:, :n], valid=md.valid[:, :n])
spec = parse_sweep_spec(json.loads(sys.argv[3]))
res = run_sweep(config_from_dict({}), spec, md, None, backend="cudasim", progress=False)
print(json.dumps(res.rows))
"""


@pytest.fixture(scope="module")
def md():
    return load_market_data(str(DATA / "candles_1h.db"), "1h")


@pytest.fixture(scope="module")
def base():
    return config_from_dict({})


@pytest.fixture(scope="module")
def cpu_rows(md, base):
    res = run_sweep(base, parse_sweep_spec(GRID), md, None, backend="cpu", progress=False)
    assert res.backend == "cpu" and res.candidates_evaluated == 72
    return res.rows


def _key(ov):
    return json.dumps(ov, sort_keys=True)


def test_cpu_sweep_equals_canonical_replay_for_every_candidate(md, base, cpu_rows):
    import cpu_replay.api as cpu_replay
    initial = float(GRID["initial_balance"])
    tol = max(1e-6 * initial, 1e-9)
    traded = 0
    for row in cpu_rows:
        cfg = apply_overrides(base, row["overrides"])
        assert row["config_id"] == cfg.config_id
        rep = cpu_replay.run_replay(cfg, md, initial_balance=initial, start_ms=int(md.times[GRID["lookback"]]),
                                    with_trades=False)
        assert row["total_trades"] == rep["total_trades"], row["overrides"]
        for f in ("total_pnl", "total_fees", "final_balance"):
            assert abs(row[f] - rep[f]) <= tol, (f, row["overrides"])
        for f in ("max_drawdown_pct", "win_rate", "profit_factor"):
            assert row[f] == pytest.approx(rep[f], rel=1e-9, abs=1e-12), (f, row["overrides"])
        traded += row["total_trades"] > 0
    assert traded >= 54  # the grid exercises real trading, not 72 idle candidates


def test_trace_mode_trade_lists_equal_replay(md, base, cpu_rows):
    import cpu_replay.api as cpu_replay
    chosen = [r["overrides"] for r in cpu_rows[:3]]
    traces = trace_candidates(base, chosen, md, None, initial_balance=10_000.0, backend="cpu",
                              lookback=GRID["lookback"])
    for ov, trades, row in zip(chosen, traces, cpu_rows[:3], strict=True):
        rep = cpu_replay.run_replay(apply_overrides(base, ov), md, start_ms=int(md.times[GRID["lookback"]]))
        assert len(trades) == row["total_trades"] == len(rep["trades"]) > 0
        for mine, theirs in zip(trades, rep["trades"], strict=True):
            assert mine == {k: theirs[k] for k in mine}
        assert sum(t["pnl"] for t in trades) == pytest.approx(row["total_pnl"], abs=1e-6)


def _cpu_and_cudasim_rows(md, base, spec, timeout):
    """One spec over the first SIM_BARS bars on the cpu backend and on the CUDA kernel under numba's
    simulator (a subprocess: the simulator is chosen at import): (cpu rows, simulator rows by overrides)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", CUDASIM_SCRIPT, str(DATA / "candles_1h.db"), str(SIM_BARS),
                           json.dumps(spec)], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sim_rows = {_key(r["overrides"]): r for r in json.loads(proc.stdout.strip().splitlines()[-1])}
    n = SIM_BARS
    sliced = replace(md, times=md.times[:n], open=md.open[:, :n], high=md.high[:, :n], low=md.low[:, :n],
                     close=md.close[:, :n], volume=md.volume[:, :n], valid=md.valid[:, :n])
    return run_sweep(base, parse_sweep_spec(spec), sliced, None, backend="cpu", progress=False).rows, sim_rows


def test_cudasim_backend_equals_cpu_backend(md, base):
    """The CUDA kernel itself (numba's simulator) on a slice: same trades, PnL to 1e-9 relative."""
    spec = {**GRID, "axes": [GRID["axes"][0], GRID["axes"][2], GRID["axes"][4]]}
    spec["axes"] = [{**spec["axes"][0], "values": [1.5]}, {**spec["axes"][1], "values": [8, 20]}, spec["axes"][2]]
    cpu, sim_rows = _cpu_and_cudasim_rows(md, base, spec, timeout=120)
    assert len(cpu) == len(sim_rows) == 4
    assert sum(r["total_trades"] for r in cpu) > 0
    for row in cpu:
        sim = sim_rows[_key(row["overrides"])]
        assert sim["backend"] == "cudasim" and sim["config_id"] == row["config_id"]
        assert sim["total_trades"] == row["total_trades"]
        for f in ("total_pnl", "total_fees", "final_balance", "max_drawdown_pct", "sharpe"):
            assert sim[f] == pytest.approx(row[f], rel=1e-9, abs=1e-9), f


def test_cli_writes_ranked_jsonl_and_rejects_bad_spec(tmp_path, cpu_rows):
    import typer
    from typer.testing import CliRunner

    from gpu.cli import sweep_command

    app = typer.Typer()
    app.command()(sweep_command)
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(json.dumps({**GRID, "axes": GRID["axes"][:2]}), encoding="utf-8")
    out = tmp_path / "rows.jsonl"
    args = ["--candles-db", str(DATA / "candles_1h.db"), "--sweep-spec", str(spec_path), "--backend", "cpu",
            "--output", str(out), "--top-n", "4", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4
    assert [r["total_pnl"] for r in rows] == sorted((r["total_pnl"] for r in rows), reverse=True)
    assert set(rows[0]) >= {"config_id", "overrides", "total_pnl", "total_trades", "win_rate", "profit_factor",
                            "max_drawdown_pct", "sharpe", "total_fees", "final_balance", "backend", "precision"}

    bad = tmp_path / "bad.yaml"
    bad.write_text("axes: [{path: trade.sl_atr_mul, values: [1.0]}]\n", encoding="utf-8")
    res = CliRunner().invoke(app, [*args[:2], "--sweep-spec", str(bad), "--output", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2
    assert "axes[0].path: unknown config path 'trade.sl_atr_mul'" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "x.jsonl").exists()


def test_window_axes_of_compound_indicators_match_replay(md, base):
    """RSI and stoch-RSI windows swept apart: the sweep's shared stoch arrays must use the stoch window
    for their RSI, exactly like the streaming engine (a regression caught in review)."""
    import cpu_replay.api as cpu_replay

    spec = {"axes": [{"path": "indicators.rsi_window", "values": [9, 14]},
                     {"path": "indicators.stoch_rsi_window", "values": [10, 14]},
                     {"path": "thresholds.entry.min_adx", "values": [15]}],
            "lookback": 60, "initial_balance": 10_000}
    rows = run_sweep(base, parse_sweep_spec(spec), md, None, backend="cpu", progress=False).rows
    assert len(rows) == 4
    for row in rows:
        rep = cpu_replay.run_replay(apply_overrides(base, row["overrides"]), md, start_ms=int(md.times[60]),
                                    with_trades=False)
        assert row["total_trades"] == rep["total_trades"], row["overrides"]
        assert abs(row["total_pnl"] - rep["total_pnl"]) <= 1e-2, row["overrides"]


# The rules of the reference's entry families and breadth (AVE with its own window, pullback and
# slow-drift entries with a swept slope window, the regime filter and auto-reverse): cpu sweep ==
# replay on the whole data, and cudasim == cpu on a slice.
RULES_GRID = {
    "axes": [
        {"path": "thresholds.entry.enable_pullback_entries", "values": [True]},
        {"path": "thresholds.entry.enable_slow_drift_entries", "values": [False, True]},
        {"path": "thresholds.entry.slow_drift_slope_window", "values": [10, 20]},
        {"path": "thresholds.entry.ave_avg_atr_window", "values": [30]},
        {"path": "thresholds.entry.ave_atr_ratio_gt", "values": [1.1]},
        {"path": "market_regime.enable_auto_reverse", "values": [False, True]},
        {"path": "market_regime.enable_regime_filter", "values": [True]},
        {"path": "market_regime.breadth_block_long_below", "values": [40.0]},
        {"path": "market_regime.auto_reverse_breadth_low", "values": [30.0]},
        {"path": "market_regime.auto_reverse_breadth_high", "values": [70.0]},
        {"path": "trade.entry_min_confidence", "values": ["low"]},
    ],
    "lookback": 60,
    "initial_balance": 10_000,
}


def test_entry_families_and_breadth_cpu_sweep_equals_replay(md, base):
    import cpu_replay.api as cpu_replay
    rows = run_sweep(base, parse_sweep_spec(RULES_GRID), md, None, backend="cpu", progress=False).rows
    assert len(rows) == 8
    initial = float(RULES_GRID["initial_balance"])
    for row in rows:
        cfg = apply_overrides(base, row["overrides"])
        rep = cpu_replay.run_replay(cfg, md, initial_balance=initial, start_ms=int(md.times[RULES_GRID["lookback"]]),
                                    with_trades=True)
        assert row["total_trades"] == rep["total_trades"] > 0, row["overrides"]
        for f in ("total_pnl", "total_fees", "final_balance"):
            assert abs(row[f] - rep[f]) <= 1e-6 * initial, (f, row["overrides"])
    # the rules act: the eight candidates do not all trade alike, and low-confidence entries occur
    assert len({(r["total_trades"], round(r["total_pnl"], 6)) for r in rows}) >= 4
    drift = apply_overrides(base, {k["path"]: k["values"][-1] for k in RULES_GRID["axes"]})
    rep = cpu_replay.run_replay(drift, md, initial_balance=initial, start_ms=int(md.times[RULES_GRID["lookback"]]))
    assert any(t["confidence"] == "low" for t in rep["trades"])


def test_entry_families_and_breadth_cudasim_equals_cpu(md, base):
    spec = {**RULES_GRID, "axes": [a if a["path"] != "market_regime.enable_auto_reverse" else {**a, "values": [True]}
                                   for a in RULES_GRID["axes"]]}
    spec["axes"] = [a if a["path"] != "thresholds.entry.slow_drift_slope_window" else {**a, "values": [10]}
                    for a in spec["axes"]]
    cpu, sim_rows = _cpu_and_cudasim_rows(md, base, spec, timeout=180)
    assert len(cpu) == len(sim_rows) == 2
    assert sum(r["total_trades"] for r in cpu) > 0
    for row in cpu:
        sim = sim_rows[_key(row["overrides"])]
        assert sim["total_trades"] == row["total_trades"]
        for f in ("total_pnl", "total_fees", "final_balance", "max_drawdown_pct"):
            assert sim[f] == pytest.approx(row[f], rel=1e-9, abs=1e-9), f


def test_funding_headwind_exit_on_real_funding_cpu_sweep_equals_replay(base):
    """Hyperliquid's own candles and funding rates: with the funding-headwind exit on, the sweep
    equals the replay and the exit fires; off (the default), it never does."""
    import cpu_replay.api as cpu_replay
    from marketdata.funding import funding_matrix
    hl = DATA / "hyperliquid"
    md = load_market_data(str(hl / "candles_1h.db"), "1h")
    funding = funding_matrix(str(hl / "funding_rates.db"), md)
    spec = {"axes": [{"path": "trade.enable_funding_headwind_exit", "values": [False, True]},
                     {"path": "thresholds.entry.min_adx", "values": [15.0]}],
            "lookback": 60, "initial_balance": 10_000}
    rows = run_sweep(base, parse_sweep_spec(spec), md, funding, backend="cpu", progress=False).rows
    reasons = {}
    for row in rows:
        cfg = apply_overrides(base, row["overrides"])
        rep = cpu_replay.run_replay(cfg, md, funding=funding, start_ms=int(md.times[spec["lookback"]]))
        assert row["total_trades"] == rep["total_trades"] > 0
        assert abs(row["total_pnl"] - rep["total_pnl"]) <= 1e-2
        reasons[row["overrides"]["trade.enable_funding_headwind_exit"]] = {t["exit_reason"] for t in rep["trades"]}
    assert "funding_headwind" in reasons[True] and "funding_headwind" not in reasons[False]
