"""Plots: the engine's per-bar equity, `backtester replay --plot`, the factory's report.html and the
optuna study as optuna-dashboard shows it, each HTML page opened in a real headless Chromium.

Data: marketdata.demo's SYNTHETIC candles (the pages must say so). Every figure on the pages comes
from real canonical replays or real sweeps of that data; screenshots go to <tmp>/screens/.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from headless import browser, shoot  # noqa: F401 - `browser` is a fixture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
SYMBOLS = ["BTC", "ETH", "SOL", "DOGE"]
START, END = "2025-04-01", "2025-06-01"
DAY_MS = 86_400_000

pytest.importorskip("plotly", reason="the [plots] extra is not installed")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from marketdata.demo import ensure_demo_data

    return ensure_demo_data(tmp_path_factory.mktemp("demo") / "demo_data")


@pytest.fixture(scope="module")
def market(demo):
    from marketdata.candles import load_market_data
    from marketdata.intervals import parse_time_ms

    start = parse_time_ms(START, "start") - 200 * 3_600_000
    return load_market_data(str(demo["candles_1h"]), "1h", symbols=SYMBOLS, start_ms=start,
                            end_ms=parse_time_ms(END, "end"))


def base_config():
    from strategy.config import config_from_dict

    return config_from_dict({}, source="<code defaults>")


def replay(cfg, md, **kw):
    from cpu_replay.api import run_replay
    from marketdata.intervals import parse_time_ms

    kw.setdefault("start_ms", parse_time_ms(START, "start"))
    return run_replay(cfg, md, **kw)


# ------------------------------------------------------------------------- per-bar equity
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sl=st.sampled_from([1.0, 1.5, 2.5, 4.0]), tp=st.sampled_from([2.0, 4.0, 8.0]),
       alloc=st.sampled_from([0.02, 0.1, 0.3]), lev=st.sampled_from([1.0, 3.0, 10.0]),
       slip=st.sampled_from([0.0, 10.0, 40.0]), start_day=st.integers(0, 40), days=st.integers(2, 20),
       balance=st.sampled_from([500.0, 10_000.0, 1e6]))
def test_equity_curve_ends_at_final_balance_and_its_drawdown_is_max_drawdown(market, sl, tp, alloc, lev, slip,
                                                                               start_day, days, balance):
    from cpu_replay.report import curve_drawdown
    from marketdata.intervals import parse_time_ms
    from strategy.config import apply_overrides

    cfg = apply_overrides(base_config(), {"trade.sl_atr_mult": sl, "trade.tp_atr_mult": tp,
                                          "trade.allocation_pct": alloc, "trade.leverage": lev})
    start = parse_time_ms(START, "start") + start_day * DAY_MS
    rep = replay(cfg, market, start_ms=start, end_ms=start + days * DAY_MS, slippage_bps=slip,
                 initial_balance=balance, with_equity=True)
    curve = rep["equity_curve"]
    assert len(curve["t_ms"]) == len(curve["equity"]) == rep["bars"] + 2
    assert curve["equity"][-1] == rep["final_balance"]
    assert curve["equity"][0] == rep["initial_balance"]
    assert curve_drawdown(curve["equity"]) == rep["max_drawdown_pct"]
    assert all(b >= a for a, b in zip(curve["t_ms"], curve["t_ms"][1:], strict=False))
    eq, bal, unreal, expo = (np.array(curve[k]) for k in ("equity", "balance", "unrealised", "exposure"))
    np.testing.assert_allclose(bal + unreal, eq, rtol=1e-12, atol=1e-9)
    assert curve["balance"][-1] == rep["final_balance"] and curve["unrealised"][-1] == 0.0
    assert np.all(expo >= 0) and np.all(expo[np.array(curve["open_positions"]) == 0] == 0)
    by_symbol = np.array(list(curve.get("exposure_by_symbol", {}).values()) or [np.zeros(len(eq))])
    np.testing.assert_allclose(np.abs(by_symbol).sum(axis=0), expo, rtol=1e-9, atol=1e-9)
    from reports.replay_plot import monthly_returns

    months = monthly_returns(curve, balance)[2]
    growth = np.prod(1.0 + months[~np.isnan(months)] / 100.0)
    assert growth == pytest.approx(rep["final_balance"] / rep["initial_balance"], rel=1e-9)


def test_equity_curve_of_a_resumed_checkpoint_starts_at_its_equity(market):
    """A trader's engine (stepped bar by bar like the daemon) resumed by the replay: the curve
    starts at the checkpoint's marked equity and still ends at the final balance."""
    import dataclasses

    from cpu_replay.api import replay_params, run_replay
    from cpu_replay.engine import Engine
    from cpu_replay.report import curve_drawdown
    from strategy.layout import A_EQUITY

    cfg, md, cut = base_config(), market, 400
    eng = Engine(replay_params(cfg, list(md.symbols), None), np.ascontiguousarray(cfg.windows(), dtype=np.int64),
                 list(md.symbols), md.interval_ms, 10_000.0)
    for b in range(cut + 1):
        eng.step(int(md.times[b]), md.open[:, b], md.high[:, b], md.low[:, b], md.close[:, b], md.volume[:, b],
                 md.valid[:, b], md.valid[:, b - 1] if b else np.zeros(md.nsym), trade=b >= 200)
    tail = dataclasses.replace(md, times=md.times[cut:], open=md.open[:, cut:], high=md.high[:, cut:],
                               low=md.low[:, cut:], close=md.close[:, cut:], volume=md.volume[:, cut:],
                               valid=md.valid[:, cut:])
    rep = run_replay(cfg, tail, resume=eng.state, with_equity=True)
    curve = rep["equity_curve"]["equity"]
    assert curve[0] == eng.state.acct[A_EQUITY]
    assert curve[-1] == rep["final_balance"]
    assert curve_drawdown(curve) == rep["max_drawdown_pct"]


# ------------------------------------------------------------------------- replay --plot
def test_replay_plot_opens_in_chromium_with_every_part(demo, tmp_path, browser):  # noqa: F811
    out, plot = tmp_path / "report.json", tmp_path / "replay.html"
    res = subprocess.run([sys.executable, "-m", "tools.backtester", "replay", "--candles-db", str(demo["candles_1h"]),
                          "--symbols", ",".join(SYMBOLS), "--start", START, "--end", END, "--plot", str(plot),
                          "--config", str(REPO / "config" / "strategy_overrides.yaml.example"),
                          "--output", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(out.read_text())
    assert "fills" not in report and "equity_curve" not in report  # --plot alone keeps the JSON as it was
    page = browser.open(plot.as_uri(), 1400, 900)
    page.wait_for("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4", 20)
    kinds = page.js("[...document.querySelectorAll('.js-plotly-plot')].flatMap(g => g.data.map(t => t.type || 'scatter'))")
    assert {"candlestick", "heatmap", "bar", "scatter"} <= set(kinds)
    names = page.js("[...document.querySelectorAll('.js-plotly-plot')].flatMap(g => g.data.map(t => t.name))")
    assert {"equity (marked to market)", "drawdown %", "ema_fast", "bb_upper", "OPEN", "CLOSE"} <= set(names)
    hover = page.js("[...document.querySelectorAll('.js-plotly-plot')].flatMap(g => g.data).find(t => t.name === 'CLOSE').hovertext[0]")
    assert "price" in hover and "size" in hover and "pnl" in hover and "UTC" in hover
    assert "SYNTHETIC DATA" in page.js("document.getElementById('synthetic-banner').textContent")
    assert page.console_errors() == []
    shoot(page, tmp_path, "replay_plot")
    page.close()


def test_plot_refuses_an_unwritable_path_before_replaying(demo, tmp_path):
    (tmp_path / "plain_file").write_text("x")
    res = subprocess.run([sys.executable, "-m", "tools.backtester", "replay", "--candles-db", str(demo["candles_1h"]),
                          "--plot", str(tmp_path / "plain_file" / "x.html"),
                          "--config", str(REPO / "config" / "strategy_overrides.yaml.example")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "error: --plot" in res.stderr and "not a directory" in res.stderr


# ------------------------------------------------------------------------- factory report.html
def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def build_run_dir(root: Path, market, demo) -> Path:
    """A factory run directory in the layout factory/pipeline.py writes, every figure from real
    canonical replays of the demo data: a 3x3 grid (the sweep rows), the best one replayed with
    trades and equity, walk-forward folds, slippage levels, sensitivity notches and a Monte Carlo
    reshuffle of its trades. report.json carries the walk_forward/overfitting keys of the new selection."""
    from strategy.config import apply_overrides

    run = root / "run_t1"
    rows = []
    for sl in (1.5, 2.5, 3.5):
        for tp in (3.0, 6.0, 9.0):
            ov = {"trade.sl_atr_mult": sl, "trade.tp_atr_mult": tp}
            rep = replay(apply_overrides(base_config(), ov), market, with_trades=False)
            rows.append({"overrides": ov, **{k: rep[k] for k in ("total_pnl", "total_trades", "max_drawdown_pct",
                                                                  "win_rate", "profit_factor", "sharpe")}})
    (run / "sweeps").mkdir(parents=True)
    (run / "sweeps" / "sweep_results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    best = max(rows, key=lambda r: r["total_pnl"])
    cfg = apply_overrides(base_config(), best["overrides"])
    rep = replay(cfg, market, with_trades=True, with_equity=True)
    write_json(run / "replays" / "candidate_1.replay.json", rep)
    from factory.report_html import write_candidate_plot

    write_candidate_plot(run, "candidate_1", rep, market, cfg, [demo["candles_1h"]])
    folds, stitched_t, stitched_eq = [], [], []
    edges = np.linspace(rep["start_ms"], rep["end_ms"], 4).astype(np.int64)
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        w = replay(cfg, market, start_ms=int(a), end_ms=int(b), with_equity=True)
        folds.append({"start_ms": int(a), "end_ms": int(b), "oos_return_pct": w["return_pct"],
                      "total_trades": w["total_trades"], "max_drawdown_pct": w["max_drawdown_pct"]})
        scale = (stitched_eq[-1] if stitched_eq else 10_000.0) / w["initial_balance"]
        stitched_t += w["equity_curve"]["t_ms"]
        stitched_eq += [e * scale for e in w["equity_curve"]["equity"]]
    write_json(run / "gates" / "walk_forward" / "candidate_1" / "summary.json", {"gate": "walk_forward", "windows": folds})
    slip = {f"{b:g}": replay(cfg, market, slippage_bps=b)["total_pnl"] for b in (10.0, 20.0, 30.0)}
    write_json(run / "gates" / "slippage" / "candidate_1" / "summary.json", {"gate": "slippage", "pnl_by_bps": slip})
    variants = [{"path": p, "from": v, "to": v + d, "total_pnl": replay(apply_overrides(cfg, {p: v + d}), market)["total_pnl"],
                 "total_trades": 0} for p, v in best["overrides"].items() for d in (-0.1, 0.1)]
    write_json(run / "gates" / "sensitivity" / "candidate_1" / "summary.json", {"gate": "sensitivity", "variants": variants})
    pnl = np.array([t["pnl"] for t in rep["trades"]])
    rng = np.random.default_rng(1)
    finals = [pnl[rng.permutation(len(pnl))].sum() / 10_000.0 for _ in range(200)]
    dds = [curve_dd(10_000.0 + np.cumsum(pnl[rng.permutation(len(pnl))])) for _ in range(200)]
    ci = {name: {f"p{q}": float(np.percentile(v, q)) for q in (5, 25, 50, 75, 95)} for name, v in
          (("return_pct", finals), ("max_drawdown_pct", dds))}
    write_json(run / "gates" / "monte_carlo" / "candidate_1" / "summary.json",
               {"gate": "monte_carlo", "iterations": 200, "monte_carlo_ci": {**ci, "prob_loss": 0.0}})
    item = {"rank": 1, "config_id": rep["config_id"], "sort_by": "pnl", "replay_report_path": str(run / "replays" / "candidate_1.replay.json"),
            "replay_equivalence_status": "pass", "rejected": False, "score_v1": 0.0,
            **{k: rep[k] for k in ("total_pnl", "total_trades", "win_rate", "profit_factor", "max_drawdown_pct", "sharpe")}}
    write_json(run / "reports" / "report.json", {
        "run_id": "t1", "profile": "smoke", "items": [item],
        "walk_forward": {"folds": folds, "stitched_oos_equity": {"t_ms": stitched_t, "equity": stitched_eq},
                         "efficiency": 0.5},
        "overfitting": {"pbo": 0.25, "deflated_sharpe": 0.9}})
    write_json(run / "reports" / "selection.json", {"selected": {"config_id": rep["config_id"]}})
    write_json(run / "run_metadata.json", {"args": {"candles_db": str(demo["candles_1h"])}})
    return run


def curve_dd(equity: np.ndarray) -> float:
    peak = np.maximum.accumulate(equity)
    return float(np.max((peak - equity) / peak))


def test_report_html_opens_in_chromium_with_every_section(tmp_path, market, demo, browser):  # noqa: F811
    from factory.report_html import write_report_html

    run = build_run_dir(tmp_path, market, demo)
    path = write_report_html(run)
    assert path == run / "reports" / "report.html"
    page = browser.open(path.as_uri(), 1400, 900)
    page.wait_for("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 7", 20)
    text = page.js("document.body.innerText")
    for heading in ("Candidates", "Sweep landscape", "Walk-forward folds", "Overfitting", "Slippage curve",
                    "Monte Carlo", "Sensitivity", "Equity of the selected candidate"):
        assert heading in text
    assert "in this run's evidence" not in text  # every section found its evidence
    kinds = page.js("[...document.querySelectorAll('.js-plotly-plot')].flatMap(g => g.data.map(t => t.type || 'scatter'))")
    assert {"heatmap", "bar", "box", "scatter"} <= set(kinds)
    names = page.js("[...document.querySelectorAll('.js-plotly-plot')].flatMap(g => g.data.map(t => t.name))")
    assert "stitched out-of-sample equity" in names and "equity (marked to market)" in names
    assert "pbo" in text and "2025-04" in text and "UTC" in text
    assert "SYNTHETIC DATA" in text
    assert page.js("document.querySelector('a[href=\"../replays/candidate_1.replay.html\"]') !== null")
    assert page.console_errors() == []
    shoot(page, tmp_path, "factory_report")
    page.close()


def test_report_html_of_a_run_without_optional_evidence_still_renders(tmp_path, browser):  # noqa: F811
    from factory.report_html import write_report_html

    run = tmp_path / "run_empty"
    write_json(run / "reports" / "report.json", {"run_id": "empty", "profile": "smoke", "items": []})
    page = browser.open(write_report_html(run).as_uri())
    assert page.js("document.querySelectorAll('p.note').length") >= 6
    assert page.console_errors() == []
    shoot(page, tmp_path, "factory_report_empty")
    page.close()


# ------------------------------------------------------------------------- optuna
SPEC = """\
axes:
  - path: trade.sl_atr_mult
    range: {start: 1.0, stop: 3.0, step: 0.25}
  - path: trade.tp_atr_mult
    values: [3.0, 4.5, 6.0, 9.0]
  - path: indicators.ema_fast_window
    range: {start: 8, stop: 20, step: 4}
lookback: 120
"""


@pytest.fixture(scope="module")
def tpe_study(demo, tmp_path_factory):
    """A real `backtester sweep --tpe` (neighbourhoods of 8) into a SQLite storage."""
    root = tmp_path_factory.mktemp("tpe")
    (root / "spec.yaml").write_text(SPEC)
    storage = f"sqlite:///{root / 'tpe.sqlite3'}"
    res = subprocess.run([sys.executable, "-m", "tools.backtester", "sweep", "--sweep-spec", str(root / "spec.yaml"),
                          "--candles-db", str(demo["candles_1h"]), "--symbols", "BTC,ETH,SOL", "--start", "2025-05-01",
                          "--backend", "cpu", "--tpe", "--trials", "48", "--neighborhood", "8", "--batch", "16",
                          "--storage", storage, "--study-name", "demo_sweep", "--objective", "balanced",
                          "--output", str(root / "rows.jsonl"), "--no-progress"],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return {"root": root, "storage": storage, "stdout": res.stdout}


def test_tpe_study_holds_real_values_a_named_objective_and_every_candidate(tpe_study):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    assert f"optuna-dashboard {tpe_study['storage']}" in " ".join(tpe_study["stdout"].split())
    study = optuna.load_study(study_name="demo_sweep", storage=tpe_study["storage"])
    assert study.metric_names == ["best of neighbourhood: balanced = return - 2 x max drawdown"]
    allowed = {"trade.sl_atr_mult": {1.0 + 0.25 * k for k in range(9)}, "trade.tp_atr_mult": {3.0, 4.5, 6.0, 9.0},
               "indicators.ema_fast_window": {8, 12, 16, 20}}
    for t in study.trials:
        assert set(t.params) == set(allowed)
        assert all(v in allowed[k] for k, v in t.params.items()), t.params
    assert isinstance(study.trials[0].params["indicators.ema_fast_window"], int)
    journal = tpe_study["root"] / "tpe.candidates.journal"
    every = optuna.load_study(study_name="demo_sweep", storage=JournalStorage(JournalFileBackend(str(journal))))
    assert len(every.trials) == 48 == every.user_attrs["candidates_evaluated"]
    assert every.metric_names == ["balanced = return - 2 x max drawdown"]
    rows = [json.loads(line) for line in (tpe_study["root"] / "rows.jsonl").read_text().splitlines()]
    seen = {tuple(sorted(t.params.items())) for t in every.trials}
    assert all(tuple(sorted(r["overrides"].items())) in seen for r in rows)  # every ranked row is in the study


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_optuna_dashboard_labels_the_search_in_chromium(tpe_study, tmp_path, browser):  # noqa: F811
    exe = Path(sys.executable).with_name("optuna-dashboard")
    if not exe.exists():
        pytest.skip("optuna-dashboard not installed (the [plots] extra)")
    port = free_port()
    proc = subprocess.Popen([str(exe), tpe_study["storage"], "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        page = browser.open(f"http://127.0.0.1:{port}/dashboard/studies/1", 1400, 1000)
        page.wait_for("document.body.innerText.includes('trade.sl_atr_mult')", 30)
        text = page.js("document.body.innerText")
        assert "balanced = return - 2 x max drawdown" in text and "Objective 0" not in text
        assert "indicators.ema_fast_window:" in text
        assert page.console_errors() == []
        shoot(page, tmp_path, "optuna_dashboard")
        page.close()
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_report_html_of_a_real_factory_smoke_run(demo, tmp_path, browser):  # noqa: F811
    """`factory run --profile smoke` on the demo data, then report.html of its run directory."""
    from factory.report_html import write_report_html

    spec = tmp_path / "tiny.yaml"
    spec.write_text("axes:\n  - path: trade.sl_atr_mult\n    values: [1.5, 2.5]\n  - path: trade.tp_atr_mult\n"
                    "    values: [4.0, 6.0]\nlookback: 120\ninitial_balance: 10000\n")
    res = subprocess.run([sys.executable, "-m", "factory.cli", "run", "--profile", "smoke", "--candles-db",
                          str(demo["candles_1h"]), "--funding-db", str(demo["funding"]), "--sweep-spec", str(spec),
                          "--shortlist", "2", "--replay", "1", "--artifacts-dir", str(tmp_path / "art"), "--run-id", "p1",
                          "--no-deploy", "--no-progress", "--start", START, "--end", END, "--symbols", ",".join(SYMBOLS)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    (run,) = (tmp_path / "art").glob("*/run_p1")
    page = browser.open(write_report_html(run).as_uri(), 1400, 900)
    page.wait_for("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 5", 30)
    assert "SYNTHETIC DATA" in page.js("document.body.innerText")
    assert page.console_errors() == []
    shoot(page, tmp_path, "factory_report_real_run")
    page.close()
