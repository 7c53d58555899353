"""The trader's step schedule (live/substep.py): every sub-bar of the finest interval the engine
uses is stepped once its own bar has closed, then the main close, in time order, from the cursor
the checkpoint holds; nothing redone, nothing skipped."""

from __future__ import annotations

import pytest

from live.substep import CLOSE, Cursor, Step, SubStepError, due_steps, sub_interval

H, M5, GRACE = 3_600_000, 300_000, 2_000
T10 = 1_700_000_000_000 // H * H + 10 * H   # a 10:00 bar open


def due(cursor, now_ms, *, main_last=None, sub_last=None, sub_ms=M5, first=T10):
    steps = due_steps(cursor, now_ms=now_ms, grace_ms=GRACE, iv_ms=H, sub_ms=sub_ms, first_bar_t=first,
                      main_last_open=main_last, sub_last_open=sub_last)
    return [(s.bar_t, s.j) for s in steps]


def test_a_five_minute_bar_is_stepped_right_after_it_closes_plus_the_grace():
    cur = Cursor(last_bar_t=T10 - H)
    assert due(cur, T10 + M5 + GRACE - 1, sub_last=T10) == []
    assert due(cur, T10 + M5 + GRACE, sub_last=T10) == [(T10, 0)]


def test_a_sub_bar_waits_for_its_candle_in_the_db():
    """The clock says 10:10 closed, but the market-data service has written only the 10:00 bar."""
    cur = Cursor(last_bar_t=T10 - H)
    assert due(cur, T10 + 2 * M5 + GRACE, sub_last=T10) == [(T10, 0)]
    assert due(cur, T10 + 2 * M5 + GRACE, sub_last=T10 + M5) == [(T10, 0), (T10, 1)]


def test_the_hour_runs_its_twelve_sub_bars_then_its_close_in_order():
    cur = Cursor(last_bar_t=T10 - H)
    got = due(cur, T10 + H + GRACE, main_last=T10, sub_last=T10 + 11 * M5)
    assert got == [(T10, j) for j in range(12)] + [(T10, CLOSE)]


def test_a_late_main_candle_holds_back_the_next_hours_sub_bars():
    """10:00's 1h candle is not in yet: 11:00's first 5m bar must not be stepped before 10:00's close."""
    cur = Cursor(last_bar_t=T10 - H, last_sub_t=T10 + 11 * M5)
    assert due(cur, T10 + H + M5 + GRACE, main_last=T10 - H, sub_last=T10 + H) == []
    assert due(cur, T10 + H + M5 + GRACE, main_last=T10, sub_last=T10 + H) == [(T10, CLOSE), (T10 + H, 0)]


def test_a_restart_mid_hour_continues_with_the_next_sub_bar():
    """The checkpoint says 10:20 (the fifth sub-bar) was the last step: 10:25 is next, none redone."""
    cur = Cursor(last_bar_t=T10 - H, last_sub_t=T10 + 4 * M5)
    assert due(cur, T10 + 7 * M5 + GRACE, sub_last=T10 + 6 * M5) == [(T10, 5), (T10, 6)]


def test_without_sub_bars_one_close_per_main_bar():
    cur = Cursor(last_bar_t=T10 - H)
    assert due(cur, T10 + 2 * H + GRACE, main_last=T10 + H, sub_ms=0) == [(T10, CLOSE), (T10 + H, CLOSE)]
    assert due(Cursor(), T10 + H + GRACE, main_last=T10, sub_ms=0) == [(T10, CLOSE)]


def test_a_first_start_begins_at_the_first_bar_of_the_db():
    got = due(Cursor(), T10 + H + GRACE, main_last=T10, sub_last=T10 + 11 * M5)
    assert got[0] == (T10, 0) and got[-1] == (T10, CLOSE) and len(got) == 13


def test_step_ids_and_times():
    sub = Step(T10, 3, T10 + 3 * M5, T10 + 4 * M5)
    close = Step(T10, CLOSE, T10, T10 + H)
    assert (sub.tag, close.tag) == ("s3", "")
    assert not sub.is_close and close.is_close


def test_cursor_advances_and_round_trips_through_the_checkpoint():
    cur = Cursor(last_bar_t=T10 - H)
    cur = cur.after(Step(T10, 0, T10, T10 + M5))
    assert cur == Cursor(T10 - H, T10)
    assert cur.last_close_ms(H, M5) == T10 + M5
    assert Cursor.from_checkpoint({**cur.meta(), "arrays": ""}) == cur
    cur = cur.after(Step(T10, CLOSE, T10, T10 + H))
    assert cur == Cursor(T10, None) and cur.last_close_ms(H, M5) == T10 + H
    # a checkpoint written before sub-stepping has no last_sub_t: a main-bar boundary
    assert Cursor.from_checkpoint({"last_bar_t": T10}) == Cursor(T10, None)
    assert Cursor.from_checkpoint(None) == Cursor()
    assert Cursor.from_checkpoint({"last_bar_t": None, "last_sub_t": T10}) == Cursor(None, T10)


@pytest.mark.parametrize(("main", "exit_iv", "entry_iv", "want"), [
    ("1h", "5m", None, ("5m", True, False)),
    ("1h", None, None, (None, False, False)),
    ("1h", "1h", None, (None, False, False)),
    ("30m", "3m", "3m", ("3m", True, True)),
    ("1h", "1h", "5m", ("5m", False, True)),
])
def test_the_finest_interval_is_stepped(main, exit_iv, entry_iv, want):
    assert sub_interval(main, exit_iv, entry_iv) == want


@pytest.mark.parametrize(("main", "exit_iv", "entry_iv", "message"), [
    ("1h", "2h", None, "exit_interval=2h must divide the main interval 1h"),
    ("15m", "30m", None, "exit_interval=30m must divide the main interval 15m"),
    ("30m", "5m", "3m", "sub-bars are one grid"),
])
def test_intervals_the_engine_cannot_step_are_refused(main, exit_iv, entry_iv, message):
    with pytest.raises(SubStepError, match=message):
        sub_interval(main, exit_iv, entry_iv)


def test_the_monitor_shows_the_last_step():
    from live.monitor.snapshot import last_step

    assert last_step(None) is None
    assert last_step({"last_bar_t": T10, "last_sub_t": None, "symbols": {}}) == {"kind": "bar", "t": T10}
    assert last_step({"last_bar_t": T10, "last_sub_t": T10 + H + M5, "symbols": {}}) == {"kind": "sub-bar",
                                                                                        "t": T10 + H + M5}


def stepper(tmp_path, sub="5m"):
    from live.substep import SubStepper

    return SubStepper(interval="1h", plan=(sub, True, False), candles_dir=tmp_path, symbols=["ETH"], grace_ms=GRACE,
                      load=None, funding_of=None, first_bar_t=T10)


def test_a_lagging_5m_db_is_reported_not_only_the_1h_one(tmp_path):
    """Exits wait for the 5m bars: a market-data service that stopped writing them is a data lag
    after two 5m bars (+ the grace), even while the 1h DB is fresh."""
    s = stepper(tmp_path)
    s.newest = {"1h": T10, "5m": T10 + 11 * M5}
    now = T10 + H + 2 * M5 + GRACE
    assert s.lag(now) is None
    db, lag_ms = s.lag(now + 1)
    assert db.endswith("candles_5m.db") and lag_ms == 2 * M5 + GRACE + 1


def test_the_trader_refuses_to_start_without_the_sub_interval_db(tmp_path):
    from live.substep import SubStepper

    with pytest.raises(SubStepError, match=r"needs .*candles_5m.db .*AI_QUANT_SIDECAR_INTERVALS=1h,5m"):
        SubStepper.check_dbs("1h", "5m", tmp_path)
    (tmp_path / "candles_5m.db").touch()
    SubStepper.check_dbs("1h", "5m", tmp_path)
    SubStepper.check_dbs("1h", None, tmp_path)


def test_a_cursor_that_disagrees_with_the_engines_own_sub_bar_position_is_refused(tmp_path):
    """Both are saved in one checkpoint; a mismatch (a DB from another build, a hand edit) must not
    be resumed: the engine would refuse the next sub-bar mid-hour, or skip one."""
    from types import SimpleNamespace

    s = stepper(tmp_path)
    s.cursor = Cursor(last_bar_t=T10 - H, last_sub_t=T10 + 4 * M5)
    assert s.check_engine(SimpleNamespace(sub_position=(T10, 5))) is None
    assert "cursor" in s.check_engine(SimpleNamespace(sub_position=(T10, 4)))
    assert "cursor" in s.check_engine(SimpleNamespace(sub_position=(-1, 0)))
    s.cursor = Cursor(last_bar_t=T10)
    assert s.check_engine(SimpleNamespace(sub_position=(-1, 0))) is None
