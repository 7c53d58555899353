"""Release blocker (fail-closed, injected clock) and the registry's lifecycle state machine."""

from __future__ import annotations

import json
import sqlite3

import pytest

from factory.registry import LifecycleError, Registry
from factory.release_blocker import DEFAULT_BLOCKER_PATH, blocker_path, read_blocker, write_blocker

NOW = 1_764_000_000_000
H = 3_600_000


def test_path_resolution_order(tmp_path, monkeypatch):
    monkeypatch.delenv("AI_QUANT_REPLAY_GATE_BLOCKER_FILE", raising=False)
    monkeypatch.delenv("AI_QUANT_REPLAY_GATE_BUNDLE_ROOT", raising=False)
    assert blocker_path() == DEFAULT_BLOCKER_PATH
    monkeypatch.setenv("AI_QUANT_REPLAY_GATE_BUNDLE_ROOT", str(tmp_path / "bundles"))
    assert blocker_path() == tmp_path / "bundles" / "release_blocker.json"
    monkeypatch.setenv("AI_QUANT_REPLAY_GATE_BLOCKER_FILE", str(tmp_path / "b.json"))
    assert blocker_path() == tmp_path / "b.json"
    assert blocker_path(tmp_path / "x.json") == tmp_path / "x.json"


def test_green_red_missing_stale(tmp_path, monkeypatch):
    monkeypatch.delenv("AI_QUANT_REPLAY_GATE_MAX_AGE_MINUTES", raising=False)
    p = tmp_path / "release_blocker.json"
    missing = read_blocker(p, now_ms=NOW)
    assert (missing.ok, missing.blocked) == (False, True) and "missing" in missing.reason_line

    write_blocker(p, False, [], "r.json", {"start_ms": 1}, NOW - H, generated_at_ms=NOW - 2 * H)
    green = read_blocker(p, now_ms=NOW)
    assert green.ok and not green.blocked and green.age_ms == 2 * H

    write_blocker(p, False, [], None, None, None, generated_at_ms=NOW - int(7.2 * H))
    stale = read_blocker(p, now_ms=NOW)
    assert not stale.ok and stale.stale
    assert stale.reason_line == f"release blocker stale: generated 7.2 h ago > 6.0 h ({p})"
    monkeypatch.setenv("AI_QUANT_REPLAY_GATE_MAX_AGE_MINUTES", "600")
    assert read_blocker(p, now_ms=NOW).ok

    write_blocker(p, True, ["deterministic_logic_divergence"], None, None, None, generated_at_ms=NOW - 60_000)
    red = read_blocker(p, now_ms=NOW)
    assert not red.ok and red.reasons == ["deterministic_logic_divergence"]
    assert red.reason_line.startswith("release blocker red: deterministic_logic_divergence")


@pytest.mark.parametrize("payload, fragment", [
    ("{broken", "unreadable"),
    ('{"blocked": "false", "generated_at_ms": 1764000000000}', "blocked is 'false'"),
    ('{"blocked": false, "generated_at_ms": 0}', "generated_at_ms is 0"),
    ('{"blocked": false}', "generated_at_ms is None"),
    ("[1, 2]", "not a JSON object"),
])
def test_invalid_blockers_fail_closed(tmp_path, payload, fragment):
    p = tmp_path / "b.json"
    p.write_text(payload)
    st = read_blocker(p, now_ms=NOW)
    assert not st.ok and st.blocked and fragment in st.reason_line and "\n" not in st.reason_line


def test_write_blocker_schema(tmp_path):
    p = write_blocker(tmp_path / "b.json", True, ["insufficient_live_trades"], "rep.json",
                      {"start_ms": 1, "end_ms": 2, "interval": "1h"}, 123, bundle_dir="bd", generated_at_ms=NOW)
    data = json.loads(p.read_text())
    assert data == {"schema_version": 1, "generated_at_ms": NOW, "blocked": True,
                    "reason_codes": ["insufficient_live_trades"], "report_path": "rep.json", "bundle_dir": "bd",
                    "window": {"start_ms": 1, "end_ms": 2, "interval": "1h"}, "last_passed_at_ms": 123,
                    "detail": ""}
    assert list(tmp_path.iterdir()) == [p]  # no temp file left behind


def test_registry_tables_and_wal(tmp_path):
    reg = Registry(tmp_path / "registry" / "registry.sqlite")
    reg.record_run({"run_id": "r1", "generated_at_ms": NOW, "run_dir": "/x", "git_head": "abc", "profile": "smoke",
                    "status": "ok", "args": {"profile": "smoke"}})
    assert reg.record_config("c" * 64, "global: {}\n", "r1") is True
    assert reg.record_config("c" * 64, "global: {}\n", "r2") is False  # insert-once
    con = sqlite3.connect(reg.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "configs", "run_configs", "deployments", "lifecycle_events", "ramps"} <= tables
    assert con.execute("SELECT first_seen_run_id, lifecycle_state FROM configs").fetchone() == ("r1", "candidate")
    assert con.execute("SELECT profile, status, run_date_utc FROM runs").fetchone() == ("smoke", "ok", "2025-11-24")


def test_verdicts_and_lifecycle_transitions(tmp_path):
    reg = Registry(tmp_path / "reg.sqlite")
    cid = "d" * 64
    reg.record_config(cid, "global: {}\n", "r1")
    reg.record_verdict("r1", cid, {"rejected": True, "reject_reason": "slippage", "total_pnl": -5.0})
    assert reg.lifecycle(cid) == "candidate"
    proof = tmp_path / "eq.json"
    proof.write_text("{}")
    reg.record_verdict("r2", cid, {"candidate_mode": True, "schema_version": 1, "pipeline_stage": "candidate_validation",
                                   "sweep_stage": "cpu", "replay_stage": "cpu_replay", "validation_gate": "replay_only",
                                   "canonical_cpu_verified": True, "replay_equivalence_status": "pass",
                                   "replay_equivalence_count": 12, "replay_report_path": str(proof),
                                   "replay_equivalence_report_path": str(proof), "total_pnl": 42.0})
    assert [(v["run_id"], v["verdict"], v["deployable"]) for v in reg.verdicts(cid)] == \
        [("r1", "rejected", 0), ("r2", "deployable", 1)]
    assert reg.lifecycle(cid) == "validated"
    for state in ("paper", "live_small", "live_full", "paused", "retired"):
        assert reg.set_lifecycle(cid, state, f"to {state}")
    assert reg.set_lifecycle(cid, "retired", "again") is False
    with pytest.raises(LifecycleError, match="retired -> paper is not allowed"):
        reg.set_lifecycle(cid, "paper", "resurrect")
    with pytest.raises(LifecycleError, match="unknown lifecycle state"):
        reg.set_lifecycle(cid, "moon", "x")
    events = [(e["from_state"], e["to_state"]) for e in reg.lifecycle_events(cid)]
    assert events[0] == ("candidate", "validated") and events[-1] == ("paused", "retired") and len(events) == 6


def test_candidate_cannot_jump_to_live(tmp_path):
    reg = Registry(tmp_path / "reg.sqlite")
    reg.record_config("e" * 64, "global: {}\n", None)
    with pytest.raises(LifecycleError, match="candidate -> live_full"):
        reg.set_lifecycle("e" * 64, "live_full", "skip the line")


@pytest.mark.parametrize("env, explicit", [("0", None), ("-5", None), ("soon", None), (None, 0.0), (None, -1.0)])
def test_staleness_cannot_be_disabled(tmp_path, monkeypatch, env, explicit):
    """A max age <= 0 (or not a number) is invalid, not "no limit": a week-old green file stays red."""
    p = write_blocker(tmp_path / "b.json", False, [], None, None, None, generated_at_ms=NOW - 7 * 24 * H)
    if env is None:
        monkeypatch.delenv("AI_QUANT_REPLAY_GATE_MAX_AGE_MINUTES", raising=False)
    else:
        monkeypatch.setenv("AI_QUANT_REPLAY_GATE_MAX_AGE_MINUTES", env)
    st = read_blocker(p, max_age_minutes=explicit, now_ms=NOW)
    assert not st.ok and st.blocked and "must be a number of minutes > 0" in st.reason_line
    assert "\n" not in st.reason_line


def test_future_timestamp_and_wrong_schema_are_red(tmp_path, monkeypatch):
    monkeypatch.delenv("AI_QUANT_REPLAY_GATE_MAX_AGE_MINUTES", raising=False)
    p = tmp_path / "b.json"
    write_blocker(p, False, [], None, None, None, generated_at_ms=NOW + 4 * 60_000)
    assert read_blocker(p, now_ms=NOW).ok  # within the 5 min clock skew
    write_blocker(p, False, [], None, None, None, generated_at_ms=NOW + 6 * 60_000)
    future = read_blocker(p, now_ms=NOW)
    assert not future.ok and "timestamp in the future" in future.reason_line
    for schema in (2, None, "1", True):
        payload = {"schema_version": schema, "generated_at_ms": NOW - 60_000, "blocked": False}
        if schema is None:
            del payload["schema_version"]
        p.write_text(json.dumps(payload))
        st = read_blocker(p, now_ms=NOW)
        assert not st.ok and "schema_version" in st.reason_line, schema
