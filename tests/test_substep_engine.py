"""The engine steps at every closed sub-bar (the live daemon's view) exactly as the replay runs a bar.

`Engine.step_sub` (sub-bar j of a main bar, as it closes) x k + `Engine.step_close` (the main close)
make the same fills, bit for bit, as `Engine.step` (the whole bar) and as `run_replay`; an engine
checkpoint (live/checkpoint.py) taken between two sub-bars resumes exactly. Real candles:
../shared/data candles_1h.db with its 5m sub-bars (candles_5m.db), exits and/or entries on 5m.
"""

from __future__ import annotations

import numpy as np
import pytest

from cpu_replay.api import ReplayError, run_replay
from cpu_replay.engine import Engine
from live import checkpoint
from marketdata.candles import load_market_data
from marketdata.subbars import build_sub_bars, sub_bar_plan
from strategy.config import config_from_dict
from strategy.layout import A_SUB_BAR_OPEN, A_SUB_NEXT, NFILL
from strategy.records import fill_dicts

LOOKBACK = 60
BALANCE = 10_000.0
RULES = {"trade": {"max_open_positions": 6, "enable_pyramiding": True},
         "filters": {"enable_ranging_filter": False, "require_adx_rising": False},
         "thresholds": {"entry": {"min_adx": 15}}}
MODES = {
    "exits_5m": {"interval": "1h", "exit_interval": "5m"},
    "exits_and_entries_5m": {"interval": "1h", "exit_interval": "5m", "entry_interval": "5m"},
    "entries_5m_exits_1h": {"interval": "1h", "entry_interval": "5m"},
    "touch_entries_5m": {"interval": "1h", "exit_interval": "5m", "entry_interval": "5m", "exit_fill": "touch"},
}


@pytest.fixture(scope="module")
def data(shared_data):
    return (load_market_data(str(shared_data / "candles_1h.db"), "1h"),
            load_market_data(str(shared_data / "candles_5m.db"), "5m"))


def cfg_of(engine: dict):
    return config_from_dict({"global": {**RULES, "engine": engine}})


def new_engine(cfg, md, state=None) -> Engine:
    _iv, exits, entries = sub_bar_plan(md.interval, cfg.entry_interval, cfg.exit_interval)
    return Engine(cfg.params_matrix(md.symbols), cfg.windows(), md.symbols, md.interval_ms, BALANCE, state=state,
                  sub_exits=exits, sub_entries=entries)


def resume(engine: Engine, cfg, md) -> Engine:
    """A restart: the engine rebuilt from its encoded checkpoint (what the daemon stores)."""
    data = checkpoint.encode(engine.state, last_bar_t=0, symbols=list(md.symbols), windows=cfg.windows(),
                             config_id=cfg.config_id, epoch="e")
    assert (data["sub_bar_open"], data["sub_next"]) == engine.sub_position
    return new_engine(cfg, md, checkpoint.decode(data))


def drive(cfg, md, exit_md, *, by_sub: bool, restart_every: int = 0):
    """Step the engine over the data like the daemon: per sub-bar (``by_sub``) or per whole bar."""
    sub = build_sub_bars(md, exit_md)
    engine = new_engine(cfg, md)
    nsym = len(md.symbols)
    rows, n = [], 0
    for b in range(min(len(md.times), sub.covered)):
        t = int(md.times[b])
        prev = md.valid[:, b - 1] if b else np.zeros(nsym, bool)
        trade = b >= LOOKBACK
        bar = (md.open[:, b], md.high[:, b], md.low[:, b], md.close[:, b], md.volume[:, b])
        if not by_sub:
            rows.append(engine.step(t, *bar, md.valid[:, b], prev, trade=trade,
                                    sub=(sub.open[:, b], sub.high[:, b], sub.low[:, b], sub.close[:, b],
                                         sub.valid[:, b], sub.close_ms[b])))
            continue
        if trade:
            for j in range(sub.k):
                rows.append(engine.step_sub(t, j, sub.open[:, b, j], sub.high[:, b, j], sub.low[:, b, j],
                                            sub.close[:, b, j], sub.valid[:, b, j], int(sub.close_ms[b, j]),
                                            prev_valid=prev))
                n += 1
                if restart_every and n % restart_every == 0:
                    engine = resume(engine, cfg, md)
        rows.append(engine.step_close(t, *bar, md.valid[:, b], prev, trade=trade, n_sub=sub.k if trade else 0))
    return fill_dicts(np.concatenate(rows) if rows else np.zeros((0, NFILL)), list(md.symbols)), engine


def replay_fills(cfg, md, exit_md):
    rep = run_replay(cfg, md, initial_balance=BALANCE, start_ms=int(md.times[LOOKBACK]), exit_md=exit_md)
    keys = fill_dicts(np.zeros((1, NFILL)), list(md.symbols))[0].keys()  # the report adds UTC strings
    return [{k: f[k] for k in keys} for f in rep["fills"] if f["reason"] != "end_of_data"], rep


@pytest.mark.parametrize("mode", list(MODES))
def test_sub_steps_equal_whole_bars_and_the_replay(data, mode):
    md, exit_md = data
    cfg = cfg_of(MODES[mode])
    by_sub, engine = drive(cfg, md, exit_md, by_sub=True, restart_every=7)
    whole, _ = drive(cfg, md, exit_md, by_sub=False)
    expected, rep = replay_fills(cfg, md, exit_md)
    assert rep["total_trades"] >= 10
    assert by_sub == whole == expected
    assert engine.sub_position == (-1, 0)
    if "entr" in mode:
        # entries are made at 5m closes, not only at hour boundaries
        assert any(f["action"] == "OPEN" and f["t_ms"] % 3_600_000 for f in by_sub)


def test_entry_sub_bars_differ_from_main_bar_entries(data):
    md, exit_md = data
    fine, _ = replay_fills(cfg_of(MODES["exits_and_entries_5m"]), md, exit_md)
    coarse, _ = replay_fills(cfg_of(MODES["exits_5m"]), md, exit_md)
    assert fine != coarse
    assert not any(f["action"] == "OPEN" and f["t_ms"] % 3_600_000 for f in coarse)


def test_out_of_order_sub_steps_are_refused(data):
    md, exit_md = data
    cfg = cfg_of(MODES["exits_and_entries_5m"])
    sub = build_sub_bars(md, exit_md)
    engine = new_engine(cfg, md)
    b, t = 1, int(md.times[1])
    row = (sub.open[:, b, 0], sub.high[:, b, 0], sub.low[:, b, 0], sub.close[:, b, 0], sub.valid[:, b, 0])
    with pytest.raises(RuntimeError, match="out of order"):
        engine.step_sub(t, 1, *row, int(sub.close_ms[b, 1]), prev_valid=md.valid[:, 0])
    with pytest.raises(ValueError, match="prev_valid"):
        engine.step_sub(t, 0, *row, int(sub.close_ms[b, 0]))
    engine.step_sub(t, 0, *row, int(sub.close_ms[b, 0]), prev_valid=md.valid[:, 0])
    assert engine.state.acct[A_SUB_BAR_OPEN] == t and engine.state.acct[A_SUB_NEXT] == 1
    bar = (md.open[:, b], md.high[:, b], md.low[:, b], md.close[:, b], md.volume[:, b])
    with pytest.raises(RuntimeError, match="1 of its 12 sub-bars"):
        engine.step_close(t, *bar, md.valid[:, b], md.valid[:, 0], n_sub=12)
    with pytest.raises(RuntimeError, match="inside the bar"):
        engine.step_close(t + 3_600_000, *bar, md.valid[:, b], md.valid[:, 0])


def test_two_different_sub_intervals_are_refused(data):
    md, exit_md = data
    cfg = cfg_of({"interval": "1h", "exit_interval": "5m", "entry_interval": "15m"})
    with pytest.raises(ReplayError, match="sub-bars are one grid"):
        run_replay(cfg, md, exit_md=exit_md)
    with pytest.raises(ReplayError, match="entry_interval=5m needs the 5m candles"):
        run_replay(cfg_of(MODES["entries_5m_exits_1h"]), md)


def test_old_checkpoint_layout_is_refused_in_one_line(data):
    md, _ = data
    cfg = cfg_of(MODES["exits_5m"])
    engine = new_engine(cfg, md)
    data_ = checkpoint.encode(engine.state, last_bar_t=0, symbols=list(md.symbols), windows=cfg.windows(),
                              config_id=cfg.config_id, epoch="e")
    with pytest.raises(ValueError, match="engine checkpoint version 1"):
        checkpoint.decode({**data_, "version": 1})


def test_a_checkpoint_inside_a_bar_does_not_seed_a_replay_nor_the_history(data, tmp_path):
    """The replay resumes whole bars: a checkpoint taken between two sub-bars is refused there, and
    the checkpoint history (what the alignment gate resumes from) keeps main closes only."""
    from live.trading_db import open_trading_db

    md, exit_md = data
    cfg = cfg_of(MODES["exits_5m"])
    sub = build_sub_bars(md, exit_md)
    engine = new_engine(cfg, md)
    t = int(md.times[1])
    engine.step_sub(t, 0, sub.open[:, 1, 0], sub.high[:, 1, 0], sub.low[:, 1, 0], sub.close[:, 1, 0],
                    sub.valid[:, 1, 0], int(sub.close_ms[1, 0]))
    with pytest.raises(ReplayError, match="inside a bar \\(after its sub-bar 0\\)"):
        run_replay(cfg, md, exit_md=exit_md, resume=engine.state)
    conn = open_trading_db(tmp_path / "trading.db")
    mid = checkpoint.encode(engine.state, last_bar_t=t, symbols=list(md.symbols), windows=cfg.windows(),
                            config_id=cfg.config_id, epoch="e")
    checkpoint.save_history(conn, mid)
    assert conn.execute("SELECT COUNT(*) FROM engine_checkpoints").fetchone()[0] == 0
    checkpoint.save_history(conn, {**mid, "sub_next": 0})
    assert conn.execute("SELECT COUNT(*) FROM engine_checkpoints").fetchone()[0] == 1
