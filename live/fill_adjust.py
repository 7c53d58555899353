"""Live mode: the exchange's real fills replace the engine's simulated ones.

The engine fills at the decision price moved by slippage with a taker fee; the exchange fills
where the book is, possibly only in part. After a bar's orders are executed, every symbol that
traded is re-derived from its pre-bar position and the REAL fills, in order:

- OPEN/ADD: size += filled size; average entry = size-weighted average of the real prices;
  margin is scaled by the ratio of real to simulated entry notional (same leverage).
- REDUCE/CLOSE: size -= filled size; entry unchanged; realised pnl is the exchange's closedPnl.
- fees are the exchange's fees.
The account follows by deltas: balance += Σ(real pnl − simulated pnl) − Σ(real fee − simulated
fee); fees, realised pnl and the symbol's round-trip pnl/fees move by the same deltas; equity moves
by the balance delta plus the change of the symbol's unrealised pnl at its last close.
Round-trip statistics (wins, gross profit/loss, the closed-trade list) stay as simulated: they feed
reports, never decisions. A CLOSE that the exchange filled only in part leaves the engine flat and
the remainder on the exchange: the daemon retries it, then reports it (EXIT_INCOMPLETE).
"""

from __future__ import annotations

import numpy as np

from live.trading_db import delete_position_state, insert_trade, iso_utc, upsert_position_state
from strategy.kernel import KERNEL_CPU
from strategy.layout import (
    A_BALANCE,
    A_EQUITY,
    A_FEES,
    A_REALIZED,
    FL_ACTION,
    FL_BALANCE,
    FL_FEE,
    FL_NOTIONAL,
    FL_PNL,
    FL_PRICE,
    FL_SIZE,
    FL_SYM,
    POS_ENTRY,
    POS_LEVERAGE,
    POS_SIDE,
    POS_SIZE,
    POS_TRADE_FEES,
    POS_TRADE_PNL,
)
from strategy.records import action_name, fill_dict, position_state_fields

resize_position = KERNEL_CPU.resize_position

ENTRY = ("OPEN", "ADD")


def apply_real_fills(before, state, pairs) -> np.ndarray:
    """Adjust `state` (the engine after the bar) to the real fills; returns the adjusted fill rows.

    before: the engine state before the bar; pairs: [(engine fill row, Execution)] in fill order.
    """
    rows = np.array([row.copy() for row, _ in pairs]) if pairs else np.zeros((0, state.pos.shape[1]))
    d_balance = 0.0
    by_symbol: dict[int, list[int]] = {}
    for i, (row, _) in enumerate(pairs):
        by_symbol.setdefault(int(row[FL_SYM]), []).append(i)
    for s, idx in by_symbol.items():
        size = float(before.pos[s, POS_SIZE]) if before.pos[s, POS_SIDE] != 0 else 0.0
        entry = float(before.pos[s, POS_ENTRY]) if size else 0.0
        d_pnl = d_fee = 0.0
        for i in idx:
            row, ex = pairs[i]
            action = action_name(row[FL_ACTION])
            got, px = ex.filled_sz, ex.avg_px if ex.avg_px else float(row[FL_PRICE])
            fee, pnl = ex.fee, ex.closed_pnl if action not in ENTRY else 0.0
            if action in ENTRY and got > 0:
                entry = (size * entry + got * px) / (size + got)
                size += got
            elif action not in ENTRY:
                size = max(size - got, 0.0)
            d_pnl += pnl - float(row[FL_PNL])
            d_fee += fee - float(row[FL_FEE])
            rows[i, FL_PRICE], rows[i, FL_SIZE], rows[i, FL_NOTIONAL] = px, got, got * px
            rows[i, FL_FEE], rows[i, FL_PNL] = fee, pnl
            rows[i, FL_BALANCE] += d_balance + d_pnl - d_fee
        d_unreal = resize_position(state.pos, state.acct, s, size, entry, before.pos[s, POS_SIDE] == 0)
        state.pos[s, POS_TRADE_PNL] += d_pnl
        state.pos[s, POS_TRADE_FEES] += d_fee
        d_balance += d_pnl - d_fee
        state.acct[A_FEES] += d_fee
        state.acct[A_REALIZED] += d_pnl
        state.acct[A_EQUITY] += d_pnl - d_fee + d_unreal
    state.acct[A_BALANCE] += d_balance
    return rows


class LiveTradeRecorder:
    """Writes the bar's REAL fills as `trades` rows (fill_hash/tid from the exchange) and mirrors
    positions into position_state; called inside the daemon's bar transaction."""

    def __init__(self, conn, symbols: list[str]) -> None:
        self.conn = conn
        self.symbols = symbols
        self.pairs: list = []   # [(adjusted fill row, Execution)] of the bar being recorded

    def record(self, fills: np.ndarray, *, bar_t_ms: int, epoch: str, config_id: str, pos: np.ndarray) -> None:
        opened: dict[str, int] = {}
        touched: set[str] = set()
        for row, ex in self.pairs:
            symbol = self.symbols[int(row[FL_SYM])]
            touched.add(symbol)
            for f in ex.fills:
                trade_id, action = self._insert(row, ex, f, bar_t_ms, config_id, pos)
                if action == "OPEN":
                    opened[symbol] = trade_id
        for symbol in touched:
            s = self.symbols.index(symbol)
            if pos[s, POS_SIDE] == 0.0:
                delete_position_state(self.conn, symbol)
            else:
                _mirror(self.conn, symbol, pos[s], opened.get(symbol))
        self.pairs = []

    def _insert(self, row, ex, f: dict, bar_t_ms: int, config_id: str, pos) -> tuple[int, str]:
        from live.oms import fill_action

        pos_type, action = fill_action(f)
        px, sz, fee = float(f["px"]), float(f["sz"]), float(f.get("fee") or 0.0)
        s = int(row[FL_SYM])
        engine = fill_dict(row, self.symbols)
        trade = {
            "timestamp": iso_utc(int(f.get("time") or bar_t_ms)), "symbol": f["coin"], "type": pos_type,
            "action": action, "price": px, "size": sz, "notional": px * sz,
            "reason": engine["reason"], "confidence": engine["confidence"], "pnl": float(f.get("closedPnl") or 0.0),
            "fee_usd": fee, "fee_token": f.get("feeToken", "USDC"), "fee_rate": fee / (px * sz) if px * sz else 0.0,
            "balance": engine["balance"], "entry_atr": engine["atr"],
            "leverage": float(pos[s, POS_LEVERAGE]) or None,
            "meta_json": {"mode": "live", "intent_id": ex.intent.intent_id, "cloid": ex.intent.client_order_id,
                          "oid": f.get("oid"), "engine_action": engine["action"],
                          "intent_status": ex.status, "exchange_fill": f},
            "fill_hash": str(f["hash"]), "fill_tid": int(f["tid"]), "config_id": config_id, "bar_t_ms": int(bar_t_ms),
        }
        return insert_trade(self.conn, trade), action


def _mirror(conn, symbol: str, p: np.ndarray, open_trade_id: int | None) -> None:
    fields = position_state_fields(p)
    if open_trade_id is not None:
        fields["open_trade_id"] = open_trade_id
    upsert_position_state(conn, symbol, **fields)
