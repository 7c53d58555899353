"""deploy_paper / deploy_sweep_row / promote_to_live / rollback on real files, DBs and a real blocker."""

from __future__ import annotations

import json

import pytest
import yaml

from factory.deploy import (
    ConfigIdMismatch,
    DeployError,
    ReplayGateBlocked,
    apply_override_dict,
    config_id_of_text,
    deploy_paper,
    deploy_sweep_row,
    identify_config,
    rollback,
)
from factory.promotion import PromotionGates, evaluate_promotion_gates, promote_to_live, read_trading_rows
from factory.registry import Registry
from factory.release_blocker import write_blocker
from tests.test_promotion_fixtures import make_trading_db

NOW = 1_764_000_000_000
H = 3_600_000
CFG_A = "global:\n  trade:\n    sl_atr_mult: 1.5\n  engine:\n    interval: 1h\n"
CFG_B = "global:\n  trade:\n    sl_atr_mult: 2.5\n    slippage_bps: 10\n  engine:\n    interval: 1h\n"
CFG_C = "global:\n  trade:\n    sl_atr_mult: 3.0\n  engine:\n    interval: 30m\n"


@pytest.fixture()
def env(tmp_path):
    art = tmp_path / "artifacts"
    target = tmp_path / "config" / "strategy_overrides.yaml"
    target.parent.mkdir()
    target.write_text(CFG_A)
    green = tmp_path / "gate" / "release_blocker.json"
    write_blocker(green, False, [], None, None, NOW - H, generated_at_ms=NOW - H)
    files = {}
    for name, text in (("b.yaml", CFG_B), ("c.yaml", CFG_C)):
        files[name] = tmp_path / name
        files[name].write_text(text)
    return {"art": art, "target": target, "blocker": green, "reg": Registry(art / "registry" / "registry.sqlite"),
            **files, "tmp": tmp_path}


def early_green(env):
    """A blocker green as of a paper deploy 30 h before NOW (the fixture's is 29 h in its future)."""
    return write_blocker(env["tmp"] / "gate" / "early.json", False, [], None, None, None, generated_at_ms=NOW - 31 * H)


def paper(env, path, **kw):
    kw.setdefault("blocker_file", env["blocker"])
    return deploy_paper(str(path), target_yaml=env["target"], artifacts_dir=env["art"], reason="test",
                        registry=env["reg"], now_ms=kw.pop("now_ms", NOW), **kw)


def test_deploy_writes_three_files_and_replaces_yaml(env):
    res = paper(env, env["b.yaml"])
    assert env["target"].read_text() == CFG_B
    ddir = env["art"] / "deployments" / "paper" / f"20251124T160000000Z_{res.config_id[:12]}"
    assert res.deploy_dir == str(ddir)
    assert sorted(p.name for p in ddir.iterdir()) == ["deploy_event.json", "deployed_config.yaml", "prev_config.yaml"]
    assert (ddir / "prev_config.yaml").read_text() == CFG_A and (ddir / "deployed_config.yaml").read_text() == CFG_B
    ev = json.loads((ddir / "deploy_event.json").read_text())
    assert ev["version"] == "deploy_event_v1" and ev["why"] == "test" and ev["ts_utc"] == "2025-11-24T16:00:00+00:00"
    what = ev["what"]
    assert what["config_id"] == config_id_of_text(CFG_B) and what["yaml_path"] == str(env["target"])
    assert what["interval_changed"] is False and what["restart_required"] is False
    assert len(what["prev_sha256"]) == 64 and what["prev_sha256"] != what["next_sha256"]
    assert [p.name for p in env["target"].parent.iterdir()] == ["strategy_overrides.yaml"]  # no temp leftovers
    assert env["reg"].lifecycle(res.config_id) == "paper"
    assert [d["kind"] for d in env["reg"].deployments("paper")] == ["deploy"]


def test_interval_change_requires_restart(env):
    res = paper(env, env["c.yaml"])
    assert res.restart_required and res.event["what"]["prev_interval"] == "1h"
    assert res.event["what"]["next_interval"] == "30m"


@pytest.mark.parametrize("state", ["red", "missing", "stale"])
def test_deploy_refuses_unless_gate_green(env, state):
    blocker = env["tmp"] / "bad.json"
    if state == "red":
        write_blocker(blocker, True, ["market_data_alignment_gap"], None, None, None, generated_at_ms=NOW - 1000)
    elif state == "stale":
        write_blocker(blocker, False, [], None, None, None, generated_at_ms=NOW - 7 * H)
    with pytest.raises(ReplayGateBlocked, match=f"release blocker {state}"):
        paper(env, env["b.yaml"], blocker_file=blocker)
    assert env["target"].read_text() == CFG_A and not (env["art"] / "deployments").exists()
    res = paper(env, env["b.yaml"], blocker_file=blocker, ignore_replay_gate=True)
    assert env["target"].read_text() == CFG_B and "ignored" in res.event["replay_gate"]


def test_dry_run_changes_nothing(env):
    res = paper(env, env["b.yaml"], dry_run=True, blocker_file=env["tmp"] / "absent.json")
    assert res.dry_run and res.deploy_dir is None and "missing" in res.gate_line
    assert env["target"].read_text() == CFG_A and not env["art"].joinpath("deployments").exists()


def test_deploy_by_registry_id_and_bad_inputs(env):
    cid = config_id_of_text(CFG_B)
    env["reg"].record_config(cid, CFG_B, "r1")
    assert paper(env, cid[:12]).config_id == cid
    with pytest.raises(DeployError, match="neither a YAML file nor a unique config_id"):
        paper(env, "feedfacefeed")
    bad = env["tmp"] / "bad.yaml"
    bad.write_text("global:\n  trade:\n    sl_atr_mult: [1\n")
    with pytest.raises(DeployError, match="not valid YAML"):
        paper(env, bad)
    env["reg"].set_lifecycle(cid, "retired", "bad")
    with pytest.raises(DeployError, match="retired"):
        paper(env, env["b.yaml"])


def test_rollback_restores_previous_config(env):
    first = paper(env, env["b.yaml"], now_ms=NOW)
    second = paper(env, env["c.yaml"], now_ms=NOW + 1000)
    assert env["target"].read_text() == CFG_C
    assert env["reg"].lifecycle(first.config_id) == "paused"  # replaced by c
    res = rollback("paper", 1, artifacts_dir=env["art"], reason="bad fills", registry=env["reg"],
                   blocker_file=env["blocker"], now_ms=NOW + 2000)
    assert env["target"].read_text() == CFG_B and res.config_id == first.config_id
    assert res.deploy_dir.startswith(str(env["art"] / "rollbacks" / "paper"))
    assert res.restart_required  # 30m -> 1h
    assert env["reg"].lifecycle(first.config_id) == "paper"
    assert env["reg"].lifecycle(second.config_id) == "paused"
    assert [d["kind"] for d in env["reg"].deployments("paper")] == ["rollback", "deploy", "deploy"]
    again = rollback("paper", 1, artifacts_dir=env["art"], reason="twice", registry=env["reg"],
                     blocker_file=env["blocker"], now_ms=NOW + 3000)
    assert again.config_id == first.config_id and env["target"].read_text() == CFG_B  # idempotent
    rollback("paper", 2, artifacts_dir=env["art"], reason="further", registry=env["reg"],
             blocker_file=env["blocker"], now_ms=NOW + 4000)
    assert env["target"].read_text() == CFG_A
    with pytest.raises(DeployError, match="2 deploy"):
        rollback("paper", 3, artifacts_dir=env["art"], reason="x", blocker_file=env["blocker"], now_ms=NOW)
    with pytest.raises(ReplayGateBlocked):
        rollback("paper", 1, artifacts_dir=env["art"], reason="x", blocker_file=env["tmp"] / "nope", now_ms=NOW)


def test_deploy_sweep_row_applies_overrides(env):
    sweep = env["tmp"] / "sweep_results.jsonl"
    best = {"trade.sl_atr_mult": 2.0, "global.trade.tp_atr_mult": 5.0}
    best_id = identify_config(apply_override_dict(yaml.safe_load(CFG_C), best), "test")
    rows = [{"config_id": "x1", "overrides": {"trade.sl_atr_mult": 1.0}, "total_pnl": 10.0},
            {"config_id": best_id, "overrides": best, "total_pnl": 30.0}]
    sweep.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = deploy_sweep_row(sweep, 1, base_config=env["c.yaml"], target_yaml=env["target"], artifacts_dir=env["art"],
                           reason="sweep", registry=env["reg"], blocker_file=env["blocker"], now_ms=NOW)
    deployed = yaml.safe_load(env["target"].read_text())
    assert deployed["global"]["trade"] == {"sl_atr_mult": 2.0, "tp_atr_mult": 5.0}
    assert deployed["global"]["engine"] == {"interval": "30m"}
    assert res.event["source"]["sweep_config_id"] == best_id == res.config_id
    with pytest.raises(DeployError, match="rank 3 out of range 1..2"):
        deploy_sweep_row(sweep, 3, base_config=env["c.yaml"], target_yaml=env["target"], reason="x",
                         blocker_file=env["blocker"], now_ms=NOW)
    with pytest.raises(DeployError, match="refuses live targets"):
        deploy_sweep_row(sweep, 1, base_config=env["c.yaml"], target_yaml=env["tmp"] / "strategy_overrides.live.yaml",
                         reason="x", blocker_file=env["blocker"], now_ms=NOW)


def test_deploy_sweep_row_refuses_a_row_of_another_config(env):
    """A row whose config_id is not base + overrides (the sweep ran on another base) is refused with
    one line naming both ids; --allow-config-id-mismatch deploys it anyway."""
    sweep = env["tmp"] / "sweep_results.jsonl"
    ov = {"trade.sl_atr_mult": 2.0}
    on_b = identify_config(apply_override_dict(yaml.safe_load(CFG_B), ov), "test")  # swept over b.yaml
    on_c = identify_config(apply_override_dict(yaml.safe_load(CFG_C), ov), "test")
    sweep.write_text(json.dumps({"config_id": on_b, "overrides": ov, "total_pnl": 1.0}) + "\n")
    before = env["target"].read_text()
    kw = dict(base_config=env["c.yaml"], target_yaml=env["target"], artifacts_dir=env["art"], reason="x",
              blocker_file=env["blocker"], now_ms=NOW)
    with pytest.raises(ConfigIdMismatch) as err:
        deploy_sweep_row(sweep, 1, **kw)
    assert on_b[:12] in str(err.value) and on_c[:12] in str(err.value) and "\n" not in str(err.value)
    assert env["target"].read_text() == before and not (env["art"] / "deployments").exists()
    res = deploy_sweep_row(sweep, 1, allow_config_id_mismatch=True, **kw)
    assert res.config_id == on_c and res.event["source"]["config_id_mismatch_allowed"] is True


# --- promotion ---------------------------------------------------------------------------------
def iso(ms: int) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def paper_rows(since: int, n_round_trips: int, win: float, loss: float, every_third_loses: bool = True):
    """Round trips of 1,000 USD notional each: OPEN fee 0.45, CLOSE with pnl, fee 0.45."""
    rows, bal = [], 10_000.0
    for i in range(n_round_trips):
        t = since + (i + 1) * 600_000
        pnl = -loss if every_third_loses and i % 3 == 2 else win
        bal -= 0.45
        rows.append((iso(t), "BTC", "LONG", "OPEN", 100.0, 10.0, 1000.0, 0.0, 0.45, bal))
        bal += pnl - 0.45
        rows.append((iso(t + 300_000), "BTC", "LONG", "CLOSE", 100.0 + pnl / 10, 10.0, 1000.0 + pnl, pnl, 0.45, bal))
    return rows


def test_promotion_gates_with_real_numbers(tmp_path):
    since = NOW - 30 * H
    db = make_trading_db(tmp_path / "paper.db", paper_rows(since, 21, win=8.0, loss=4.0))
    rows = read_trading_rows(db, since, NOW)
    rep = evaluate_promotion_gates(rows, 0, since_ms=since, now_ms=NOW, config_slippage_bps=10.0)
    # 14 wins of 8 - 0.45 = 7.55, 7 losses of 4 + 0.45 = 4.45, 21 entry fees of 0.45
    assert rep["close_trades"] == 21
    pf = next(c for c in rep["checks"] if c["name"] == "profit_factor")["value"]
    assert pf == pytest.approx(14 * 7.55 / (7 * 4.45))  # 3.39
    assert rep["net_pnl"] == pytest.approx(14 * 7.55 - 7 * 4.45 - 21 * 0.45)  # 65.10
    # stress: 42 legs, notional 1000 (+pnl on closes), 10 extra bps each
    notional = 21 * 1000 + sum(1000 + p for p in [8.0 if i % 3 != 2 else -4.0 for i in range(21)])
    assert rep["stress_cost"] == pytest.approx(notional * 10 / 1e4)
    assert rep["stress_cost"] == pytest.approx(42.084)
    assert rep["passed"] is True  # 65.10 - 42.08 = +23.0 at 20 bps
    dd = next(c for c in rep["checks"] if c["name"] == "max_drawdown_pct")["value"]
    assert 0 < dd < 0.1
    # a fragile edge: positive at 10 bps, negative at 20 bps
    rep2 = evaluate_promotion_gates(rows, 0, since_ms=since, now_ms=NOW, config_slippage_bps=0.0)
    assert rep2["net_pnl"] - 42_000 * 20 / 1e4 < 0 and not rep2["passed"]
    # a kill event and thin evidence fail their gates
    rep3 = evaluate_promotion_gates(rows[:10], 1, since_ms=NOW - 2 * H, now_ms=NOW, config_slippage_bps=10.0,
                                    gates=PromotionGates())
    failed = {c["name"] for c in rep3["checks"] if not c["ok"]}
    assert {"evidence", "kill_events"} <= failed


def test_promote_ramp_25_50_100(env):
    reg = env["reg"]
    deployed = paper(env, env["b.yaml"], now_ms=NOW - 30 * H, blocker_file=early_green(env))
    cid = deployed.config_id
    db = make_trading_db(env["tmp"] / "paper.db", paper_rows(NOW - 30 * H, 21, win=8.0, loss=4.0))
    live_db = make_trading_db(env["tmp"] / "live.db", [])
    live_yaml = env["tmp"] / "config" / "strategy_overrides.live.yaml"
    kw = dict(config_id=cid[:12], live_yaml_path=live_yaml, registry=reg, artifacts_dir=env["art"],
              blocker_file=env["blocker"], live_db=live_db)
    preview = promote_to_live(db, now_ms=NOW, **kw)
    assert preview.action == "would_promote" and preview.size_multiplier == 0.25 and not live_yaml.exists()
    with pytest.raises(ReplayGateBlocked):
        promote_to_live(db, now_ms=NOW, apply=True, **{**kw, "blocker_file": env["tmp"] / "missing.json"})
    res = promote_to_live(db, now_ms=NOW, apply=True, **kw)
    assert res.action == "promoted" and reg.lifecycle(cid) == "live_small"
    assert yaml.safe_load(live_yaml.read_text())["global"]["trade"]["size_multiplier"] == 0.25
    assert reg.ramp(cid)["step"] == 0
    assert promote_to_live(db, now_ms=NOW + 23 * H, apply=True, **kw).action == "wait"
    with pytest.raises(ReplayGateBlocked, match="stale"):  # the blocker must be fresh for every step
        promote_to_live(db, now_ms=NOW + 25 * H, apply=True, **kw)

    def refresh(at):
        write_blocker(env["blocker"], False, [], None, None, at, generated_at_ms=at)

    refresh(NOW + 25 * H)
    res = promote_to_live(db, now_ms=NOW + 25 * H, apply=True, **kw)
    assert res.action == "promoted" and res.size_multiplier == 0.5
    # a kill event during the 50 % day holds the ramp
    make_trading_db(live_db, [], kills=[iso(NOW + 30 * H)])
    held = promote_to_live(db, now_ms=NOW + 50 * H, apply=True, **kw)
    assert held.action == "ramp_blocked" and not held.ok
    assert yaml.safe_load(live_yaml.read_text())["global"]["trade"]["size_multiplier"] == 0.5
    reg.set_ramp(cid, "live", 1, 0.5, 1.0, NOW + 31 * H, str(live_yaml))  # a clean day after the kill
    refresh(NOW + 56 * H)
    res = promote_to_live(db, now_ms=NOW + 56 * H, apply=True, **kw)
    assert res.size_multiplier == 1.0 and reg.lifecycle(cid) == "live_full"
    assert promote_to_live(db, now_ms=NOW + 90 * H, apply=True, **kw).action == "complete"
    assert [d["kind"] for d in reg.deployments("live")] == ["promote"] * 3
    assert len(list((env["art"] / "deployments" / "live").iterdir())) == 3


def test_promote_refuses_when_gates_fail(env):
    deployed = paper(env, env["b.yaml"], now_ms=NOW - 30 * H, blocker_file=early_green(env))
    db = make_trading_db(env["tmp"] / "paper.db", paper_rows(NOW - 30 * H, 21, win=4.0, loss=6.0))
    res = promote_to_live(db, config_id=deployed.config_id, live_yaml_path=env["tmp"] / "live.yaml",
                          registry=env["reg"], artifacts_dir=env["art"], apply=True, blocker_file=env["blocker"],
                          now_ms=NOW)
    assert res.action == "gates_failed" and not res.ok and "profit_factor" in res.message
    assert not (env["tmp"] / "live.yaml").exists()
