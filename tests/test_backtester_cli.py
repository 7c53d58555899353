"""`backtester replay` / `dump-indicators` and `tools/slippage_stress.py` as an operator runs them."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ta

REPO = Path(__file__).resolve().parents[1]


def run(*args, cwd=REPO):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def backtester(*args):
    return run("-m", "tools.backtester", *args)


@pytest.fixture(scope="module")
def example_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "strategy.yaml"
    path.write_text((REPO / "config" / "strategy_overrides.yaml.example").read_text())
    return path


def test_replay_writes_report_with_every_field(shared_data, example_config, tmp_path):
    out = tmp_path / "r.json"
    proc = backtester("replay", "--candles-db", str(shared_data / "candles_1h.db"), "--interval", "1h",
                      "--config", str(example_config), "--trades", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(out.read_text())
    for key in ("total_pnl", "return_pct", "final_balance", "total_trades", "win_rate", "profit_factor",
                "max_drawdown_pct", "sharpe", "sortino", "total_fees", "total_funding", "slippage_bps",
                "config_id", "per_symbol", "trace_checksum", "trades"):
        assert key in rep
    assert rep["final_balance"] == pytest.approx(10_000 + rep["total_pnl"])
    assert len(rep["trades"]) == rep["total_trades"]
    assert "replay" in proc.stderr  # the summary table goes to stderr


def test_partitions_and_hot_db_replay_like_the_single_db(shared_data, example_config, tmp_path):
    src = shared_data / "candles_5m.db"
    hot, part_dir = tmp_path / "hot.db", tmp_path / "partitions" / "5m"
    part_dir.mkdir(parents=True)
    cut = 1516400000000
    for path, where in ((hot, "t >= ?"), (part_dir / "candles_5m_2018-01.db", "t < ?")):
        with sqlite3.connect(path) as conn:
            conn.execute(f"ATTACH DATABASE '{src}' AS s")
            conn.execute(f"CREATE TABLE candles AS SELECT * FROM s.candles WHERE {where}", (cut,))
    args = ("replay", "--interval", "5m", "--config", str(example_config))
    one = backtester(*args, "--candles-db", str(src))
    split = backtester(*args, "--candles-db", f"{hot},{part_dir}")
    assert one.returncode == split.returncode == 0, split.stderr
    assert json.loads(one.stdout)["trace_checksum"] == json.loads(split.stdout)["trace_checksum"]


NUMERIC_CASES = {
    "balance_nan": (["--initial-balance", "nan"], "--initial-balance must be a finite number"),
    "balance_inf": (["--initial-balance", "inf"], "--initial-balance must be a finite number"),
    "slippage_nan": (["--slippage-bps", "nan"], "--slippage-bps must be a finite number"),
    "slippage_inf": (["--slippage-bps", "inf"], "--slippage-bps must be a finite number"),
    "lookback_negative": (["--lookback", "-1"], "--lookback must be >= 0"),
}


@pytest.mark.parametrize("case", ["missing_db", "no_table", "no_interval", "unknown_symbol", "start_after_end",
                                  "unknown_key", "bad_init_state", *NUMERIC_CASES])
def test_bad_input_is_one_clear_line(case, shared_data, example_config, tmp_path):
    db = str(shared_data / "candles_5m.db")
    args = ["replay", "--candles-db", db, "--interval", "5m", "--config", str(example_config)]
    expect = {"missing_db": "not found", "no_table": "candles", "no_interval": "no 1h candles",
              "unknown_symbol": "FOO", "start_after_end": "before", "unknown_key": "sl_atr_mul",
              "bad_init_state": "position ETH appears more than once",
              **{k: v[1] for k, v in NUMERIC_CASES.items()}}[case]
    if case in NUMERIC_CASES:
        args += NUMERIC_CASES[case][0]
    elif case == "bad_init_state":
        pos = {"symbol": "ETH", "side": "LONG", "size": 1.0, "entry_price": 100.0, "entry_atr": 1.0,
               "open_time_ms": 1516000000000}
        state = tmp_path / "state.json"
        state.write_text(json.dumps({"version": 1, "balance": 1000.0, "positions": [pos, pos]}))
        args += ["--init-state", str(state)]
    elif case == "missing_db":
        args[2] = str(tmp_path / "nope.db")
    elif case == "no_table":
        empty = tmp_path / "empty.db"
        sqlite3.connect(empty).execute("CREATE TABLE other (x)").connection.commit()
        args[2] = str(empty)
    elif case == "no_interval":
        args[4] = "1h"
    elif case == "unknown_symbol":
        args += ["--symbols", "FOO"]
    elif case == "start_after_end":
        args += ["--start", "2018-01-20", "--end", "2018-01-15"]
    elif case == "unknown_key":
        bad = tmp_path / "bad.yaml"
        bad.write_text("global:\n  trade:\n    sl_atr_mul: 2.0\n")
        args[6] = str(bad)
    proc = backtester(*args)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert expect in lines[0] and "Traceback" not in proc.stderr


def test_interval_comes_from_a_single_interval_candles_db(shared_data, example_config, tmp_path):
    """The example config says 1h; a 5m-only DB without --interval replays 5m bars (and says so)."""
    db = shared_data / "candles_5m.db"
    proc = backtester("replay", "--candles-db", str(db), "--config", str(example_config))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["interval"] == "5m"
    assert "interval 5m (from the candles DB)" in proc.stderr
    assert proc.stderr.splitlines()[0].startswith(f"config {example_config} (config_id ")
    assert "…" not in proc.stderr and "total PnL" in proc.stderr  # 80 columns, no number cut
    # a failing run still prints one line, with the hint that names its fix (not the interval's)
    bad = backtester("replay", "--candles-db", str(db), "--config", str(example_config), "--symbols", "eth")
    lines = [ln for ln in bad.stderr.strip().splitlines() if ln.strip()]
    assert bad.returncode == 1 and len(lines) == 1 and "(did you mean ETH?)" in lines[0], bad.stderr
    assert "--interval" not in lines[0]
    late = backtester("replay", "--candles-db", str(db), "--config", str(example_config), "--start", "2030-01-01")
    assert late.returncode == 1 and "(interval 5m from the candles DB; pass --interval to choose)" in late.stderr
    # a DB holding two intervals keeps the config's interval
    mixed = tmp_path / "mixed.db"
    with sqlite3.connect(mixed) as conn:
        conn.execute(f"ATTACH DATABASE '{db}' AS a")
        conn.execute(f"ATTACH DATABASE '{shared_data / 'candles_1h.db'}' AS b")
        conn.execute("CREATE TABLE candles AS SELECT * FROM a.candles WHERE symbol = 'ETH'")
        conn.execute("INSERT INTO candles SELECT * FROM b.candles")
    proc = backtester("replay", "--candles-db", str(mixed), "--config", str(example_config))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["interval"] == "1h" and "from the candles DB" not in proc.stderr


def test_dump_indicators_matches_ta(shared_data, example_config, tmp_path):
    out = tmp_path / "eth.csv"
    proc = backtester("dump-indicators", "--candles-db", str(shared_data / "candles_5m.db"), "--interval", "5m",
                      "--symbol", "ETH", "--config", str(example_config), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["time_utc"].endswith("Z") and rows[0]["time_utc"].startswith("2018-")
    assert list(rows[0]) == ["t", "time_utc", "close", "ema_fast", "ema_slow", "ema_macro", "adx", "adx_pos", "adx_neg",
                             "adx_slope", "bb_upper", "bb_lower", "bb_width", "atr", "rsi", "macd_hist",
                             "stoch_rsi_k", "stoch_rsi_d", "vol_sma", "vol_trend"]
    close = pd.Series([float(r["close"]) for r in rows])
    ema20 = ta.trend.ema_indicator(close, window=20).to_numpy()
    rsi14 = ta.momentum.rsi(close, window=14).to_numpy()
    ours_ema = np.array([float(r["ema_fast"]) if r["ema_fast"] else np.nan for r in rows])
    ours_rsi = np.array([float(r["rsi"]) if r["rsi"] else np.nan for r in rows])
    np.testing.assert_allclose(ours_ema[100:], ema20[100:], rtol=1e-9)
    np.testing.assert_allclose(ours_rsi[100:], rsi14[100:], rtol=1e-9)


def test_slippage_stress_levels_cost_more(shared_data, example_config):
    proc = run("tools/slippage_stress.py", "--config", str(example_config), "--candles-db",
               str(shared_data / "candles_1h.db"), "--interval", "1h", "--bps", "0,20,40")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    pnl = [row["total_pnl"] for row in result["levels"]]
    assert [row["slippage_bps"] for row in result["levels"]] == [0.0, 20.0, 40.0]
    assert pnl[0] > pnl[1] > pnl[2]
    assert result["pnl_at_20bps_positive"] == (pnl[1] > 0)


def test_replay_with_entry_sub_bars_and_no_sub_bar_candles_is_one_line(tmp_path, shared_data):
    """A config with 5m entry sub-bars and no 5m candles (none at the default path, no flag): one line
    naming the sub-bars, the missing file and the flag; exit 1, no traceback."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("global:\n  engine:\n    interval: 1h\n    entry_interval: 5m\n")
    proc = subprocess.run([sys.executable, "-m", "tools.backtester", "replay", "--config", str(cfg),
                           "--candles-db", str(shared_data / "candles_1h.db")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: the 5m sub-bars of global.engine.entry_interval/exit_interval need their candles: "
        "candles_dbs/candles_5m.db not found (pass --exit-candles-db)"]
