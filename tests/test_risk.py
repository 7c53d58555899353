"""RiskManager behaviour with a ManualClock and a real kill file on disk."""

from __future__ import annotations

import datetime as dt

import pytest

from live.clock import ManualClock
from live.env import EnvError, RiskLimits
from live.risk import RiskManager

EQ = 10_000.0


def make(tmp_path=None, clock=None, **limits):
    events: list[tuple] = []
    if tmp_path is not None and "kill_switch_file" not in limits:
        limits["kill_switch_file"] = tmp_path / "kill"
    rm = RiskManager(RiskLimits(**limits), clock or ManualClock(),
                     on_audit=lambda e, s, d: events.append((e, s, d)))
    return rm, events


def send(rm, symbol="BTC", action="OPEN", notional=100.0, positions=0.0):
    d = rm.allow_order(symbol, action, "LONG", notional, EQ, positions)
    if d.allowed:
        rm.note_order_sent(symbol, action, notional)
    return d


# ------------------------------------------------------------------ kill file / env
def test_kill_file_close_only_blocks_entries_only(tmp_path):
    clock = ManualClock()
    rm, events = make(tmp_path, clock)
    (tmp_path / "kill").write_text("close_only\n")
    clock.advance(2.0)
    for action in ("OPEN", "ADD"):
        d = rm.allow_order("BTC", action, "LONG", 100, EQ, 0)
        assert (d.allowed, d.reason, d.kill_mode) == (False, "kill:close_only", "close_only")
    for action in ("REDUCE", "CLOSE"):
        assert rm.allow_order("BTC", action, "LONG", 100, EQ, 0).allowed
    assert rm.state()["kill_reason"] == f"file:{tmp_path / 'kill'}"
    assert [e[0] for e in events].count("RISK_KILL") == 1
    assert [e[0] for e in events].count("RISK_BLOCK") == 2
    assert events[-1][1] == "BTC" and events[-1][2]["reason"] == "kill:close_only"


def test_kill_file_is_polled_at_its_interval(tmp_path):
    clock = ManualClock()
    rm, _ = make(tmp_path, clock, kill_switch_poll_s=2.0)
    (tmp_path / "kill").write_text("close_only")
    clock.advance(1.9)
    assert rm.allow_order("BTC", "OPEN", "LONG", 1, EQ, 0).allowed  # not yet polled
    clock.advance(0.1)
    assert not rm.allow_order("BTC", "OPEN", "LONG", 1, EQ, 0).allowed


def test_halt_all_blocks_exits_too(tmp_path):
    clock = ManualClock()
    rm, _ = make(tmp_path, clock)
    (tmp_path / "kill").write_text("halt_all")
    rm.poll(force=True)
    for action in ("OPEN", "ADD", "REDUCE", "CLOSE"):
        d = rm.allow_order("BTC", action, "LONG", 100, EQ, 0)
        assert (d.allowed, d.reason) == (False, "kill:halt_all")
    assert rm.allow_cancel("BTC").allowed  # cancelling never adds risk


def test_removing_the_file_clears_a_file_kill(tmp_path):
    clock = ManualClock()
    rm, events = make(tmp_path, clock)
    (tmp_path / "kill").write_text("close_only")
    clock.advance(2)
    rm.poll()
    assert rm.kill_mode == "close_only"
    (tmp_path / "kill").unlink()
    clock.advance(2)
    rm.poll()
    assert rm.kill_mode == "off"
    assert events[-1][0] == "RISK_CLEAR" and events[-1][2]["by"] == "file_removed"


def test_removing_the_file_does_not_clear_a_risk_kill(tmp_path):
    clock = ManualClock()
    rm, _ = make(tmp_path, clock, max_drawdown_pct=10)
    rm.update_equity(EQ, clock.now_ms())
    rm.update_equity(9_000, clock.now_ms())
    (tmp_path / "kill").write_text("halt_all")
    clock.advance(2)
    rm.poll()
    assert rm.kill_mode == "halt_all"
    (tmp_path / "kill").unlink()
    clock.advance(2)
    rm.poll()
    assert (rm.kill_mode, rm.state()["kill_reason"]) == ("close_only", "drawdown")


def test_clear_text_clears_any_kill_including_env_and_drawdown(tmp_path):
    clock = ManualClock()
    rm, events = make(tmp_path, clock, kill_switch="halt_all", max_drawdown_pct=10)
    rm.update_equity(EQ, clock.now_ms())
    rm.update_equity(8_500, clock.now_ms())
    assert {k["reason"] for k in rm.state()["kills"]} == {"env", "drawdown"}
    (tmp_path / "kill").write_text("  CLEAR\n")
    clock.advance(2)
    rm.poll()
    assert rm.kill_mode == "off"
    assert sorted(events[-1][2]["cleared"]) == ["drawdown", "env"]
    # the high-water mark restarts at the current equity, so the same level does not re-trip
    assert rm.update_equity(8_500, clock.now_ms()) == [] and rm.kill_mode == "off"
    # the file still says clear: a later kill is not cleared by the stale text
    rm.update_equity(7_600, clock.now_ms())
    clock.advance(2)
    rm.poll()
    assert rm.kill_mode == "close_only"


def test_clear_file_left_over_before_start_is_not_an_order(tmp_path):
    (tmp_path / "kill").write_text("clear")
    rm, _ = make(tmp_path, kill_switch="close_only")
    assert rm.kill_mode == "close_only"


def test_env_kill_lasts_for_the_process_and_env_clear_clears_latched(tmp_path):
    persisted: list[dict] = []
    clock = ManualClock()
    rm = RiskManager(RiskLimits(max_drawdown_pct=5), clock, on_persist=persisted.append)
    rm.update_equity(EQ, clock.now_ms())
    rm.update_equity(9_400, clock.now_ms())
    assert rm.kill_mode == "close_only"
    # restart without the env: the latched drawdown kill survives through the persisted snapshot
    rm2 = RiskManager(RiskLimits(max_drawdown_pct=5), clock, persisted=persisted[-1])
    assert (rm2.kill_mode, rm2.state()["kill_reason"]) == ("close_only", "drawdown")
    # restart with AI_QUANT_KILL_SWITCH=clear: cleared
    rm3 = RiskManager(RiskLimits.from_env({"AI_QUANT_KILL_SWITCH": "clear", "AI_QUANT_RISK_MAX_DRAWDOWN_PCT": "5"}),
                      clock, persisted=persisted[-1])
    assert rm3.kill_mode == "off"
    # env kill, then a restart without it: gone
    env_rm = RiskManager(RiskLimits.from_env({"AI_QUANT_KILL_SWITCH": "1"}), clock)
    assert (env_rm.kill_mode, env_rm.state()["kill_reason"]) == ("close_only", "env")
    assert RiskManager(RiskLimits.from_env({}), clock).kill_mode == "off"


@pytest.mark.parametrize("value,mode", [("close_only", "close_only"), ("1", "close_only"), ("on", "close_only"),
                                        ("halt_all", "halt_all"), ("halt", "halt_all"), ("2", "halt_all"),
                                        ("STOP", "halt_all"), ("full", "halt_all"), ("", None), ("0", None),
                                        ("clear", "clear"), (" CLEAR ", "clear"), ("off", None)])
def test_env_aliases(value, mode):
    assert RiskLimits.from_env({"AI_QUANT_KILL_SWITCH": value}).kill_switch == mode


def test_env_kill_mode_default_and_typo():
    assert RiskLimits.from_env({"AI_QUANT_KILL_SWITCH": "true", "AI_QUANT_KILL_SWITCH_MODE": "halt_all"}
                               ).kill_switch == "halt_all"
    with pytest.raises(EnvError, match="AI_QUANT_KILL_SWITCH='clsoe_only'"):
        RiskLimits.from_env({"AI_QUANT_KILL_SWITCH": "clsoe_only"})


def test_kill_is_idempotent_and_counts_new_events(tmp_path):
    clock = ManualClock()
    rm, events = make(tmp_path, clock)
    (tmp_path / "kill").write_text("close_only")
    rm.poll(force=True)
    since = rm.state()["kill_since_ms"]
    clock.advance(10)
    rm.poll(force=True)
    assert rm.state()["kill_since_ms"] == since and rm.kill_seq == 1
    rm.kill("close_only", "health:fills")
    assert rm.kill_seq == 2


# ------------------------------------------------------------------ rate limits
def test_entry_token_bucket_30_per_min_and_refill():
    clock = ManualClock()
    rm, _ = make(clock=clock, max_entry_orders_per_min_per_symbol=1000)
    sent = sum(send(rm, f"S{i}").allowed for i in range(40))
    assert sent == 30
    assert send(rm, "X").reason == "entry_rate"
    clock.advance(1.9)  # 0.95 token
    assert not send(rm, "X").allowed
    clock.advance(0.1)  # 1 token
    assert send(rm, "X").allowed and not send(rm, "Y").allowed
    clock.advance(60)
    assert sum(send(rm, f"T{i}").allowed for i in range(40)) == 30


def test_per_symbol_sliding_window_6_per_60s():
    clock = ManualClock()
    rm, _ = make(clock=clock)
    results = []
    for _ in range(8):
        results.append(send(rm, "BTC").allowed)
        clock.advance(1)
    assert results == [True] * 6 + [False] * 2
    assert send(rm, "ETH").allowed
    clock.advance(60 - 8 - 0.001)  # first BTC entry was 59.999 s ago
    assert send(rm, "BTC").reason == "entry_rate_symbol"
    clock.advance(0.001)
    assert send(rm, "BTC").allowed


def test_exit_bucket_120_per_min():
    clock = ManualClock()
    rm, _ = make(clock=clock)
    assert sum(send(rm, "BTC", "CLOSE").allowed for _ in range(130)) == 120
    assert send(rm, "BTC", "REDUCE").reason == "exit_rate"
    assert send(rm, "BTC", "OPEN").allowed  # entries have their own bucket
    clock.advance(0.5)  # 120/min = 2 per second
    assert send(rm, "BTC", "CLOSE").allowed


def test_cancel_rate():
    clock = ManualClock()
    rm, _ = make(clock=clock, max_cancels_per_min=3)
    for _ in range(3):
        assert rm.allow_cancel().allowed
        rm.note_cancel_sent()
    assert rm.allow_cancel().reason == "cancel_rate"


def test_notional_window():
    clock = ManualClock()
    rm, _ = make(clock=clock, max_notional_per_window_usd=1000, notional_window_s=60)
    assert send(rm, "BTC", notional=600).allowed
    assert send(rm, "ETH", notional=401).reason == "notional_window"
    assert send(rm, "ETH", notional=400).allowed
    assert send(rm, "SOL", notional=1).reason == "notional_window"
    assert send(rm, "SOL", "CLOSE", notional=5000).allowed  # exits are not capped by notional
    clock.advance(60)
    assert send(rm, "SOL", notional=1000).allowed


def test_min_order_gap_applies_to_all_orders():
    clock = ManualClock()
    rm, _ = make(clock=clock, min_order_gap_ms=500)
    assert send(rm).allowed
    clock.advance(0.499)
    assert send(rm, "ETH", "CLOSE").reason == "min_order_gap"
    clock.advance(0.001)
    assert send(rm, "ETH", "CLOSE").allowed


def test_leverage_exposure_cap_entries_only():
    rm, _ = make(max_leverage_exposure=5)
    assert rm.allow_order("BTC", "OPEN", "LONG", 20_000, EQ, 30_000).allowed  # exactly 5x
    d = rm.allow_order("BTC", "OPEN", "LONG", 20_001, EQ, 30_000)
    assert (d.allowed, d.reason) == (False, "exposure")
    assert rm.allow_order("BTC", "CLOSE", "LONG", 90_000, EQ, 90_000).allowed
    assert rm.allow_order("BTC", "ADD", "LONG", 1, 0.0, 0).reason == "exposure:no_equity"


# ------------------------------------------------------------------ loss stops
def _ms(y, m, d, hh=0, mm=0, ss=0):
    return int(dt.datetime(y, m, d, hh, mm, ss, tzinfo=dt.UTC).timestamp() * 1000)


def test_daily_loss_stop_and_midnight_reset():
    clock = ManualClock(now_ms=_ms(2024, 3, 5, 9))
    rm, events = make(clock=clock, max_daily_loss_pct=10, safe_mode_drawdown_pct=0)
    rm.update_equity(EQ, clock.now_ms())
    rm.note_fill(-600, True, clock.now_ms())
    rm.note_fill(-5_000, False, clock.now_ms())  # an entry fill's pnl never counts
    assert rm.kill_mode == "off"
    rm.note_fill(-399.99, True, clock.now_ms())
    assert rm.kill_mode == "off"
    rm.note_fill(-0.01, True, clock.now_ms())  # -1000 = -10 % of 10 000: inclusive
    assert (rm.kill_mode, rm.state()["kill_reason"]) == ("close_only", "daily_loss:2024-03-05")
    assert not send(rm).allowed and send(rm, action="CLOSE").allowed
    clock.set_wall_ms(_ms(2024, 3, 5, 23, 59, 59))
    rm.poll()
    assert rm.kill_mode == "close_only"
    clock.set_wall_ms(_ms(2024, 3, 6, 0, 0, 0))
    rm.poll()
    assert rm.kill_mode == "off"
    assert events[-1][0] == "RISK_CLEAR" and events[-1][2]["by"] == "utc_midnight"
    assert rm.state()["day_realized_pnl"] == 0.0


def test_drawdown_kill_is_inclusive_and_latched():
    clock = ManualClock()
    rm, events = make(clock=clock, max_drawdown_pct=10, safe_mode_drawdown_pct=0)
    rm.update_equity(12_000, clock.now_ms())
    rm.update_equity(10_800.01, clock.now_ms())  # 9.9999 %
    assert rm.kill_mode == "off"
    rm.update_equity(10_800, clock.now_ms())  # exactly 10 %
    assert (rm.kill_mode, rm.state()["kill_reason"]) == ("close_only", "drawdown")
    rm.update_equity(13_000, clock.now_ms())  # recovery does not unlatch
    assert rm.kill_mode == "close_only"
    assert [e[0] for e in events] == ["RISK_KILL"]


def test_safe_mode_returns_flatten_once():
    clock = ManualClock()
    rm, _ = make(clock=clock)  # defaults: safe mode at 20 %
    assert rm.update_equity(EQ, clock.now_ms()) == []
    assert rm.update_equity(8_000.01, clock.now_ms()) == []
    assert rm.update_equity(8_000, clock.now_ms()) == ["flatten"]
    assert rm.update_equity(7_000, clock.now_ms()) == []
    assert (rm.kill_mode, rm.state()["kill_reason"]) == ("close_only", "safe_mode")


def test_limits_from_env_defaults_and_errors():
    lim = RiskLimits.from_env({})
    assert (lim.max_entry_orders_per_min, lim.max_entry_orders_per_min_per_symbol, lim.max_exit_orders_per_min,
            lim.max_cancels_per_min, lim.max_notional_per_window_usd, lim.notional_window_s,
            lim.min_order_gap_ms, lim.max_drawdown_pct, lim.max_daily_loss_pct, lim.safe_mode_drawdown_pct,
            lim.max_leverage_exposure, lim.kill_switch_poll_s) == (30, 6, 120, 120, 0, 60, 0, 0, 10, 20, 5, 2)
    with pytest.raises(EnvError, match=r"^AI_QUANT_RISK_MAX_ENTRY_ORDERS_PER_MIN='abc' is not an integer$"):
        RiskLimits.from_env({"AI_QUANT_RISK_MAX_ENTRY_ORDERS_PER_MIN": "abc"})
    with pytest.raises(EnvError, match="must be <= 1000"):
        RiskLimits.from_env({"AI_QUANT_RISK_MAX_EXIT_ORDERS_PER_MIN": "5000"})
