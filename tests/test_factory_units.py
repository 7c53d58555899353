"""Pure parts of the factory: equivalence, gates, score_v1, shortlist, deployable predicate, ranking."""

from __future__ import annotations

import copy
import io
import json

import pytest

from factory import equivalence, gates, scoring
from factory.jsonio import read_json, write_json_atomic
from factory.profiles import ProfileError, resolve_profile
from factory.selection import build_selection, is_deployable, rank_candidates, why_not_deployable
from factory.shortlist import balanced_score, build_shortlist

IB = 10_000.0


def _trade(i, pnl, fee=0.45):
    return {"symbol": ["BTC", "ETH", "SOL"][i % 3], "side": "LONG" if i % 2 else "SHORT",
            "entry_time_ms": 1_700_000_000_000 + i * 3_600_000, "exit_time_ms": 1_700_000_000_000 + (i + 5) * 3_600_000,
            "entry_reason": "signal", "exit_reason": "stop_loss", "size": 0.01 * (i + 1), "pnl": pnl, "fees": fee}


def _replay(trades):
    pnl = sum(t["pnl"] for t in trades)
    fees = sum(t["fees"] for t in trades)
    return {"config_id": "c" * 64, "total_trades": len(trades), "total_pnl": pnl, "total_fees": fees,
            "final_balance": IB + pnl, "max_drawdown_pct": 0.0731, "win_rate": 0.5, "profit_factor": 1.37,
            "trades": trades}


def _sweep_row(rep):
    return {k: rep[k] for k in ("config_id", "total_trades", "total_pnl", "total_fees", "final_balance",
                                "max_drawdown_pct", "win_rate", "profit_factor")} | {"backend": "cpu"}


def test_equivalence_passes_on_identical_executions_and_counts_fields_and_trades():
    trades = [_trade(i, (-1) ** i * 12.5) for i in range(6)]
    rep = _replay(trades)
    out = equivalence.compare_sweep_to_replay(_sweep_row(rep), rep, copy.deepcopy(trades), initial_balance=IB)
    assert out["status"] == "pass" and out["failure_code"] is None
    assert out["count"] == 7 + 6  # 7 compared metrics + 6 trades
    assert out["tolerances"]["money_abs"] == pytest.approx(1e-2)


def test_equivalence_fails_with_the_differing_fields_when_one_fee_changed():
    trades = [_trade(i, 10.0) for i in range(4)]
    rep = _replay(trades)
    broken = copy.deepcopy(trades)
    broken[2]["fees"] += 0.9
    broken[2]["pnl"] -= 0.9  # the sweep charged one execution a different fee
    row = _sweep_row(_replay(broken))
    out = equivalence.compare_sweep_to_replay(row, rep, broken, initial_balance=IB)
    assert out["status"] == "fail" and out["failure_code"] == "metric_mismatch"
    paths = {d["path"] for d in out["diffs"]}
    assert {"total_pnl", "total_fees", "final_balance", "trades[2].pnl"} <= paths
    assert "total_trades" not in paths
    d = next(d for d in out["diffs"] if d["path"] == "total_fees")
    assert d["sweep"] - d["replay"] == pytest.approx(0.9)


def test_equivalence_trade_count_and_trace_mismatch_codes_and_diff_cap():
    trades = [_trade(i, 1.0) for i in range(40)]
    rep = _replay(trades)
    row = _sweep_row(rep)
    row["total_trades"] = 41
    assert equivalence.compare_sweep_to_replay(row, rep, None, initial_balance=IB)["failure_code"] == "trade_count_mismatch"
    moved = copy.deepcopy(trades)
    for t in moved:
        t["exit_reason"] = "take_profit"
    out = equivalence.compare_sweep_to_replay(_sweep_row(rep), rep, moved, initial_balance=IB)
    assert out["failure_code"] == "trace_mismatch" and len(out["diffs"]) == 25 and out["diff_count"] == 40


def test_equivalence_f32_bound_is_looser_and_stated():
    rep = _replay([_trade(i, 3.0) for i in range(3)])
    row = _sweep_row(rep)
    row["total_pnl"] += 5.0  # 5 USD off: beyond f64 (0.01) but inside f32 (10)
    row["final_balance"] += 5.0
    assert equivalence.compare_sweep_to_replay(row, rep, None, initial_balance=IB)["status"] == "fail"
    out32 = equivalence.compare_sweep_to_replay(row, rep, None, initial_balance=IB, precision="f32")
    assert out32["status"] == "pass" and out32["tolerances"]["money_abs"] == pytest.approx(10.0)
    row["total_pnl"] += 20.0
    assert equivalence.compare_sweep_to_replay(row, rep, None, initial_balance=IB, precision="f32")["status"] == "fail"


def test_stability_windows_and_summary_are_in_sample():
    day = gates.DAY_MS
    w = gates.stability_windows(0, 40 * day, 3)
    assert w == [(10 * day, 20 * day), (20 * day, 30 * day), (30 * day, 40 * day)]
    s = gates.stability_summary(
        [{"start_ms": a, "end_ms": b, "total_pnl": p, "max_drawdown_pct": dd, "total_trades": 9}
         for (a, b), p, dd in zip(w, [100.0, -50.0, 300.0], [0.05, 0.12, 0.08], strict=True)], IB)
    assert s["gate"] == "stability" and s["in_sample"] is True
    assert s["stability_median_daily_return"] == pytest.approx(100.0 / IB / 10)
    assert s["stability_max_drawdown"] == pytest.approx(0.12) and s["passed"]
    assert not any("oos" in k or "out_of_sample" in k for k in s)  # never called out-of-sample
    neg = gates.stability_summary([{"start_ms": 0, "end_ms": day, "total_pnl": -1.0, "max_drawdown_pct": 0.0,
                                    "total_trades": 1}], IB)
    assert not neg["passed"] and "in-sample" in neg["reason"]


def test_walk_forward_gate_reads_the_run_level_out_of_sample_result():
    assert not gates.walk_forward_gate(None)["passed"]
    run = {"wf_median_oos_daily_return": 0.001, "wf_max_oos_drawdown": 0.1, "efficiency": 0.6, "passed": True,
           "reason": None, "folds": [{}, {}, {}]}
    g = gates.walk_forward_gate(run)
    assert g["passed"] and g["folds"] == 3 and g["wf_median_oos_daily_return"] == 0.001


def test_slippage_concentration_min_trades():
    s = gates.slippage_summary({10.0: 800.0, 20.0: 300.0, 30.0: -200.0}, IB)
    assert s["passed"] and s["slippage_fragility"] == pytest.approx(0.05)
    assert not gates.slippage_summary({10.0: 50.0, 20.0: 0.0, 30.0: -9.0}, IB)["passed"]
    per = {f"S{i}": {"trades": 3, "pnl": p} for i, p in enumerate([30, 25, 20, 15, 10, 10, 10, -50])}
    c = gates.concentration_summary(per)
    assert c["passed"] and c["symbols_traded"] == 8
    assert c["top1_pnl_pct"] == pytest.approx(30 / 120) and c["top5_pnl_pct"] == pytest.approx(100 / 120)
    per["S0"]["pnl"] = 60.0  # top five now 130/150 = 87 %: still under 90 %
    c2 = gates.concentration_summary(per)
    assert c2["top5_pnl_pct"] == pytest.approx(130 / 150) and c2["passed"]
    per["S1"]["pnl"] = 200.0
    c3 = gates.concentration_summary(per)
    assert not c3["passed"] and "best symbol made" in c3["reason"] and "best 5 symbols made" in c3["reason"]
    few = gates.concentration_summary({"A": {"trades": 5, "pnl": 90.0}, "B": {"trades": 1, "pnl": 10.0}})
    assert not few["passed"] and "only 2 symbols traded" in few["reason"] and "best symbol made 90%" in few["reason"]
    assert gates.min_trades_summary(29)["reason"].startswith("insufficient evidence")
    assert gates.min_trades_summary(30)["passed"]


def test_monte_carlo_is_seeded_and_sane():
    pnls = [25.0, -10.0, 40.0, -30.0, 15.0] * 10
    a = gates.monte_carlo_summary(pnls, IB, 2000, 42)
    b = gates.monte_carlo_summary(pnls, IB, 2000, 42)
    assert a == b
    ci = a["monte_carlo_ci"]
    assert ci["return_pct"]["p5"] < ci["return_pct"]["p50"] < ci["return_pct"]["p95"]
    assert ci["return_pct"]["p50"] == pytest.approx(sum(pnls) / IB, abs=0.02)
    assert 0 < ci["max_drawdown_pct"]["p50"] < 0.05


def test_sensitivity_variants_step_key_axes():
    values = {"indicators.ema_fast_window": 2, "trade.sl_atr_mult": 2.0, "thresholds.entry.min_adx": 22.0}
    v = gates.sensitivity_variants(values.get)
    got = {(x["path"], x["to"]) for x in v}
    assert ("indicators.ema_fast_window", 3) in got and ("indicators.ema_fast_window", 1) not in got
    assert ("trade.sl_atr_mult", 1.9) in got and ("trade.sl_atr_mult", 2.1) in got
    s = gates.sensitivity_summary([{"total_pnl": 5.0}, {"total_pnl": -1.0}, {"total_pnl": 2.0}, {"total_pnl": 0.0}])
    assert s["sensitivity_positive_rate"] == 0.5 and s["sensitivity_median_pnl"] == 1.0


def test_score_v1_formula_and_verdict():
    assert scoring.score_v1(0.002, 0.1, 0.04, 30) == pytest.approx(0.002 - 0.2 - 0.02)
    assert scoring.score_v1(0.002, 0.1, 0.04, 15) == pytest.approx(0.002 - 0.2 - 0.02 - 0.025)
    assert "score_v1 =" in scoring.SCORE_V1_EXPLAINED and "\n" not in scoring.SCORE_V1_EXPLAINED
    summaries = {"walk_forward": {"wf_median_oos_daily_return": 0.001, "wf_max_oos_drawdown": 0.05, "passed": True},
                 "slippage": {"slippage_fragility": 0.02, "passed": False, "reason": "PnL at 20 bps is -3 <= 0"}}
    v = scoring.verdict(summaries, {"total_trades": 40})
    assert v["rejected"] and v["reject_reason"].startswith("slippage:")
    assert v["score_v1"] == pytest.approx(0.001 - 0.1 - 0.01)
    adv = scoring.verdict(summaries, {"total_trades": 40}, enforce=False)
    assert not adv["rejected"] and adv["gate_failures"] and adv["gate_mode"] == "advisory"


def test_shortlist_modes_dedup_and_ranks():
    rows = [
        {"config_id": "a", "total_pnl": 900.0, "max_drawdown_pct": 0.40, "profit_factor": 1.2, "sharpe": 0.5, "total_trades": 50},
        {"config_id": "b", "total_pnl": 500.0, "max_drawdown_pct": 0.05, "profit_factor": 2.0, "sharpe": 2.0, "total_trades": 50},
        {"config_id": "c", "total_pnl": 100.0, "max_drawdown_pct": 0.01, "profit_factor": 1.1, "sharpe": 0.2, "total_trades": 50},
        {"config_id": "d", "total_pnl": -50.0, "max_drawdown_pct": 0.001, "profit_factor": 0.8, "sharpe": -1, "total_trades": 50},
        {"config_id": "e", "total_pnl": 0.0, "max_drawdown_pct": 0.0, "profit_factor": 0.0, "sharpe": 0, "total_trades": 0},
    ]
    short = build_shortlist(rows, 3, ["pnl", "balanced", "dd"])
    assert [(r["config_id"], r["sort_by"], r["rank"]) for r in short] == [("a", "pnl", 1), ("c", "dd", 2), ("b", "pnl", 3)]
    assert len({r["config_id"] for r in build_shortlist(rows + rows, 10)}) == len(build_shortlist(rows + rows, 10))
    assert all(r["config_id"] not in ("d", "e") or r["sort_by"] != "dd" for r in build_shortlist(rows, 10))
    assert balanced_score(rows[1]) == pytest.approx(500 * 0.3 + 2.0 * 20 + 2.0 * 15 - 5.0)


def test_shortlist_collapses_identical_behaviours_into_one_row():
    """On the 2018 1h set two config_ids traded identically (PnL -686.12 each): one row, both ids."""
    rows = [{"config_id": c, "total_pnl": p, "max_drawdown_pct": 0.1, "profit_factor": 1.0, "sharpe": 0.1,
             "total_trades": 10} for c, p in (("a", -686.12), ("b", -700.0), ("c", -686.12), ("d", -900.0))]
    same = {"a": "h1", "b": "h2", "c": "h1", "d": "h3"}
    short = build_shortlist(rows, 3, ["pnl"], behaviour_of=same)
    assert [r["config_ids"] for r in short] == [["c", "a"], ["b"], ["d"]]  # ties: config_id order
    assert [r["rank"] for r in short] == [1, 2, 3] and short[0]["behaviour_checksum"] == "h1"
    assert [r["config_ids"] for r in build_shortlist(rows, 3, ["pnl"])] == [["c"], ["a"], ["b"]]


def _item(tmp_path, cid, score, pnl, **over):
    rep = tmp_path / f"{cid}.replay.json"
    eq = tmp_path / f"{cid}.replay_equivalence.json"
    rep.write_text("{}")
    eq.write_text("{}")
    item = {"config_id": cid, "config_path": str(tmp_path / f"{cid}.yaml"), "score_v1": score, "total_pnl": pnl,
            "max_drawdown_pct": 0.1, "total_trades": 40, "profit_factor": 1.3, "pipeline_stage": "candidate_validation",
            "sweep_stage": "cpu", "replay_stage": "cpu_replay", "validation_gate": "score_v1+walk_forward+slippage",
            "canonical_cpu_verified": True, "candidate_mode": True, "schema_version": 1,
            "replay_report_path": str(rep), "replay_equivalence_report_path": str(eq),
            "replay_equivalence_status": "pass", "replay_equivalence_count": 12, "rejected": False, "reject_reason": None}
    item.update(over)
    return item


def test_deployable_predicate_each_clause(tmp_path):
    ok = _item(tmp_path, "a", 0.1, 10.0)
    assert is_deployable(ok, tmp_path)
    for change, needle in [({"rejected": True, "reject_reason": "x"}, "rejected"), ({"candidate_mode": False}, "candidate_mode"),
                           ({"schema_version": 2}, "schema_version"), ({"sweep_stage": ""}, "sweep_stage"),
                           ({"canonical_cpu_verified": False}, "canonical_cpu_verified"),
                           ({"replay_equivalence_status": "fail"}, "'fail'"), ({"replay_equivalence_count": -1}, "count"),
                           ({"replay_equivalence_count": True}, "count"),
                           ({"replay_report_path": "/etc/hostname"}, "replay_report_path")]:
        bad = {**ok, **change}
        assert not is_deployable(bad, tmp_path)
        assert any(needle in w for w in why_not_deployable(bad, tmp_path)), (change, why_not_deployable(bad, tmp_path))


def test_selection_ranking_and_always_written_document(tmp_path):
    items = [_item(tmp_path, "a", 0.1, 10.0), _item(tmp_path, "b", 0.3, 5.0), _item(tmp_path, "c", 0.3, 9.0),
             _item(tmp_path, "d", 0.9, 99.0, replay_equivalence_status="fail", canonical_cpu_verified=False)]
    assert [i["config_id"] for i in rank_candidates(items, tmp_path)] == ["c", "b", "a"]
    bundle = {k: str(tmp_path / f"{k}.x") for k in ("run_dir", "run_metadata_json", "report_json", "report_md")}
    bundle |= {"selection_json": str(tmp_path / "selection.json"), "selection_md": str(tmp_path / "selection.md")}
    sel = build_selection(items, run_id="r1", run_dir=tmp_path, bundle=bundle, no_deploy=True)
    assert sel["selection_stage"] == "selected" and sel["selected"]["config_id"] == "c"
    assert (sel["deploy_stage"], sel["promotion_stage"]) == ("no_deploy", "skipped")
    assert sel["version"] == "factory_selection_v1" and len(sel["selected_candidates"]) == 3
    none = build_selection(items[3:], run_id="r1", run_dir=tmp_path, bundle=bundle, no_deploy=False)
    assert none["selection_stage"] == "none_deployable" and none["selected"] is None
    assert none["not_deployable"][0]["config_id"] == "d"


def test_jsonio_sorted_atomic_and_nan_safe(tmp_path):
    import numpy as np

    p = write_json_atomic(tmp_path / "x" / "a.json", {"b": np.float64(1.5), "a": [np.int64(2), float("nan")], "é": "ü"})
    text = p.read_text(encoding="utf-8")
    assert text.index('"a"') < text.index('"b"') and "ü" in text
    assert read_json(p) == {"a": [2, None], "b": 1.5, "é": "ü"}
    assert not [f for f in p.parent.iterdir() if f.name.endswith(".tmp")]
    json.loads(text)


def test_profiles_table_and_overrides():
    smoke, daily, deep = (resolve_profile(n) for n in ("smoke", "daily", "deep"))
    assert smoke.max_candidates <= 2000 and (smoke.shortlist, smoke.replay) == (20, 3)
    assert daily.tpe and daily.trials >= 1_000_000 and (daily.shortlist, daily.replay) == (200, 5)
    assert deep.tpe and deep.trials >= 2_000_000 and (deep.shortlist, deep.replay) == (500, 10)
    assert resolve_profile("daily", {"trials": 50, "backend": "cpu"}).trials == 50
    with pytest.raises(ProfileError, match="unknown profile 'weekly'"):
        resolve_profile("weekly")
    with pytest.raises(ProfileError, match="gates"):
        resolve_profile("smoke", {"gates": ["walk_forward", "astrology"]})


def test_profiles_run_walk_forward_and_overfitting_by_default():
    from factory.profiles import KNOWN_GATES

    for name in ("daily", "deep"):
        p = resolve_profile(name)
        assert set(p.gates) == set(KNOWN_GATES) and p.gate_mode == "enforce"
        assert p.walk_forward.folds >= 3 and p.walk_forward.embargo_bars > 0
        assert p.walk_forward.fold_trials < p.trials  # a reduced per-fold budget
        assert p.overfitting.max_pbo <= 0.5 and p.overfitting.min_deflated_sharpe >= 0.9
    smoke = resolve_profile("smoke")
    assert set(smoke.gates) == set(KNOWN_GATES) and smoke.walk_forward.folds <= 2
    nested = resolve_profile("daily", {"walk_forward": {"folds": 5}})
    assert (nested.walk_forward.folds, nested.walk_forward.fold_trials) == (5, 200_000)  # one key, not the block
    with pytest.raises(ProfileError, match="overfitting.blocks"):
        resolve_profile("smoke", {"overfitting": {"blocks": 7}})
    with pytest.raises(ProfileError, match="walk_forward.scheme"):
        resolve_profile("smoke", {"walk_forward": {"scheme": "sideways"}})


def test_deploy_target_never_an_example_and_never_created(tmp_path, monkeypatch):
    """Without strategy_overrides.yaml the factory's deploy step skips with one line and leaves the
    *.example template (and everything else) untouched."""
    import factory.pipeline as pipeline
    from factory.pipeline import RunOptions, resolve_deploy_target, step_deploy
    from factory.release_blocker import write_blocker

    repo = tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    example = repo / "config" / "strategy_overrides.yaml.example"
    example.write_text("global: {}\n")
    monkeypatch.setattr(pipeline, "REPO_ROOT", repo)
    monkeypatch.delenv("AI_QUANT_STRATEGY_YAML", raising=False)
    monkeypatch.delenv("AI_QUANT_REPLAY_GATE_MAX_AGE_MINUTES", raising=False)
    blocker = write_blocker(tmp_path / "blocker.json", False, [], None, None, None)  # green: only the target stops it
    monkeypatch.setenv("AI_QUANT_REPLAY_GATE_BLOCKER_FILE", str(blocker))

    target, why = resolve_deploy_target(None)
    assert target is None and "strategy_overrides.yaml: not found" in why and "\n" not in why
    assert resolve_deploy_target(str(example))[0] is None
    assert "*.example" in resolve_deploy_target(str(example))[1]
    monkeypatch.setenv("AI_QUANT_STRATEGY_YAML", "config/paper.yaml")
    assert resolve_deploy_target(None) == (None, f"AI_QUANT_STRATEGY_YAML {repo / 'config/paper.yaml'}: not found "
                                                 "(the paper config must exist; pass --deploy-target)")
    (repo / "config" / "paper.yaml").write_text("global: {}\n")
    assert resolve_deploy_target(None) == (repo / "config" / "paper.yaml", "")
    assert resolve_deploy_target(str(tmp_path / "mine.yaml"))[0] is None  # the option wins over the env

    monkeypatch.delenv("AI_QUANT_STRATEGY_YAML")
    sel = {"selected": {"config_path": str(example), "config_id": "c" * 64}}
    log = io.StringIO()
    out = step_deploy(None, sel, RunOptions(artifacts_dir=str(tmp_path / "art")), log)
    assert out["deploy_stage"] == "skipped" and "not found" in out["deploy_reason"]
    assert example.read_text() == "global: {}\n"
    assert sorted(p.name for p in (repo / "config").iterdir()) == ["paper.yaml", "strategy_overrides.yaml.example"]
    assert not (tmp_path / "art").exists()


def test_exit_candles_db_without_an_exit_interval_says_it_has_no_effect(capsys, tmp_path):
    from factory.pipeline import RunOptions, resolve_exit_candles

    opts = RunOptions(profile="smoke", exit_candles_db=str(tmp_path / "candles_5m.db"))
    assert resolve_exit_candles(opts, None, []) == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--exit-candles-db has no effect" in err
