"""The reconciler: the exchange is the truth, the local books follow it.

On start it resolves what a crash left open (UNKNOWN intents by asking the exchange about their
cloid; NEW intents whose bar is no longer tradeable are expired — a NEW intent whose bar is still
tradeable is left to the daemon, which re-runs that bar and sends it then: either way it is
resolved once). Every `reconcile_secs` it records the account's open orders in oms_open_orders,
cancels our stale ones (cloid prefix ours, first seen longer ago than the stale limit; never the
resting protective orders of live/protection.py) by cloid
through risk.allow_cancel, and compares positions with clearinghouseState. Every action is a row
in oms_reconcile_events.

Position alignment rule: same side, different size -> the engine takes the exchange size; the
exchange flat while the engine holds -> the engine position is dropped (closed outside the
daemon, no pnl booked); a position the engine does not hold, or the opposite side, is reported
(POSITION_UNMANAGED) and left alone: the daemon never trades what it did not open.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from live.oms import Intent, Oms, OrderExecutor, is_our_cloid

SIZE_TOL = 1e-9


class Reconciler:
    def __init__(self, oms: Oms, broker, executor: OrderExecutor, *, risk: Callable[[], object],
                 audit: Callable[[str, str | None, dict], None], engine_positions: Callable[[], dict[str, float]],
                 align: Callable[[str, float], str] | None, symbols: list[str], every_s: float = 10.0,
                 stale_ms: int = 30_000, unknown_stale_ms: int = 300_000, cancel_stale: bool = True,
                 now_ms: Callable[[], int] | None = None) -> None:
        self.oms, self.broker, self.executor = oms, broker, executor
        self.risk, self.audit = risk, audit
        self.engine_positions, self.align = engine_positions, align
        self.symbols = set(symbols)
        self.every_s, self.stale_ms, self.unknown_stale_ms = every_s, stale_ms, unknown_stale_ms
        self.cancel_stale = cancel_stale
        self.now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self._next = 0.0

    # ---------------------------------------------------------------- start
    def on_start(self) -> dict[str, int]:
        counts = {"unknown": 0, "new_expired": 0, "new_found": 0, "new_left": 0}
        for intent in self.oms.intents(("UNKNOWN",)):
            self.executor.resolve(intent)
            counts["unknown"] += 1
        for intent in self.oms.intents(("NEW",)):
            outcome = self.executor.resolve_new(intent)
            counts["new_left" if outcome is None else
                   ("new_expired" if outcome.status == "EXPIRED" else "new_found")] += 1
        return counts

    # ---------------------------------------------------------------- periodic
    def maybe_run(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.every_s
        self.run()
        return True

    def run(self) -> None:
        try:
            orders = self.broker.open_orders()
            held = self.broker.positions()
        except Exception as exc:  # the exchange unreachable: report and try again next round
            self.oms.reconcile_event("READ_FAILED", result="error", detail={"error": str(exc)[:500]})
            return
        self._orders(orders)
        self._positions(held)

    def _orders(self, orders: list[dict]) -> None:
        seen = set()
        now = self.now_ms()
        for order in orders:
            seen.add(str(order["oid"]))
            first_seen = self.oms.upsert_open_order(order)
            cloid = order.get("cloid")
            if not self.cancel_stale or not is_our_cloid(cloid, self.oms.prefix):
                continue
            intent = self.oms.by_cloid(cloid)
            if intent is not None and intent.action == "PROTECT":
                continue  # resting on purpose: live/protection.py keeps and cancels those
            limit = self.stale_ms if intent is not None else self.unknown_stale_ms
            if now - first_seen >= limit:
                self._cancel(order, intent)
        self.oms.forget_open_orders_except(seen)

    def _cancel(self, order: dict, intent: Intent | None) -> None:
        coin, cloid = order["coin"], order["cloid"]
        decision = self.risk().allow_cancel(coin)
        if not decision.allowed:
            self.oms.reconcile_event("CANCEL_STALE", symbol=coin, intent_id=intent and intent.intent_id, cloid=cloid,
                                     oid=order["oid"], result=f"blocked:{decision.reason}")
            return
        ok, text = self.broker.cancel_by_cloid(coin, cloid)
        self.risk().note_cancel_sent()
        self.oms.reconcile_event("CANCEL_STALE", symbol=coin, intent_id=intent and intent.intent_id, cloid=cloid,
                                 oid=order["oid"], result="success" if ok else "error", detail={"reply": text})
        if not ok:
            self.audit("CANCEL_FAILED", coin, {"cloid": cloid, "oid": order["oid"], "error": text})
            return
        self.audit("ORDER_CANCELLED", coin, {"cloid": cloid, "oid": order["oid"], "reason": "stale"})
        if intent is not None:
            fills = self.executor._record_fills(intent, self.broker.fills_for_oid(int(order["oid"])), "oid")
            self.oms.set_status(intent, "PARTIAL" if fills else "CANCELLED", only_from=("SENT", "PARTIAL", "UNKNOWN"))

    def _positions(self, held: dict[str, float]) -> None:
        local = self.engine_positions()
        for coin in sorted(set(held) | set(local)):
            ex, mine = held.get(coin, 0.0), local.get(coin, 0.0)
            if abs(ex - mine) <= SIZE_TOL * max(1.0, abs(ex)):
                continue
            detail = {"exchange_szi": ex, "local_szi": mine}
            if coin in self.symbols and self.align is not None and mine != 0 and (ex == 0 or (ex > 0) == (mine > 0)):
                result = self.align(coin, ex)
                kind = "POSITION_ALIGNED"
            else:
                result, kind = "left alone", "POSITION_UNMANAGED"
            self.oms.reconcile_event(kind, symbol=coin, result=result, detail=detail)
            self.audit(kind, coin, {**detail, "result": result})
