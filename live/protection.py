"""Protective orders: every live position keeps a reduce-only trigger order resting on the exchange.

Why: the trader acts on closed bars, and while its process is down (a crash, a deploy, a host
reboot) nothing at all watches an open position. A trigger order resting on the exchange does.
This module's one job is to keep the account's resting trigger orders equal to what the engine's
state says they should be, and to book into the engine what those orders did.

What rests, per engine position (``wanted_for``; the levels come from the engine state and the
kernel's own functions, never from a second exit implementation):

- ``engine.exit_fill: close`` (the engine's exits go out as orders at the bar close, as before):
  one catastrophe stop (role ``stop``, ``tpsl: sl``) at
      level = POS.STOP - side x k x POS.ENTRY_ATR,   k = AI_QUANT_LIVE_PROTECTIVE_STOP_ATR (1.5)
  i.e. k ATRs at entry beyond the engine's current stop (the stop-loss, or the trailing /
  break-even stop once it took over). Distances are in ATRs at entry like every stop distance of
  the strategy, so the gap never collapses when the stop reaches break-even. It is rounded to the
  tick (nearest); k = 0 places none (a warning line at start).
- ``engine.exit_fill: touch``: the exits themselves rest, at the levels ``range_exits`` uses: the
  stop (POS.STOP, ``sl``, rounded toward the market so the exchange never fires later than the
  replay would), the partial take-profit (size x tp_partial_pct, once, unless the kernel would hold
  it back as too small) and the full take-profit while ``full_tp_active`` (``tp``).

Each order is market-on-trigger and reduce-only, sized to the engine's position. It is placed
after the bar that opened the position, modified (by cloid) when the engine's size or level
changes (adds, partial closes, trailing and break-even moves), cancelled when the position is
gone. Every order is an OMS intent (action PROTECT) committed before it is sent, with a
deterministic cloid (dedupe key PROTECT:<symbol>:<side>:<position open time>:<role>#<n>); an
UNKNOWN answer is resolved by asking the exchange about the cloid, never by sending again.

What they did: a trigger fill reaches ``oms_fills`` through the fill intake (WS / REST, matched by
oid or cloid) or through a status question asked here; it is booked into the engine exactly once
(a fill is booked when its ``trades`` row exists):
- an exit the engine decides (``execute`` of an exit, via ``Guarded``) first claims the unbooked
  trigger fills of its symbol (asking the exchange about the symbol's resting orders first): the
  engine's exit IS that fill, so no second close is sent; in touch mode this is how every stop or
  target exit is booked, with the engine's reason, at the bar the replay books it on;
- a fill the engine did not claim (close mode: at once; touch mode: once the engine has processed
  the bar the fill happened in, e.g. a fill while the trader was down) closes the engine's
  position by the filled fraction with reason ``protective_stop`` (``Engine.close_external``, the
  kernel's close_position, then the exchange's real price, fee and pnl via apply_real_fills).
On start, and every reconcile period, the exchange's trigger orders are checked against ours
(``verify``): one of ours no longer resting is asked about (so a stop that filled while the trader
was down is booked before any bar runs, and one cancelled behind our back is replaced), and a
trigger order with our cloid prefix that no open intent owns, on a symbol the engine does not
hold, is cancelled as an orphan. A position without its order gets one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from live.exchange_errors import is_transient
from live.fill_adjust import apply_real_fills
from live.fill_intake import exchange_trade_row
from live.hl_broker import OrderRefused, round_price, round_size
from live.oms import Execution, Intent, OrderRequest, dedupe_key, is_our_cloid
from live.trading_db import transaction
from strategy.kernel import KERNEL_CPU
from strategy.layout import EXIT_FILL, FL_FEE, FL_PNL, POS, A, R
from strategy.params import P

ACTION = "PROTECT"
ACTIVE = ("NEW", "SENT", "UNKNOWN", "PARTIAL")
ROLE_STOP, ROLE_TP1, ROLE_TP = "stop", "tp1", "tp"
ROLE_OF_REASON = {"stop_loss": ROLE_STOP, "trailing_stop": ROLE_STOP, "breakeven_stop": ROLE_STOP,
                  "take_profit_partial": ROLE_TP1, "take_profit": ROLE_TP}


@dataclass(frozen=True)
class Want:
    """One trigger order the engine state asks for."""

    symbol: str
    role: str
    tpsl: str
    is_buy: bool
    size: float
    trigger_px: float
    open_t: int

    @property
    def side(self) -> str:
        return "BUY" if self.is_buy else "SELL"


def protective_level(ps, k: float) -> float:
    """The catastrophe stop of exit_fill close: k entry ATRs beyond the engine's current stop."""
    return float(ps[POS.STOP] - ps[POS.SIDE] * k * ps[POS.ENTRY_ATR])


def wanted_for(symbol: str, p, ps, k: float, sz_decimals: int) -> list[Want]:
    """The trigger orders one engine position needs (see the module docstring)."""
    side = float(ps[POS.SIDE])
    size = round(float(ps[POS.SIZE]), sz_decimals)
    if side == 0.0 or size <= 0:
        return []
    buy, open_t = side < 0, int(ps[POS.OPEN_T])

    def want(role: str, tpsl: str, sz: float, level: float, up: bool | None) -> Want:
        return Want(symbol, role, tpsl, buy, sz, round_price(level, sz_decimals, up=up), open_t)

    if p[P.EXIT_FILL] != EXIT_FILL.TOUCH:
        if k <= 0 or not protective_level(ps, k) > 0:
            return []
        return [want(ROLE_STOP, "sl", size, protective_level(ps, k), None)]
    out = [want(ROLE_STOP, "sl", size, float(ps[POS.STOP]), side > 0)]  # toward the market
    entry, atr = float(ps[POS.ENTRY]), float(ps[POS.ENTRY_ATR])
    if p[P.ENABLE_PARTIAL_TP] != 0.0 and ps[POS.TP1_DONE] == 0.0:
        level = entry + side * KERNEL_CPU.partial_tp_mult(p, ps) * atr
        if KERNEL_CPU.partial_leaves_too_little(p, ps, level):
            return out  # the kernel holds the partial (and the target with it) on such a bar
        part = round_size(size * float(p[P.TP_PARTIAL_PCT]), sz_decimals)
        if part > 0:
            out.append(want(ROLE_TP1, "tp", part, level, side < 0))
        if p[P.TP_PARTIAL_ATR_MULT] <= 0.0:
            return out  # after the partial the target is off: the rest is the trailing stop's
    if KERNEL_CPU.full_tp_active(p, ps):
        out.append(want(ROLE_TP, "tp", size, entry + side * float(ps[POS.TP_MULT]) * atr, side < 0))
    return out


class Guarded:
    """The daemon's executor, with exits first claiming the trigger fills that already did them."""

    def __init__(self, inner, protection: Protection) -> None:
        self.inner, self.protection = inner, protection

    def execute(self, req: OrderRequest) -> Execution:
        if not req.is_entry:
            claimed = self.protection.claim(req)
            if claimed is not None:
                return claimed
        return self.inner.execute(req)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


class Protection:
    """Resting protective orders of one live daemon (``host``: its engine, symbols, OMS, broker,
    executor, trade recorder, trading DB connection and checkpoint)."""

    def __init__(self, host, k_atr: float, verify_every_s: float = 10.0) -> None:
        self.host = host
        self.k = float(k_atr)
        self.verify_every_s = verify_every_s
        self._next_verify = 0.0
        self.refused: dict[tuple[str, str], tuple[float, float]] = {}  # not retried until the level/size moves
        self.claims: dict[tuple, Execution] = {}  # exits of the bar being run that took trigger fills
        self.failures = 0

    @classmethod
    def wire(cls, host) -> Protection | None:
        """Live mode only: wrap the daemon's executor and the reconciler's position alignment."""
        if host.settings.mode != "live" or host.executor is None:
            return None
        prot = cls(host, host.settings.live.protective_stop_atr, host.settings.live.reconcile_secs)
        host.executor = Guarded(host.executor, prot)
        host.reconciler.align = prot.aligner(host.reconciler.align)
        return prot

    # ---------------------------------------------------------------- host views
    @property
    def _raw(self):
        ex = self.host.executor
        return ex.inner if isinstance(ex, Guarded) else ex

    @property
    def _conn(self):
        return self.host.conn

    def _touch(self, s: int) -> bool:
        return self.host.engine.params[s, P.EXIT_FILL] == EXIT_FILL.TOUCH

    def _log(self, level: str, text: str) -> None:
        getattr(self.host.log, level)(f"protection: {text}")

    # ---------------------------------------------------------------- entry points
    def on_start(self) -> None:
        """Ask about every resting order of ours (one that filled while the trader was down gets its
        fills recorded), book what the engine has not, then place / move / cancel to match."""
        if self.k <= 0 and not all(self._touch(s) for s in range(len(self.host.symbols))):
            self._log("warning", "AI_QUANT_LIVE_PROTECTIVE_STOP_ATR=0: no protective stop rests on the exchange; "
                      "while the trader is down its positions are unprotected")
        self._next_verify = 0.0  # verify now, inside sync: an unreachable exchange must not stop the start
        self.sync()

    def sync(self) -> None:
        """Once per loop, after the bars and the fill intake: (every reconcile period) check the
        exchange's trigger orders against ours, book what filled, then place / move / cancel."""
        try:
            if time.monotonic() >= self._next_verify:
                self.verify()
            self.settle()
            self.converge()
        except Exception as exc:  # only exchange trouble is ridden out; anything else is a bug and raises
            if not (isinstance(exc, OrderRefused) or is_transient(exc)):
                raise
            self.failures += 1
            self._log("warning", f"exchange trouble ({type(exc).__name__}: {str(exc)[:200]}); retried next loop")
        else:
            self.failures = 0

    # ---------------------------------------------------------------- the orders we hold
    def active_intents(self, symbol: str | None = None) -> list[Intent]:
        sql = f"SELECT * FROM oms_intents WHERE action = ? AND status IN ({','.join('?' * len(ACTIVE))})"
        args: list = [ACTION, *ACTIVE]
        if symbol is not None:
            sql += " AND symbol = ?"
            args.append(symbol.upper())
        rows = self._conn.execute(sql + " ORDER BY created_ts_ms", args)
        return [Intent.from_row(r) for r in rows]

    def resting(self) -> dict[str, list[dict]]:
        """Per symbol, the protective orders believed resting: role, trigger price, size, oid."""
        out: dict[str, list[dict]] = {}
        for it in self.active_intents():
            out.setdefault(it.symbol, []).append({"role": it.meta.get("role"), "trigger_px": it.meta.get("trigger_px"),
                                                 "size": it.requested_size, "oid": it.exchange_order_id,
                                                 "status": it.status})
        return out

    def heartbeat(self) -> dict[str, str]:
        """Heartbeat fields: protect=SYM:role@px#oid,... and unprotected=SYM,... (or none)."""
        held = [sym for sym, _ in self.host._engine_positions().items()]
        rest = self.resting()
        items = [f"{sym}:{o['role']}@{o['trigger_px']:g}#{o['oid']}" for sym in sorted(rest) for o in rest[sym]
                 if o["trigger_px"] is not None]
        bare = [sym for sym in held if sym not in rest]
        return {"protect": ",".join(items) or "none", "unprotected": ",".join(sorted(bare)) or "none"}

    def verify(self) -> None:
        """The exchange's resting trigger orders against ours: one of ours that is no longer resting
        (filled, or cancelled behind our back) is asked about (fills recorded; converge then places a
        new one if the position still needs it); a trigger order with our cloid prefix that no open
        intent owns, on a symbol the engine does not hold, is an orphan and is cancelled."""
        self._next_verify = time.monotonic() + self.verify_every_s
        orders = self.host.hl.trigger_orders()
        resting = {str(o.get("cloid") or "").lower() for o in orders}
        mine = self.active_intents()
        for intent in mine:
            if intent.status in ("SENT", "PARTIAL") and intent.client_order_id.lower() not in resting:
                self._ask(intent)
        owned = {i.client_order_id.lower() for i in mine}
        held = self.host._engine_positions()
        for o in orders:
            cloid = str(o.get("cloid") or "")
            if not is_our_cloid(cloid, self.host.oms.prefix) or cloid.lower() in owned or o["coin"] in held:
                continue
            ok, text = self.host.hl.cancel_by_cloid(o["coin"], cloid)
            self.host.oms.reconcile_event("CANCEL_ORPHAN_TRIGGER", symbol=o["coin"], cloid=cloid, oid=o.get("oid"),
                                          result="success" if ok else "error",
                                          detail={"reply": text, "triggerPx": o.get("triggerPx")})
            self._log("warning", f"orphan trigger order {o['coin']} oid={o.get('oid')} trigger={o.get('triggerPx')} "
                                 f"on a flat symbol: {'cancelled' if ok else text}")

    # ---------------------------------------------------------------- converge
    def converge(self) -> None:
        host = self.host
        pos, params = host.engine.state.pos, host.engine.params
        want: dict[tuple[str, str], Want] = {}
        pending = {i.symbol for i, _ in self._unbooked()}  # filled, the engine books it at its bar: hands off
        for s, sym in enumerate(host.symbols):
            if sym in pending:
                continue
            for w in wanted_for(sym, params[s], pos[s], self.k, host.hl.sz_decimals(sym)):
                want[(sym, w.role)] = w
        have: dict[tuple[str, str], Intent] = {}
        for it in self.active_intents():
            key = (it.symbol, str(it.meta.get("role")))
            if key in have:  # two of one role (a crash between place and bookkeeping): keep the newest
                self._cancel(have[key], "duplicate")
            have[key] = it
        for key, w in want.items():
            cur = have.pop(key, None)
            if cur is not None and (cur.meta.get("open_t") != w.open_t or cur.side != w.side):
                self._cancel(cur, "position replaced")
                cur = None
            if cur is not None and cur.status in ("NEW", "UNKNOWN"):
                cur = self._resolve(cur)
            if self.refused.get(key) == (w.trigger_px, w.size):
                continue
            if cur is None:
                self._place(w)
            elif (cur.meta.get("trigger_px"), cur.requested_size) != (w.trigger_px, w.size):
                self._modify(cur, w)
        for cur in have.values():
            if cur.symbol not in pending:
                self._cancel(cur, "position closed")

    def _resolve(self, intent: Intent) -> Intent | None:
        """A NEW (crash between commit and send) or UNKNOWN intent: what the exchange says about its
        cloid, waited for as long as an order signed by a dead process could still land."""
        raw = self._raw
        if intent.status == "UNKNOWN":
            raw.resolve(intent)
        else:
            found = raw._ask_exchange(intent, deadline=raw._deadline(max(intent.created_ts_ms, raw.started_ms)))
            if found is None:
                self.host.oms.set_status(intent, "EXPIRED", only_from=("NEW",), error="never reached the exchange")
        fresh = self.host.oms.get(intent.intent_id)
        return fresh if fresh is not None and fresh.status in ("SENT", "PARTIAL") else None

    def _place(self, w: Want) -> None:
        ok, why = self._raw.gate.may_send()
        if not ok:
            return
        oms = self.host.oms
        gen = self._conn.execute("SELECT COUNT(*) FROM oms_intents WHERE action = ? AND dedupe_key LIKE ?",
                                 (ACTION, dedupe_key(ACTION, w.symbol, w.side, w.open_t, w.role + "#") + "%"),
                                 ).fetchone()[0]
        intent, _ = oms.create_intent(symbol=w.symbol, action=ACTION, side=w.side, size=w.size,
                                      notional=w.size * w.trigger_px, decision_ts_ms=w.open_t, seq=f"{w.role}#{gen}",
                                      reason=w.role, meta=self._meta(w))
        res = self.host.hl.place_trigger(w.symbol, w.is_buy, w.size, w.trigger_px, tpsl=w.tpsl,
                                         cloid=intent.client_order_id)
        oms.record_order(intent, order_type=f"trigger_{w.tpsl}", size=w.size, status=res.status,
                         raw={"response": res.raw, "error": res.error, "trigger_px": w.trigger_px}, oid=res.oid)
        if res.status == "UNKNOWN":
            oms.set_status(intent, "UNKNOWN", only_from=("NEW",), error=res.error, sent=True)
            self._raw.resolve(intent)
            return
        if res.status == "REJECTED":
            oms.set_status(intent, "REJECTED", only_from=("NEW",), error=res.error, sent=True)
            self.refused[(w.symbol, w.role)] = (w.trigger_px, w.size)
            self._audit("PROTECTION_REFUSED", w, {"error": res.error})
            return
        oms.set_status(intent, "SENT", only_from=("NEW",), oid=res.oid, sent=True)
        self.refused.pop((w.symbol, w.role), None)
        self._audit("PROTECTION_PLACED", w, {"oid": res.oid, "cloid": intent.client_order_id})

    def _modify(self, cur: Intent, w: Want) -> None:
        if not self._raw.gate.may_send()[0]:
            return  # the hard kill blocks every order: the resting one stays as it is
        res = self.host.hl.modify_trigger(w.symbol, w.is_buy, w.size, w.trigger_px, tpsl=w.tpsl,
                                          cloid=cur.client_order_id)
        self.host.oms.record_order(cur, order_type=f"trigger_{w.tpsl}_modify", size=w.size, status=res.status,
                                   raw={"response": res.raw, "error": res.error, "trigger_px": w.trigger_px},
                                   oid=res.oid)
        if res.status == "RESTING":
            self._update(cur, w.size, w.trigger_px, res.oid)
            self._log("info", f"{w.symbol} {w.role} moved to {w.trigger_px:g} size {w.size:g} (oid {res.oid})")
        elif res.status == "REJECTED" and "modify" not in str(res.error):
            self.refused[(w.symbol, w.role)] = (w.trigger_px, w.size)
            self._audit("PROTECTION_REFUSED", w, {"error": res.error, "kept": cur.meta.get("trigger_px")})
        else:  # gone (filled / cancelled) or no answer: the exchange says what it holds
            self._ask(cur)

    def _cancel(self, cur: Intent, why: str) -> None:
        ok, text = self.host.hl.cancel_by_cloid(cur.symbol, cur.client_order_id)
        self.host.oms.record_order(cur, order_type="trigger_cancel", size=cur.requested_size,
                                   status="CANCELLED" if ok else "ERROR", raw={"reply": text, "why": why})
        if ok:
            self.host.oms.set_status(cur, "CANCELLED", only_from=ACTIVE)
            self._log("info", f"{cur.symbol} {cur.meta.get('role')} cancelled ({why})")
        else:
            self._ask(cur)

    def _ask(self, intent: Intent) -> None:
        """The exchange's word on one of our orders: still open (oid/level refreshed), or gone,
        with its fills recorded (they are booked by settle)."""
        st = self.host.hl.order_status(intent.client_order_id)
        if st.get("status") != "order":
            self.host.oms.set_status(intent, "EXPIRED", only_from=("NEW", "UNKNOWN"), error="unknown to the exchange")
            return
        order, status = st["order"]["order"], str(st["order"]["status"])
        oid = int(order["oid"])
        if status == "triggered":
            return  # fired, its market order not done yet: its fills come next (intake or the next ask)
        if status == "open":
            px = float(order.get("triggerPx") or intent.meta.get("trigger_px") or 0.0)
            self._update(intent, float(order.get("sz") or intent.requested_size), px, oid)
            return
        fills = self._raw._record_fills(intent, self.host.hl.fills_for_oid(oid), "cloid")
        filled = sum(float(f["sz"]) for f in fills)
        # gone: FILLED when it filled at all (a market trigger's unfilled rest is cancelled), else CANCELLED
        self.host.oms.set_status(intent, "FILLED" if filled else "CANCELLED", only_from=ACTIVE,
                                 error=None if filled else f"exchange status {status}")

    def _update(self, intent: Intent, size: float, trigger_px: float, oid: int | None) -> None:
        meta = {**intent.meta, "trigger_px": trigger_px}
        self._conn.execute("UPDATE oms_intents SET requested_size = ?, requested_notional = ?, meta_json = ?, "
                           "exchange_order_id = COALESCE(?, exchange_order_id) WHERE intent_id = ?",
                           (size, size * trigger_px, json.dumps(meta, sort_keys=True), None if oid is None else str(oid),
                            intent.intent_id))
        intent.meta, intent.requested_size = meta, size

    # ---------------------------------------------------------------- what the orders did
    def _unbooked(self, symbol: str | None = None) -> list[tuple[Intent, dict]]:
        sql = ("SELECT i.*, f.raw_json AS fill_json FROM oms_fills f JOIN oms_intents i ON i.intent_id = f.intent_id "
               "WHERE i.action = ? AND NOT EXISTS (SELECT 1 FROM trades t WHERE t.fill_hash = f.fill_hash "
               "AND t.fill_tid = f.fill_tid)")
        args: list = [ACTION]
        if symbol is not None:
            sql += " AND f.symbol = ?"
            args.append(symbol.upper())
        rows = self._conn.execute(sql + " ORDER BY f.ts_ms, f.fill_tid", args).fetchall()
        claimed = {(f["hash"], f["tid"]) for ex in self.claims.values() for f in ex.fills}
        out = [(Intent.from_row(r), json.loads(r["fill_json"])) for r in rows]
        return [(i, f) for i, f in out if (f["hash"], f["tid"]) not in claimed]

    def claim(self, req: OrderRequest) -> Execution | None:
        """The engine decided an exit: the trigger fills of that symbol not booked yet ARE it."""
        key = (req.symbol, req.decision_ts_ms, str(req.seq), req.action)
        if key in self.claims:  # the bar is re-run (a refused entry): the same exit, the same fills
            return self.claims[key]
        for intent in self.active_intents(req.symbol):
            if intent.status in ("SENT", "PARTIAL"):
                self._ask(intent)
        found = self._unbooked(req.symbol)
        role = ROLE_OF_REASON.get(str(req.reason))
        same = [x for x in found if x[0].meta.get("role") == role]
        if req.action == "REDUCE" and same:
            found = same  # a partial take-profit is its own order's fill, not the stop's or the target's
        if not found:
            return None
        ex = Execution(found[0][0], [f for _, f in found])
        self.claims[key] = ex
        self._log("info", f"{req.symbol} {req.action} ({req.reason}) is the resting order's fill: "
                          f"{ex.filled_sz:g} @ {ex.avg_px:g}; nothing sent")
        return ex

    def settle(self) -> None:
        """Book the trigger fills no engine exit claimed (close mode at once; touch mode once the
        engine has processed the bar they happened in) as a `protective_stop` close."""
        # a claim lives until its bar is recorded (booked) or the engine moved past that bar without
        # recording it (a re-run that decided otherwise): then its fills are released to the fallback
        last = self.host.last_bar_t
        self.claims = {k: ex for k, ex in self.claims.items()
                       if self._unbooked_any(ex) and (last is None or k[1] > last)}
        by_symbol: dict[str, list[tuple[Intent, dict]]] = {}
        for intent, fill in self._unbooked():
            by_symbol.setdefault(intent.symbol, []).append((intent, fill))
        for sym, items in by_symbol.items():
            if sym not in self.host.symbols:
                continue
            s = self.host.symbols.index(sym)
            last_t = float(self.host.engine.state.acct[A.LAST_T])
            if self._touch(s) and max(int(f.get("time") or 0) for _, f in items) > last_t:
                continue  # the engine books it itself when it steps that bar
            self._book(s, items[0][0], [f for _, f in items])

    def _unbooked_any(self, ex: Execution) -> bool:
        marks = ",".join("(?, ?)" for _ in ex.fills)
        args = [x for f in ex.fills for x in (str(f["hash"]), int(f["tid"]))]
        booked = self._conn.execute(f"SELECT COUNT(*) FROM trades WHERE (fill_hash, fill_tid) IN (VALUES {marks})",
                                    args).fetchone()[0] if ex.fills else 0
        return booked < len(ex.fills)

    def _book(self, s: int, intent: Intent, fills: list[dict]) -> None:
        host = self.host
        engine, sym = host.engine, host.symbols[s]
        ex = Execution(intent, fills)
        ps = engine.state.pos[s]
        closing_buy = fills[0].get("side") == "B"
        t = max(int(f.get("time") or 0) for f in fills)
        if ps[POS.SIDE] == 0 or (ps[POS.SIDE] < 0) != closing_buy:
            rows, adjusted = None, None  # the engine no longer holds that position: the fills are recorded only
        else:
            before = engine.state.copy()
            got, size = ex.filled_sz, float(ps[POS.SIZE])
            fraction = 1.0 if got >= size * (1 - 1e-9) else got / size
            rows = engine.close_external(s, ex.avg_px, t, reason=R.PROTECTIVE_STOP, fraction=fraction)
            adjusted = apply_real_fills(before, engine.state, [(rows[0], ex)])
        bar_t = host.last_bar_t if host.last_bar_t is not None else t
        with transaction(self._conn):
            if adjusted is not None:
                host.broker.pairs = [(adjusted[0], ex)]
                host.broker.record(adjusted, bar_t_ms=bar_t, epoch=host.epoch, config_id=host.cfg.config_id,
                                   pos=engine.state.pos)
                if host.last_bar_t is not None:
                    host._save_checkpoint()
            else:
                self._record_only(ex)
        if adjusted is not None:
            host._risk_now().note_fill(float(adjusted[0, FL_PNL]) - float(adjusted[0, FL_FEE]), True, t)
        self._audit_event("PROTECTIVE_STOP_FILLED", sym, {
            "intent_id": intent.intent_id, "role": intent.meta.get("role"), "size": ex.filled_sz, "px": ex.avg_px,
            "fee": ex.fee, "pnl": ex.closed_pnl, "engine": "closed" if adjusted is not None else "already flat"})

    def _record_only(self, ex: Execution) -> None:
        for f in ex.fills:
            exchange_trade_row(self._conn, ex.intent, f, via="cloid", source="protection", mode="live",
                               reason="protective_stop")

    def aligner(self, inner: Callable[[str, float], str]) -> Callable[[str, float], str]:
        """The reconciler's position alignment, after our trigger fills are asked for and booked: a
        position a protective order closed is booked with its pnl, never just dropped."""
        def align(symbol: str, exchange_szi: float) -> str:
            for intent in self.active_intents(symbol):
                if intent.status in ("SENT", "PARTIAL"):
                    self._ask(intent)
            self.settle()
            mine = self.host._engine_positions().get(symbol, 0.0)
            if abs(mine - exchange_szi) <= 1e-9 * max(1.0, abs(exchange_szi)):
                return "booked the protective order's fill"
            if self._unbooked(symbol):
                return "left for the engine: a protective order filled inside a bar it has not processed"
            return inner(symbol, exchange_szi)
        return align

    # ---------------------------------------------------------------- notes
    @staticmethod
    def _meta(w: Want) -> dict:
        return {"role": w.role, "tpsl": w.tpsl, "trigger_px": w.trigger_px, "open_t": w.open_t}

    def _audit(self, event: str, w: Want, extra: dict) -> None:
        self._audit_event(event, w.symbol, {"role": w.role, "tpsl": w.tpsl, "trigger_px": w.trigger_px,
                                            "size": w.size, **extra})

    def _audit_event(self, event: str, symbol: str, data: dict) -> None:
        """The daemon's audit: the row, a log line and the alert live/alert_rules.py maps it to
        (PROTECTION_REFUSED: unprotected_position; PROTECTIVE_STOP_FILLED: protective_stop)."""
        self.host._audit(event, symbol, data)
