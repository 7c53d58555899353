"""The CUDA sweep's layout v2 (warp-shared feature rows, per-thread local state, capacity buckets,
lane map with idle padding lanes, dispatch sized by resident lanes) against the CPU backend and the
canonical replay, on the real candles under numba's simulator. Each simulator run is tiny (a few
candidates, the real data's 6 symbols, ~100 trading bars): the simulator runs every lane in Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gpu.backend import cuda_dispatch_batch, lane_map, resident_lanes
from gpu.kernels import WARP, capacity_bucket, warps_per_block
from strategy.features import NF

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
LOOKBACK = 60
BARS = 150
# every swept family moves: exits, sizing, pyramiding (book), entries, filters, and two window axes
GRID = {
    "axes": [
        {"path": "trade.sl_atr_mult", "values": [1.0, 2.5]},
        {"path": "trade.trailing_start_atr", "values": [0.5, 2.0]},
        {"path": "trade.allocation_pct", "values": [0.03, 0.10]},
        {"path": "trade.max_adds_per_symbol", "values": [0, 2]},
        {"path": "thresholds.entry.min_adx", "values": [12, 25]},
        {"path": "thresholds.entry.macd_hist_entry_mode", "values": ["accel", "none"]},
        {"path": "filters.enable_ranging_filter", "values": [True, False]},
        {"path": "indicators.ema_fast_window", "values": [8, 20]},
        {"path": "indicators.adx_window", "values": [10, 14]},
    ],
    "lookback": LOOKBACK,
    "initial_balance": 10_000.0,
}
EXIT_5M = {"global": {"engine": {"interval": "1h", "exit_interval": "5m"}}}
ENTRY_EXIT_5M = {"global": {"engine": {"interval": "1h", "exit_interval": "5m", "entry_interval": "5m"}}}
SIM_SCRIPT = r"""
import json, sys
import numpy as np
from dataclasses import replace
from gpu.api import bind_data, prepare
from gpu.backend import Evaluator
from gpu.spec import parse_sweep_spec
from marketdata.candles import load_market_data
from strategy.config import config_from_dict
data, bars, grid, base, vi, runs, exit_md = sys.argv[1], int(sys.argv[2]), *map(json.loads, sys.argv[3:7]), sys.argv[7]
md = load_market_data(data + "/candles_1h.db", "1h")
md = replace(md, times=md.times[:bars], open=md.open[:, :bars], high=md.high[:, :bars], low=md.low[:, :bars],
             close=md.close[:, :bars], volume=md.volume[:, :bars], valid=md.valid[:, :bars])
exit_md = load_market_data(data + "/candles_5m.db", "5m") if exit_md == "5m" else None
base = config_from_dict(base)
spec = parse_sweep_spec(grid)
md, funding, sub = bind_data(base, md, None, exit_md, spec.axes)
prep = prepare(base, spec, md, funding, sub=sub)
pvals, fidx = prep.kernel_vectors(np.asarray(vi, dtype=np.int32))
out = {"nsub": int(prep.static.sub.k), "combos": int(np.unique(fidx, axis=0).shape[0])}
cpu, cpu_trades = Evaluator(prep.static, "cpu").evaluate(pvals, fidx, max_trades=64)
assert cpu[:, 1].max() <= 64
out["cpu"] = cpu.tolist()
for layout, cap, warps, trace in runs:
    ev = Evaluator(prep.static, "cudasim", layout=layout, cap=cap, warps=warps)
    m, tr = ev.evaluate(pvals, fidx, max_trades=64 if trace else 0)
    key = f"{layout}/{cap}/{warps}/{int(trace)}"
    out[key] = {"metrics_equal": bool(np.array_equal(m, cpu, equal_nan=True)),
                "trades_equal": all(np.array_equal(tr[i, :n], cpu_trades[i, :n], equal_nan=True)
                                    for i, n in enumerate(cpu[:, 1].astype(int))) if trace else None,
                "cap": getattr(ev, "cap", None)}
print(json.dumps(out))
"""


def _candidates(n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    vi = rng.integers(0, 2, (n, len(GRID["axes"])))
    vi[0], vi[1] = 0, 1  # every axis takes both values
    return vi.tolist()


def _sim(vi, runs, base=None, exit_md="") -> dict:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", SIM_SCRIPT, str(DATA), str(BARS), json.dumps(GRID),
                           json.dumps(base or {}), json.dumps(vi), json.dumps(runs), exit_md],
                          capture_output=True, text=True, env=env, timeout=600, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _replay_check(vi, cpu_metrics, base_dict, exit_md=None):
    """The CPU backend's rows (already == v2 bitwise) against the canonical replay."""
    import cpu_replay.api as cpu_replay
    from gpu.spec import parse_sweep_spec
    from marketdata.candles import load_market_data
    from strategy.config import apply_overrides, config_from_dict
    from strategy.layout import M_FINAL_BALANCE, M_TOTAL_PNL, M_TOTAL_TRADES

    md = load_market_data(str(DATA / "candles_1h.db"), "1h")
    md = replace(md, times=md.times[:BARS], open=md.open[:, :BARS], high=md.high[:, :BARS], low=md.low[:, :BARS],
                 close=md.close[:, :BARS], volume=md.volume[:, :BARS], valid=md.valid[:, :BARS])
    spec = parse_sweep_spec(GRID)
    base = config_from_dict(base_dict)
    for row, m in zip(vi, cpu_metrics, strict=True):
        ov = {a.path: a.values[k] for a, k in zip(spec.axes, row, strict=True)}
        rep = cpu_replay.run_replay(apply_overrides(base, ov), md, initial_balance=GRID["initial_balance"],
                                    start_ms=int(md.times[LOOKBACK]), with_trades=False,
                                    **({"exit_md": exit_md} if exit_md is not None else {}))
        assert m[M_TOTAL_TRADES] == rep["total_trades"], ov
        assert m[M_TOTAL_PNL] == pytest.approx(rep["total_pnl"], abs=1e-6), ov
        assert m[M_FINAL_BALANCE] == pytest.approx(rep["final_balance"], abs=1e-6), ov


# ---------------------------------------------------------------------------- host side, no simulator

def test_lane_map_groups_by_combo_and_pads_to_whole_warps_and_blocks():
    rng = np.random.default_rng(3)
    combos = rng.integers(0, 50, (5, 24))
    pick = rng.integers(0, 5, 300)
    fidx = combos[pick]
    cand, warp_combo, table = lane_map(fidx, warps=4)
    assert cand.shape[0] == warp_combo.shape[0] * WARP and warp_combo.shape[0] % 4 == 0
    real = cand[cand >= 0]
    assert sorted(real.tolist()) == list(range(300))  # each candidate once
    for w, row in enumerate(warp_combo):
        lanes = cand[w * WARP:(w + 1) * WARP]
        if row < 0:
            assert (lanes == -1).all()
        else:
            assert (fidx[lanes[lanes >= 0]] == table[row]).all()  # a warp shares one window combo
    # stable: inside a combo, candidates keep their order
    for row in range(table.shape[0]):
        mine = [c for w in np.flatnonzero(warp_combo == row) for c in cand[w * WARP:(w + 1) * WARP] if c >= 0]
        assert mine == sorted(mine)


def test_capacity_buckets_and_warps_per_block():
    assert [capacity_bucket(n) for n in (1, 6, 8, 9, 50, 64, 65, 200, 256)] == [8, 8, 8, 16, 64, 64, 128, 256, 256]
    with pytest.raises(ValueError):
        capacity_bucket(257)
    # 48 KB of staged rows of NF = 27 doubles: 4 warps up to cap 32, 3 at 64, 1 from 128 on
    assert [warps_per_block(c) for c in (8, 16, 32, 64, 128, 256)] == [4, 4, 4, 3, 1, 1]


def test_dispatch_fills_an_h200():
    """132 SMs at the offline 166 registers: >= 65,536 candidates per launch, bounded by memory."""
    lanes = resident_lanes(132, 166, 128, 4 * 64 * 24 * 8)
    assert lanes == 132 * 3 * 128
    assert cuda_dispatch_batch(lanes, 140 * 2**30, 1_000) >= 65_536
    assert cuda_dispatch_batch(lanes, 10 * 2**20, 1_000) == 5 * 2**20 // 1_000  # memory-bound


def test_evaluator_sizes_a_cuda_dispatch_from_the_device(monkeypatch):
    """The CUDA evaluator's batch on an H200's facts (no device here: the facts are given)."""
    import gpu.backend as backend

    h200 = {"sm_count": 132, "max_threads_per_sm": 2048, "regs_per_sm": 65536, "smem_per_sm": 228 * 1024,
            "free_bytes": 140 * 2**30, "total_bytes": 141 * 2**30}
    monkeypatch.setattr(backend, "_cuda_device_facts", lambda: h200)
    monkeypatch.delenv("AI_QUANT_SWEEP_MAX_BATCH", raising=False)
    ev = backend.Evaluator.__new__(backend.Evaluator)
    ev.static = type("S", (), {"nsym": 50, "pcols": np.zeros(20, dtype=np.int64)})()
    ev.layout, ev.cap, ev.warps = "v2", 64, 4
    assert ev._cuda_max_batch() == 132 * 3 * 128 * 2 >= 65_536
    ev.layout = "v1"
    assert ev._cuda_max_batch() == 132 * 4 * 128 * 2  # 124 registers: 4 blocks of 128 per SM
    monkeypatch.setenv("AI_QUANT_SWEEP_MAX_BATCH", "5000")
    assert ev._cuda_max_batch() == 5000


def test_profiles_fill_the_gpu():
    import yaml

    prof = yaml.safe_load((REPO / "config" / "factory_profiles.yaml").read_text())["profiles"]
    for name in ("daily", "deep"):
        assert prof[name]["batch"] >= 65_536, name


# ---------------------------------------------------------------------------- simulator (real candles)

def pytestmark_sim(fn):
    return pytest.mark.cudasim(pytest.mark.skipif(not (DATA / "candles_1h.db").exists(),
                                                  reason="../shared/data absent")(fn))


@pytestmark_sim
def test_v2_equals_cpu_and_replay_caps_padding_trace():
    """5 candidates in several window combos (each padded to a whole warp); cap 8 (the bucket of the
    6 real symbols) with 1 and 2 warps per block (an all-idle padding warp), cap 32, trace mode."""
    vi = _candidates(5, seed=1)
    res = _sim(vi, [["v2", None, 1, True], ["v2", 32, 2, False]])
    assert res["combos"] >= 2
    assert res["v2/None/1/1"] == {"metrics_equal": True, "trades_equal": True, "cap": 8}
    assert res["v2/32/2/0"]["metrics_equal"] and res["v2/32/2/0"]["cap"] == 32
    cpu = res["cpu"]
    assert sum(m[1] for m in cpu) > 0  # candidates trade
    _replay_check(vi, cpu, {})


@pytestmark_sim
def test_v2_equals_cpu_and_replay_with_exit_sub_bars():
    from marketdata.candles import load_market_data

    vi = _candidates(3, seed=2)
    res = _sim(vi, [["v2", 16, 1, True]], base=EXIT_5M, exit_md="5m")
    assert res["nsub"] == 12
    assert res["v2/16/1/1"] == {"metrics_equal": True, "trades_equal": True, "cap": 16}
    _replay_check(vi, res["cpu"], EXIT_5M, exit_md=load_market_data(str(DATA / "candles_5m.db"), "5m"))


@pytest.mark.slow
@pytestmark_sim
def test_v1_and_v2_equal_cpu_and_replay_with_entry_sub_bars():
    """Entry sub-bars: layout v2 stages each sub-bar's OHLC into the warp-shared rows, v1 and the
    CPU into the candidate's own; every one equals the replay."""
    from marketdata.candles import load_market_data

    vi = _candidates(3, seed=3)
    res = _sim(vi, [["v2", 8, 2, True], ["v1", None, None, True]], base=ENTRY_EXIT_5M, exit_md="5m")
    assert res["nsub"] == 12 and sum(m[1] for m in res["cpu"]) > 0
    assert res["v2/8/2/1"] == {"metrics_equal": True, "trades_equal": True, "cap": 8}
    assert res["v1/None/None/1"]["metrics_equal"] and res["v1/None/None/1"]["trades_equal"]
    _replay_check(vi, res["cpu"], ENTRY_EXIT_5M, exit_md=load_market_data(str(DATA / "candles_5m.db"), "5m"))


@pytestmark_sim
def test_gpu_check_script_at_simulator_size(tmp_path):
    """bench/gpu_check.sh end to end under the simulator (what CI runs)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHON=sys.executable, PYTHONPATH=str(REPO))
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=900, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["passed"] and report["simulator"]
    assert {r["layout"] for r in report["equality"]} == {"v1", "v2"} and all(r["equal"] for r in report["equality"])
    assert {(r["layout"], r["candidates"]) for r in report["throughput"]} >= {("v1", 2), ("v2", 2)}


def _cuda_toolkit():
    sys.path.insert(0, str(REPO / "bench"))
    from gpu_offline_compile import find_cuda_home

    return find_cuda_home()


@pytest.mark.skipif(_cuda_toolkit() is None, reason="no CUDA toolkit (libnvvm, ptxas) to compile for sm_90")
def test_v2_kernel_compiles_for_sm90_without_spills():
    """The simulator never types the kernel; this compiles it for Hopper (no GPU needed) with ptxas."""
    script = ("import json, sys; sys.path.insert(0, 'bench'); import gpu_offline_compile as g; "
              "h = g.find_cuda_home(); g.offline_target(h); print(json.dumps(g.compile_report('v2', 8, h)))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=str(REPO),
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rep["spill_stores"] == 0 and rep["registers"] <= 200, rep
    assert rep["shared_bytes"] == warps_per_block(8) * 8 * NF * 8, rep


@pytest.mark.slow
@pytest.mark.skipif(_cuda_toolkit() is None, reason="no CUDA toolkit (libnvvm, ptxas) to compile for sm_90")
def test_v2_kernel_with_entry_sub_bars_compiles_for_sm90_without_spills():
    """The variant with entry sub-bars compiled in (a sweep whose config has them) stays spill-free."""
    script = ("import json, sys; sys.path.insert(0, 'bench'); import gpu_offline_compile as g; "
              "h = g.find_cuda_home(); g.offline_target(h); "
              "print(json.dumps(g.compile_report('v2', 8, h, entry_sub=True)))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=str(REPO),
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rep["entry_sub"] and rep["spill_stores"] == 0 and rep["registers"] <= 255, rep
