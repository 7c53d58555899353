"""Position arithmetic the runtime applies outside a bar (kernel functions: drop, resize).

The reconciler aligns the engine to the exchange: a position the exchange no longer holds is
dropped, one it holds at another size is resized. Both go through the kernel's book functions,
so the account's open-position count and margin stay the sums of the open rows; a leaked count
would keep `max_open_positions` one slot too tight for good.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cpu_replay.engine import Engine
from cpu_replay.state_io import apply_init_state
from live.daemon import TraderDaemon
from live.trading_db import open_trading_db
from strategy.config import config_from_dict
from strategy.layout import A_MARGIN_USED, A_OPEN_COUNT, POS_MARGIN, POS_SIDE, POS_SIZE

SYMBOLS = ["BTC", "ETH"]
H = 3_600_000


def _engine(max_open: int = 2) -> Engine:
    cfg = config_from_dict({"global": {"trade": {"max_open_positions": max_open}}})
    engine = Engine(cfg.params_matrix(SYMBOLS), cfg.windows(), SYMBOLS, H, 10_000.0)
    positions = [
        {"symbol": "BTC", "side": "LONG", "entry_price": 100.0, "size": 2.0, "entry_atr": 1.0,
         "leverage": 2.0, "open_time_ms": 0},
        {"symbol": "ETH", "side": "SHORT", "entry_price": 10.0, "size": 5.0, "entry_atr": 0.1,
         "leverage": 5.0, "open_time_ms": 0},
    ]
    apply_init_state(engine.state, {"version": 1, "balance": 10_000.0, "positions": positions}, SYMBOLS,
                     engine.params)
    return engine


def _align(tmp_path, engine: Engine, symbol: str, szi: float) -> str:
    """The daemon's reconciler hook, on an engine and a trading DB (no exchange needed)."""
    daemon = SimpleNamespace(symbols=SYMBOLS, engine=engine, conn=open_trading_db(tmp_path / "t.db"),
                             last_bar_t=None)
    return TraderDaemon._align_position(daemon, symbol, szi)


def _open_rows(engine: Engine) -> tuple[int, float]:
    pos = engine.state.pos
    held = pos[:, POS_SIDE] != 0
    return int(held.sum()), float(pos[held, POS_MARGIN].sum())


def test_dropping_a_position_frees_its_slot_under_max_open_positions(tmp_path):
    engine = _engine()
    result = _align(tmp_path, engine, "ETH", 0.0)
    assert "dropped" in result
    count, margin = _open_rows(engine)
    assert count == 1
    assert engine.state.acct[A_OPEN_COUNT] == count  # the leak: the count stayed at 2
    assert engine.state.acct[A_MARGIN_USED] == pytest.approx(margin)
    assert engine.state.pos[1, POS_SIZE] == 0.0


def test_resizing_a_position_scales_its_margin_and_keeps_the_count(tmp_path):
    engine = _engine()
    margin_before = engine.state.pos[0, POS_MARGIN]
    result = _align(tmp_path, engine, "BTC", 1.0)
    assert "size set to 1" in result
    assert engine.state.pos[0, POS_SIZE] == 1.0
    assert engine.state.pos[0, POS_MARGIN] == pytest.approx(margin_before / 2)
    count, margin = _open_rows(engine)
    assert engine.state.acct[A_OPEN_COUNT] == count == 2
    assert engine.state.acct[A_MARGIN_USED] == pytest.approx(margin)

