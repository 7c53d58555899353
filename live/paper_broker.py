"""Brokers of the daemon: where the engine's fills go once the RiskManager has allowed them.

PaperBroker records them as `trades` rows (the engine's simulated fill: decision price moved by
slippage, taker fee — the same fill model as `backtester replay`) and mirrors open positions into
`position_state`. DryLiveBroker records what it would send as audit events and writes no trade.
Both are called inside the daemon's per-bar transaction, together with the engine checkpoint.
"""

from __future__ import annotations

import numpy as np

from live.trading_db import (
    audit,
    delete_position_state,
    engine_fill_hash,
    insert_trade,
    iso_utc,
    upsert_position_state,
)
from strategy.layout import POS_LEVERAGE, POS_MARGIN, POS_SIDE
from strategy.records import fill_dict, position_state_fields


def _fill_rows(fills: np.ndarray, symbols: list[str], bar_t_ms: int, epoch: str, config_id: str, mode: str):
    for seq, r in enumerate(fills):
        f = fill_dict(r, symbols)
        notional = f["notional"]
        yield {
            "timestamp": iso_utc(f["t_ms"]),
            "symbol": f["symbol"],
            "type": f["side"],
            "action": f["action"],
            "price": f["price"],
            "size": f["size"],
            "notional": notional,
            "reason": f["reason"],
            "confidence": f["confidence"],
            "pnl": f["pnl"],
            "fee_usd": f["fee"],
            "fee_token": "USDC",
            "fee_rate": f["fee"] / notional if notional else 0.0,
            "balance": f["balance"],
            "entry_atr": f["atr"],
            "meta_json": {"mode": mode, "seq": seq},
            "fill_hash": engine_fill_hash(f"{mode}:{epoch}", bar_t_ms, f["symbol"], f["action"], seq),
            "config_id": config_id,
            "bar_t_ms": int(bar_t_ms),
        }


class PaperBroker:
    def __init__(self, conn, mode: str, symbols: list[str]) -> None:
        self.conn = conn
        self.mode = mode
        self.symbols = symbols

    def record(self, fills: np.ndarray, *, bar_t_ms: int, epoch: str, config_id: str, pos: np.ndarray) -> None:
        trade_ids = {}
        for row in _fill_rows(fills, self.symbols, bar_t_ms, epoch, config_id, self.mode):
            p = pos[self.symbols.index(row["symbol"])]
            if row["action"] in ("OPEN", "ADD") and p[POS_SIDE] != 0.0:
                # the position's leverage and margin after the fill: export_state and the alignment
                # gate rebuild positions from these rows
                row["leverage"] = float(p[POS_LEVERAGE])
                row["margin_used"] = float(p[POS_MARGIN])
            trade_ids[row["symbol"]] = (insert_trade(self.conn, row), row["action"])
        for symbol, (trade_id, action) in trade_ids.items():
            s = self.symbols.index(symbol)
            if pos[s, POS_SIDE] == 0.0:
                delete_position_state(self.conn, symbol)
            else:
                self._mirror_position(symbol, pos[s], trade_id if action == "OPEN" else None)

    def _mirror_position(self, symbol: str, p: np.ndarray, open_trade_id: int | None) -> None:
        fields = position_state_fields(p)
        if open_trade_id is not None:
            fields["open_trade_id"] = open_trade_id
        upsert_position_state(self.conn, symbol, **fields)


class DryLiveBroker:
    """dry_live: every order the engine would send is an ORDER_WOULD_SEND audit event; nothing else."""

    def __init__(self, conn, symbols: list[str]) -> None:
        self.conn = conn
        self.symbols = symbols

    def record(self, fills: np.ndarray, *, bar_t_ms: int, epoch: str, config_id: str, pos: np.ndarray) -> None:
        for row in _fill_rows(fills, self.symbols, bar_t_ms, epoch, config_id, "dry_live"):
            audit(self.conn, "ORDER_WOULD_SEND", row["symbol"], "info",
                  {k: row[k] for k in ("action", "type", "price", "size", "notional", "reason", "bar_t_ms")})
