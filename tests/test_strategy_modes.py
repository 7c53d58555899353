"""Strategy modes: aliases, persistence, step-down on new kill events."""

from __future__ import annotations

import pytest

from live.clock import ManualClock
from live.env import RiskLimits
from live.risk import RiskManager
from live.strategy_modes import (
    ModeSwitcher,
    normalize_mode,
    read_mode_file,
    resolve_start_mode,
    restart_required,
    step_down,
    write_mode_file,
)

INTERVALS = {None: "1h", "primary": "30m", "fallback": "1h", "conservative": "1h", "flat": "1h"}


@pytest.mark.parametrize("raw,mode", [("m1", "primary"), ("MODE1", "primary"), ("m2", "fallback"),
                                      ("m3", "conservative"), ("safe", "conservative"), ("safety", "conservative"),
                                      ("halt", "flat"), ("pause", "flat"), (" Fallback ", "fallback")])
def test_aliases(raw, mode):
    assert normalize_mode(raw) == mode


def test_unknown_mode_is_one_line():
    with pytest.raises(ValueError, match=r"^AI_QUANT_STRATEGY_MODE='agressive' is not a strategy mode"):
        normalize_mode("agressive")


def test_step_down_chain():
    assert [step_down(m) for m in (None, "primary", "fallback", "conservative", "flat")] == [
        "fallback", "fallback", "conservative", "flat", "flat"]


def test_resolve_start_mode_env_wins_then_file(tmp_path):
    f = tmp_path / "state" / "strategy_mode.txt"
    assert resolve_start_mode({}, f) == (None, "none")
    write_mode_file(f, "conservative")
    assert f.read_text() == "conservative\n"
    assert resolve_start_mode({}, f) == ("conservative", "file")
    assert resolve_start_mode({"AI_QUANT_STRATEGY_MODE": "m1"}, f) == ("primary", "env")
    f.write_text("garbage")
    assert read_mode_file(f) is None
    assert list(f.parent.iterdir()) == [f]  # no temp files left behind


def test_restart_required():
    interval_of = INTERVALS.get
    assert restart_required("primary", "fallback", interval_of)
    assert not restart_required("fallback", "conservative", interval_of)


def test_switch_on_each_new_kill_event_and_persist(tmp_path):
    clock = ManualClock()
    mode_file = tmp_path / "strategy_mode.txt"
    events = []
    risk = RiskManager(RiskLimits(kill_switch_file=tmp_path / "kill"), clock)
    sw = ModeSwitcher("primary", mode_file, enabled=True, interval_of=INTERVALS.get,
                      exit_on_restart_required=True, on_audit=lambda *a: events.append(a))
    assert sw.on_kill_state(risk.kill_seq, clock.monotonic()) is None
    (tmp_path / "kill").write_text("close_only")
    risk.poll(force=True)
    first = sw.on_kill_state(risk.kill_seq, clock.monotonic())
    assert (first.old, first.new, first.restart_required, first.exit_requested) == ("primary", "fallback", True, True)
    assert mode_file.read_text() == "fallback\n"
    # the same kill seen on the next loop is not a new event
    assert sw.on_kill_state(risk.kill_seq, clock.monotonic()) is None
    risk.kill("close_only", "health:fills")
    second = sw.on_kill_state(risk.kill_seq, clock.monotonic())
    assert (second.new, second.restart_required, second.exit_requested) == ("conservative", False, False)
    risk.kill("close_only", "manual:again")
    assert sw.on_kill_state(risk.kill_seq, clock.monotonic()).new == "flat"
    risk.kill("halt_all", "manual:more")
    assert sw.on_kill_state(risk.kill_seq, clock.monotonic()) is None
    assert [e[0] for e in events] == ["MODE_SWITCH"] * 3 and events[0][2]["to"] == "fallback"
    assert resolve_start_mode({}, mode_file) == ("flat", "file")


def test_disabled_and_cooldown(tmp_path):
    off = ModeSwitcher("primary", tmp_path / "m.txt", enabled=False, interval_of=INTERVALS.get)
    assert off.on_kill_state(1, 0.0) is None and not (tmp_path / "m.txt").exists()
    cool = ModeSwitcher("primary", tmp_path / "m.txt", enabled=True, interval_of=INTERVALS.get, cooldown_s=300)
    assert cool.on_kill_state(1, 0.0).new == "fallback"
    assert cool.on_kill_state(2, 299.0) is None
    assert cool.on_kill_state(3, 600.0).new == "conservative"
