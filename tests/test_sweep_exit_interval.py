"""The sweep honours the engine settings the canonical replay honours, so the three executions agree:
`engine.exit_interval` finer than `interval` (exits on 5m bars inside each 1h bar), the entry
sub-bars of a finer `entry_interval` (the same 5m grid), and `watchlist_exclude`. Real candles: ../shared/data candles_1h.db (resampled from candles_5m.db).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from cpu_replay.api import run_replay
from gpu.api import check_engine_settings, run_sweep, trace_candidates
from gpu.spec import Axis, SweepSpecError, parse_sweep_spec
from marketdata.candles import load_market_data
from strategy.config import apply_overrides, config_from_dict

LOOKBACK = 60
BALANCE = 10_000.0
GRID = {
    "axes": [
        {"path": "trade.sl_atr_mult", "values": [1.0, 1.5, 2.5]},
        {"path": "trade.tp_atr_mult", "values": [2.0, 4.0]},
        {"path": "thresholds.entry.min_adx", "values": [15, 25]},
    ],
    "lookback": LOOKBACK,
    "initial_balance": BALANCE,
}
EXIT_5M = {"global": {"engine": {"interval": "1h", "exit_interval": "5m"}}}
MAIN_BAR = {"global": {"engine": {"interval": "1h"}}}
ENTRY_EXIT_5M = {"global": {"engine": {"interval": "1h", "exit_interval": "5m", "entry_interval": "5m"}}}
ENTRY_5M = {"global": {"engine": {"interval": "1h", "entry_interval": "5m"}}}
SIM_BARS = 150
CUDASIM_SCRIPT = r"""
import json, sys
from dataclasses import replace
from gpu.api import run_sweep
from gpu.spec import parse_sweep_spec
from marketdata.candles import load_market_data
from strategy.config import config_from_dict
md = load_market_data(sys.argv[1] + "/candles_1h.db", "1h")
exit_md = load_market_data(sys.argv[1] + "/candles_5m.db", "5m")
n = int(sys.argv[2])
md = replace(md, times=md.times[:n], open=md.open[:, :n], high=md.high[:, :n], low=md.low[:, :n],
             close=md.close[:, :n], volume=md.volume[:, :n], valid=md.valid[:, :n])
res = run_sweep(config_from_dict(json.loads(sys.argv[4])), parse_sweep_spec(json.loads(sys.argv[3])), md, None,
                backend="cudasim", progress=False, exit_md=exit_md)
print(json.dumps(res.rows))
"""


@pytest.fixture(scope="module")
def data(shared_data):
    return (load_market_data(str(shared_data / "candles_1h.db"), "1h"),
            load_market_data(str(shared_data / "candles_5m.db"), "5m"))


def sweep(cfg_dict, md, exit_md, grid=GRID):
    return run_sweep(config_from_dict(cfg_dict), parse_sweep_spec(grid), md, None, backend="cpu",
                     progress=False, exit_md=exit_md).rows


def replay(cfg, md, exit_md, **kw):
    return run_replay(cfg, md, initial_balance=BALANCE, start_ms=int(md.times[LOOKBACK]), exit_md=exit_md, **kw)


def assert_rows_equal_replay(rows, base, md, exit_md):
    for row in rows:
        cfg = apply_overrides(base, row["overrides"])
        assert row["config_id"] == cfg.config_id
        rep = replay(cfg, md, exit_md, with_trades=False)
        assert row["total_trades"] == rep["total_trades"], row["overrides"]
        for f in ("total_pnl", "total_fees", "final_balance"):
            assert abs(row[f] - rep[f]) <= 1e-6 * BALANCE, (f, row["overrides"])
        assert row["max_drawdown_pct"] == pytest.approx(rep["max_drawdown_pct"], rel=1e-9, abs=1e-12)


def test_sweep_with_5m_exits_equals_replay_row_by_row_and_trade_by_trade(data):
    md, exit_md = data
    base = config_from_dict(EXIT_5M)
    rows = sweep(EXIT_5M, md, exit_md)
    assert len(rows) == 12 and sum(r["total_trades"] for r in rows) >= 12 * 20
    assert_rows_equal_replay(rows, base, md, exit_md)
    overrides = [r["overrides"] for r in rows]
    traces = trace_candidates(base, overrides, md, None, initial_balance=BALANCE, lookback=LOOKBACK, exit_md=exit_md)
    for ov, trades, row in zip(overrides, traces, rows, strict=True):
        rep = replay(apply_overrides(base, ov), md, exit_md)
        assert len(trades) == row["total_trades"] == len(rep["trades"])
        for mine, theirs in zip(trades, rep["trades"], strict=True):
            assert mine == {k: theirs[k] for k in mine}


@pytest.mark.parametrize("mode", [ENTRY_EXIT_5M, ENTRY_5M], ids=["entries_and_exits_5m", "entries_5m_exits_1h"])
def test_sweep_with_5m_entry_sub_bars_equals_replay_trade_by_trade(data, mode):
    md, exit_md = data
    base = config_from_dict(mode)
    grid = {**GRID, "axes": GRID["axes"][:2]}
    rows = sweep(mode, md, exit_md, grid)
    assert len(rows) == 6 and all(r["total_trades"] >= 20 for r in rows)
    assert_rows_equal_replay(rows, base, md, exit_md)
    overrides = [r["overrides"] for r in rows]
    traces = trace_candidates(base, overrides, md, None, initial_balance=BALANCE, lookback=LOOKBACK, exit_md=exit_md)
    for ov, trades in zip(overrides, traces, strict=True):
        rep = replay(apply_overrides(base, ov), md, exit_md)
        assert trades == [{k: t[k] for k in trades[0]} for t in rep["trades"]]
    # entries at 5m closes: some round trips open off the hour
    assert any(t["entry_time_ms"] % 3_600_000 for trades in traces for t in trades)


def test_exits_on_the_main_bar_give_other_trades(data):
    """Proof that the sub-bars reach the kernel: the same grid, exits on 1h bars, trades differently."""
    md, exit_md = data
    fine, coarse = sweep(EXIT_5M, md, exit_md), sweep(MAIN_BAR, md, None)
    key = lambda r: json.dumps(r["overrides"], sort_keys=True)  # noqa: E731
    coarse_by = {key(r): r for r in coarse}
    differing = [r for r in fine if (r["total_trades"], r["total_pnl"]) !=
                 (coarse_by[key(r)]["total_trades"], coarse_by[key(r)]["total_pnl"])]
    assert len(differing) >= 3
    ov = [differing[0]["overrides"]]
    t_fine = trace_candidates(config_from_dict(EXIT_5M), ov, md, None, lookback=LOOKBACK, exit_md=exit_md)[0]
    t_coarse = trace_candidates(config_from_dict(MAIN_BAR), ov, md, None, lookback=LOOKBACK)[0]
    assert t_fine != t_coarse
    # a 5m exit is stamped at a 5m close, which is not an hour boundary
    assert any(t["exit_time_ms"] % 3_600_000 for t in t_fine)
    assert not any(t["exit_time_ms"] % 3_600_000 for t in t_coarse)


def test_watchlist_exclude_is_applied_like_the_replay(data):
    md, exit_md = data
    cfg = {"global": {**EXIT_5M["global"], "watchlist_exclude": ["eth"]}}
    grid = {**GRID, "axes": GRID["axes"][:2]}
    rows = sweep(cfg, md, exit_md, grid)
    base = config_from_dict(cfg)
    assert_rows_equal_replay(rows, base, md, exit_md)
    ov = [r["overrides"] for r in rows[:2]]
    with_eth = trace_candidates(config_from_dict(EXIT_5M), ov, md, None, lookback=LOOKBACK, exit_md=exit_md)
    without = trace_candidates(base, ov, md, None, lookback=LOOKBACK, exit_md=exit_md)
    assert any(t["symbol"] == "ETH" for trades in with_eth for t in trades)
    assert all(t["symbol"] != "ETH" for trades in without for t in trades) and all(without)


def test_what_the_sweep_cannot_reproduce_is_refused(data):
    md, exit_md = data
    spec = parse_sweep_spec({**GRID, "axes": GRID["axes"][:1]})
    with pytest.raises(SweepSpecError, match="exit_interval=5m needs the 5m candles"):
        run_sweep(config_from_dict(EXIT_5M), spec, md, None, backend="cpu", progress=False)
    with pytest.raises(SweepSpecError, match="entry_interval=5m needs the 5m candles"):
        run_sweep(config_from_dict(ENTRY_5M), spec, md, None, backend="cpu", progress=False)
    two_grids = {"global": {"engine": {"interval": "1h", "entry_interval": "15m", "exit_interval": "5m"}}}
    with pytest.raises(SweepSpecError, match="sub-bars are one grid"):
        run_sweep(config_from_dict(two_grids), spec, md, None, backend="cpu", progress=False, exit_md=exit_md)
    with pytest.raises(SweepSpecError, match="exit candles are 1h but global.engine.exit_interval=5m"):
        trace_candidates(config_from_dict(EXIT_5M), [{}], md, None, exit_md=md)
    with pytest.raises(SweepSpecError, match="engine.exit_interval: engine.\\* settings cannot be swept"):
        check_engine_settings(config_from_dict(MAIN_BAR), "1h", None, (Axis("engine.exit_interval", ("5m",), "param", 0),))
    with pytest.raises(SweepSpecError, match="all excluded"):
        run_sweep(config_from_dict({"global": {"watchlist_exclude": md.symbols}}), spec, md, None, backend="cpu",
                  progress=False)


@pytest.mark.parametrize("mode", [EXIT_5M, pytest.param(ENTRY_EXIT_5M, marks=pytest.mark.slow)],
                         ids=["exits_5m", "entries_and_exits_5m"])
def test_cudasim_kernel_with_sub_bars_equals_cpu(data, shared_data, mode):
    md, exit_md = data
    grid = {**GRID, "axes": [{"path": "trade.sl_atr_mult", "values": [1.0, 2.5]}], "lookback": 30}
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", CUDASIM_SCRIPT, str(shared_data), str(SIM_BARS), json.dumps(grid),
                           json.dumps(mode)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sim = {json.dumps(r["overrides"]): r for r in json.loads(proc.stdout.strip().splitlines()[-1])}
    n = SIM_BARS
    sliced = replace(md, times=md.times[:n], open=md.open[:, :n], high=md.high[:, :n], low=md.low[:, :n],
                     close=md.close[:, :n], volume=md.volume[:, :n], valid=md.valid[:, :n])
    cpu = sweep(mode, sliced, exit_md, grid)
    assert len(cpu) == len(sim) == 2 and all(r["total_trades"] > 0 for r in cpu)
    coarse = {json.dumps(r["overrides"]): r["total_pnl"] for r in sweep(MAIN_BAR, sliced, None, grid)}
    assert any(coarse[json.dumps(r["overrides"])] != r["total_pnl"] for r in cpu)  # the slice uses its 5m exits
    for row in cpu:
        other = sim[json.dumps(row["overrides"])]
        assert other["backend"] == "cudasim" and other["total_trades"] == row["total_trades"]
        for f in ("total_pnl", "total_fees", "final_balance", "max_drawdown_pct", "sharpe"):
            assert other[f] == pytest.approx(row[f], rel=1e-9, abs=1e-9), f


def test_sweep_cli_reads_the_exit_candles(data, shared_data, tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from gpu.cli import sweep_command

    md, exit_md = data
    app = typer.Typer()
    app.command()(sweep_command)
    monkeypatch.chdir(tmp_path)  # no candles_dbs/ here: the default exit DB is absent
    (tmp_path / "cfg.yaml").write_text(json.dumps(EXIT_5M))
    grid = {**GRID, "axes": GRID["axes"][:1]}
    (tmp_path / "s.yaml").write_text(json.dumps(grid))
    args = ["--candles-db", str(shared_data / "candles_1h.db"), "--config", "cfg.yaml", "--sweep-spec", "s.yaml",
            "--backend", "cpu", "--output", "rows.jsonl", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "--exit-candles-db (global.engine.exit_interval=5m): candles source not found: candles_dbs/candles_5m.db" \
        in res.output.replace("\n", "")
    res = CliRunner().invoke(app, [*args, "--exit-candles-db", str(shared_data / "candles_5m.db")])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("config cfg.yaml (config_id ")  # the config a sweep used, first
    bare = CliRunner().invoke(app, ["--candles-db", str(shared_data / "candles_1h.db"), "--sweep-spec", "s.yaml",
                                    "--backend", "cpu", "--output", "bare.jsonl", "--no-progress"])
    assert "sweeping from the code defaults (pass --config)" in bare.output.replace("\n", " ")
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    expected = {r["config_id"]: r for r in sweep(EXIT_5M, md, exit_md, grid)}
    assert len(rows) == 3
    for row in rows:
        assert row["total_trades"] == expected[row["config_id"]]["total_trades"]
        assert row["total_pnl"] == pytest.approx(expected[row["config_id"]]["total_pnl"], abs=1e-9)


def test_factory_run_with_5m_exits_passes_replay_equivalence(shared_data, tmp_path):
    """The exit DB defaults to candles_5m.db beside --candles-db; the walk-forward gate replays too."""
    (tmp_path / "cfg.yaml").write_text(json.dumps(EXIT_5M))
    (tmp_path / "spec.yaml").write_text(json.dumps({**GRID, "axes": GRID["axes"][:2]}))
    art = tmp_path / "art"
    res = subprocess.run([sys.executable, "-m", "factory.cli", "run", "--profile", "smoke", "--config", "cfg.yaml",
                          "--candles-db", str(shared_data / "candles_1h.db"), "--sweep-spec", "spec.yaml",
                          "--shortlist", "3", "--replay", "3", "--gates", "walk_forward,slippage", "--artifacts-dir",
                          str(art), "--run-id", "x5", "--no-deploy", "--no-progress"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (rd,) = art.glob("*/run_x5")
    items = json.loads((rd / "reports" / "report.json").read_text())["items"]
    assert len(items) == 3
    for item in items:
        assert item["replay_equivalence_status"] == "pass", item["replay_equivalence_diffs"]
        assert item["replay_equivalence_mode"] == "trace" and item["replay_equivalence_count"] > 7
        rep = json.loads(Path(item["replay_report_path"]).read_text())
        assert any(t["exit_time_ms"] % 3_600_000 for t in rep["trades"])  # exits on 5m closes
    steps = json.loads((rd / "run_metadata.json").read_text())["steps"]
    assert any(str(shared_data / "candles_5m.db") in s["argv"] for s in steps if s["name"] == "data_checks")
    assert (rd / "data_checks" / "candles_candles_5m.json").is_file()
