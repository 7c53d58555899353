"""The venue: a synthetic book around the replayed price, order rules, fills and positions.

Everything here is synchronous and single-threaded (the server calls it from its event
loop), and every state change appends an event that the WebSocket hub turns into pushes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from live.sandbox.numbers import fmt, parse_decimal, price_is_valid, round_px, round_sz, size_is_valid
from live.sandbox.pricepath import AssetSpec, Bar, PricePath, SandboxConfigError
from live.sandbox.state import Account, Order

TAKER_FEE = 0.00045
MAKER_FEE = 0.00015
MIN_NOTIONAL = 10.0
DEFAULT_LEVERAGE = 20

# Book-shape bounds: 10% half-spread (and level step) is already far wider than any listed perp, and a
# level beyond $1e12 is a typo; larger values only produce zero or absurd prices and sizes.
MAX_SPREAD_BPS = 1_000.0
MAX_LEVEL_NOTIONAL = 1e12

ERR_MIN_VALUE = "Order must have minimum value of $10."
ERR_TICK = "Price must be divisible by tick size."
ERR_SIZE = "Order has invalid size."
ERR_PRICE = "Order has invalid price."
ERR_MARGIN = "Insufficient margin to place order."
ERR_REDUCE_ONLY = "Reduce only order would increase position."
ERR_IOC = "Order could not immediately match against any resting orders."
ERR_CANCEL = "Order was never placed, already canceled, or filled."
ERR_TRIGGER = "Invalid TP/SL price."
ERR_MODIFY = "Cannot modify canceled or filled order"
# A market trigger executes as a market order whose worst price is this far from the trigger price
# (Hyperliquid's market TP/SL use a 10% slippage tolerance); a thinner book fills what it can.
MARKET_TRIGGER_SLIPPAGE = 0.10


class VenueError(Exception):
    """A whole-request failure: becomes {"status":"err","response": str(exc)}."""


@dataclass(frozen=True)
class BookSpec:
    """Synthetic depth: levels spaced level_step_bps apart, each worth level_notional USD."""

    half_spread_bps: float = 1.0
    depth_levels: int = 20
    level_step_bps: float = 2.0
    level_notional: float = 250_000.0

    def __post_init__(self) -> None:
        """A negative spread crosses the book, and a half-spread of 100% or more quotes bids at or below
        zero (the tick arithmetic then fails mid-request): bad depth is refused at construction."""
        problem = _book_problem(self)
        if problem:
            raise SandboxConfigError(f"book: {problem}")


def _book_problem(b: BookSpec) -> str | None:
    """The first bad field, described; NaN fails every comparison, so it is caught too."""
    if not 0 <= b.half_spread_bps <= MAX_SPREAD_BPS:
        return f"half_spread_bps={b.half_spread_bps!r} must be within 0..{MAX_SPREAD_BPS:g}"
    if not 0 <= b.level_step_bps <= MAX_SPREAD_BPS:
        return f"level_step_bps={b.level_step_bps!r} must be within 0..{MAX_SPREAD_BPS:g}"
    if not (isinstance(b.depth_levels, int) and b.depth_levels >= 1):
        return f"depth_levels={b.depth_levels!r} must be a whole number >= 1"
    if not 0 < b.level_notional <= MAX_LEVEL_NOTIONAL:
        return f"level_notional={b.level_notional!r} must be > 0 and <= {MAX_LEVEL_NOTIONAL:g}"
    return None


class Venue:
    def __init__(self, assets: Sequence[AssetSpec], path: PricePath, accounts: Mapping[str, float],
                 book: BookSpec = BookSpec(), funding: Mapping[str, Mapping[int, tuple[float, float | None]]] | None = None):
        self.assets = list(assets)
        self.asset_index = {a.name: i for i, a in enumerate(self.assets)}
        self.path = path
        self.book_spec = book
        self.funding = {k: dict(v) for k, v in (funding or {}).items()}
        self.accounts = {u.lower(): Account(u.lower(), float(b)) for u, b in accounts.items()}
        self.orders: dict[int, Order] = {}
        self.open_oids: list[int] = []
        self.cloids: dict[tuple[str, str], int] = {}
        self.events: list[tuple] = []
        self._next_oid = 1_000_000
        self._next_tid = 5_000_000

    # ---- market -------------------------------------------------------------------------
    def spec(self, coin: str) -> AssetSpec:
        return self.assets[self.asset_index[coin]]

    def last_price(self, coin: str) -> float:
        bar = self.path.current(coin)
        return bar.c if bar else 0.0

    def book(self, coin: str) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """(bids, asks) as (px, sz) best first, on valid ticks, from the current close."""
        return self.book_at(coin, self.last_price(coin))

    def book_at(self, coin: str, close: float) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The synthetic book's shape around `close` (a triggered order meets the book where the
        price crossed its trigger, not where the bar closed)."""
        if close <= 0:
            return [], []
        sd = self.spec(coin).sz_decimals
        bs = self.book_spec
        hs = bs.half_spread_bps / 1e4
        bid0, ask0 = round_px(close * (1 - hs), sd, up=False), round_px(close * (1 + hs), sd, up=True)
        if ask0 <= bid0:
            ask0 = round_px(bid0 * (1 + 1e-9), sd, up=True)
        bids, asks = [], []
        for k in range(bs.depth_levels):
            step = k * bs.level_step_bps / 1e4
            b = round_px(bid0 * (1 - step), sd, up=False)
            a = round_px(ask0 * (1 + step), sd, up=True)
            if bids and b >= bids[-1][0]:
                b = round_px(bids[-1][0] * (1 - 1e-9), sd, up=False)
            if asks and a <= asks[-1][0]:
                a = round_px(asks[-1][0] * (1 + 1e-9), sd, up=True)
            bids.append((b, max(round_sz(bs.level_notional / b, sd), 10.0 ** -sd)))
            asks.append((a, max(round_sz(bs.level_notional / a, sd), 10.0 ** -sd)))
        return bids, asks

    def mid(self, coin: str) -> float:
        bids, asks = self.book(coin)
        return (bids[0][0] + asks[0][0]) / 2 if bids and asks else 0.0

    # ---- accounts -----------------------------------------------------------------------
    def account(self, user: str) -> Account:
        acct = self.accounts.get(user.lower())
        if acct is None:
            raise VenueError(f"User or API Wallet {user.lower()} does not exist.")
        return acct

    def leverage_of(self, acct: Account, coin: str) -> tuple[int, bool]:
        return acct.leverage.get(coin, (min(DEFAULT_LEVERAGE, self.spec(coin).max_leverage), True))

    def unrealized(self, acct: Account) -> float:
        return sum(p.szi * (self.mid(c) - p.entry_px) for c, p in acct.positions.items() if p.szi)

    def account_value(self, acct: Account) -> float:
        return acct.balance + self.unrealized(acct)

    def margin_used(self, acct: Account) -> float:
        return sum(abs(p.szi) * self.mid(c) / self.leverage_of(acct, c)[0] for c, p in acct.positions.items() if p.szi)

    def order_margin(self, acct: Account) -> float:
        total = 0.0
        for oid in self.open_oids:
            o = self.orders[oid]
            if o.user == acct.user and not o.reduce_only:
                total += o.sz * o.limit_px / self.leverage_of(acct, o.coin)[0]
        return total

    def update_leverage(self, user: str, asset: int, is_cross: bool, leverage: int) -> None:
        acct = self.account(user)
        if not isinstance(asset, int) or not 0 <= asset < len(self.assets):
            raise VenueError(f"Invalid asset: {asset}")
        spec = self.assets[asset]
        if not isinstance(leverage, int) or leverage < 1 or leverage > spec.max_leverage:
            raise VenueError(f"Invalid leverage value: {leverage} (max {spec.max_leverage}x for {spec.name}).")
        old = self.leverage_of(acct, spec.name)
        acct.leverage[spec.name] = (leverage, bool(is_cross))
        if self.margin_used(acct) + self.order_margin(acct) > self.account_value(acct) + 1e-9:
            acct.leverage[spec.name] = old
            raise VenueError("Insufficient margin to update leverage.")

    # ---- orders -------------------------------------------------------------------------
    def place_orders(self, user: str, wires: Sequence[Mapping]) -> list:
        acct = self.account(user)
        return [self._place_one(acct, w) for w in wires]

    def _place_one(self, acct: Account, w: Mapping) -> dict:
        try:
            order = self._validate(acct, w)
        except _Reject as rej:
            return {"error": str(rej)}
        return self._admit(acct, order)

    def _admit(self, acct: Account, order: Order) -> dict:
        self.orders[order.oid] = order
        if order.cloid:
            self.cloids[(acct.user, order.cloid)] = order.oid
        if order.is_trigger:
            self._rest(order)
            return {"resting": _with_cloid({"oid": order.oid}, order)}
        return self._execute_new(acct, order)

    def _validate(self, acct: Account, w: Mapping) -> Order:
        asset = w.get("a")
        if not isinstance(asset, int) or not 0 <= asset < len(self.assets):
            raise _Reject(f"Invalid asset: {asset}")
        spec = self.assets[asset]
        px, sz = parse_decimal(w.get("p")), parse_decimal(w.get("s"))
        if px is None or px <= 0:
            raise _Reject(ERR_PRICE)
        if sz is None or not size_is_valid(sz, spec.sz_decimals):
            raise _Reject(ERR_SIZE)
        if not price_is_valid(px, spec.sz_decimals):
            raise _Reject(ERR_TICK)
        is_buy, reduce_only = bool(w.get("b")), bool(w.get("r"))
        kind = w.get("t") or {}
        trigger = kind.get("trigger") if isinstance(kind, Mapping) else None
        tif = (kind.get("limit") or {}).get("tif") if isinstance(kind, Mapping) and "limit" in kind else None
        if trigger is None and tif not in ("Gtc", "Ioc", "Alo"):
            raise _Reject("Invalid order type.")
        trig_px = None
        if trigger is not None:
            trig_px = parse_decimal(trigger.get("triggerPx"))
            if trig_px is None or trig_px <= 0 or trigger.get("tpsl") not in ("tp", "sl"):
                raise _Reject(ERR_TRIGGER)
            if not price_is_valid(trig_px, spec.sz_decimals):
                raise _Reject(ERR_TICK)
        pos = acct.position(spec.name)
        if reduce_only and (pos.szi == 0 or (pos.szi > 0) == is_buy):
            raise _Reject(ERR_REDUCE_ONLY)
        if not reduce_only and float(px * sz) < MIN_NOTIONAL:
            raise _Reject(ERR_MIN_VALUE)
        if trigger is not None:
            self._check_trigger_side(spec.name, is_buy, trigger["tpsl"], float(trig_px))
        if not reduce_only:
            self._check_margin(acct, spec.name, is_buy, float(sz), float(px), tif == "Ioc" or trigger is not None)
        cloid = w.get("c")
        self._next_oid += 1
        return Order(oid=self._next_oid, user=acct.user, coin=spec.name, asset=asset, is_buy=is_buy,
                     limit_px=float(px), sz=float(sz), orig_sz=float(sz), reduce_only=reduce_only,
                     tif=tif or "Gtc", timestamp=self.path.now_ms, cloid=cloid if isinstance(cloid, str) else None,
                     trigger_px=None if trig_px is None else float(trig_px),
                     tpsl=trigger["tpsl"] if trigger else None,
                     is_market_trigger=bool(trigger.get("isMarket")) if trigger else False,
                     status_ts=self.path.now_ms)

    def _check_trigger_side(self, coin: str, is_buy: bool, tpsl: str, trig: float) -> None:
        """A sell stop must sit below the price, a sell take-profit above it (mirrored for buys)."""
        mark = self.mid(coin)
        above = trig > mark
        wants_above = (tpsl == "tp") != is_buy
        if above != wants_above:
            raise _Reject(ERR_TRIGGER)

    def _check_margin(self, acct: Account, coin: str, is_buy: bool, sz: float, px: float, at_market: bool) -> None:
        pos = acct.position(coin)
        signed = sz if is_buy else -sz
        increase = max(abs(pos.szi + signed) - abs(pos.szi), 0.0) if pos.szi * signed < 0 else sz
        ref_px = self.mid(coin) if at_market else px
        need = increase * ref_px / self.leverage_of(acct, coin)[0]
        free = self.account_value(acct) - self.margin_used(acct) - self.order_margin(acct)
        if need > free + 1e-9:
            raise _Reject(ERR_MARGIN)

    def _execute_new(self, acct: Account, order: Order) -> dict:
        bids, asks = self.book(order.coin)
        crosses = (asks and order.limit_px >= asks[0][0]) if order.is_buy else (bids and order.limit_px <= bids[0][0])
        if order.tif == "Alo" and crosses:
            del self.orders[order.oid]
            self._forget_cloid(order)
            bbo = f"{fmt(bids[0][0])}@{fmt(asks[0][0])}"
            return {"error": f"Post only order would have immediately matched, bbo was {bbo}."}
        if order.tif == "Ioc" and not crosses:
            del self.orders[order.oid]
            self._forget_cloid(order)
            return {"error": ERR_IOC}
        filled_sz, notional = self._take_liquidity(acct, order, asks if order.is_buy else bids)
        if filled_sz == 0 and order.tif == "Ioc":
            del self.orders[order.oid]
            self._forget_cloid(order)
            return {"error": ERR_IOC}
        if order.sz <= 0:
            self._finish(order, "filled")
        elif order.tif == "Ioc":
            self._finish(order, "canceled")
        else:
            self._rest(order)
            return {"resting": _with_cloid({"oid": order.oid}, order)}
        avg = notional / filled_sz
        sd = self.spec(order.coin).sz_decimals
        return {"filled": _with_cloid({"totalSz": fmt(round(filled_sz, sd)), "avgPx": fmt(avg, 8), "oid": order.oid}, order)}

    def _take_liquidity(self, acct: Account, order: Order, levels: list[tuple[float, float]]) -> tuple[float, float]:
        sd = self.spec(order.coin).sz_decimals
        filled, notional, fills = 0.0, 0.0, []
        for px, avail in levels:
            if order.sz <= 0 or (px > order.limit_px if order.is_buy else px < order.limit_px):
                break
            qty = round(min(avail, self._reduce_cap(acct, order)), sd)
            if qty <= 0:
                break
            fills.append(self._fill(acct, order, px, qty, crossed=True, time_ms=self.path.now_ms))
            filled, notional = filled + qty, notional + qty * px
        if fills:
            self.events.append(("fills", acct.user, fills))
        return filled, notional

    def _reduce_cap(self, acct: Account, order: Order) -> float:
        if not order.reduce_only:
            return order.sz
        return min(order.sz, abs(acct.position(order.coin).szi))

    def _rest(self, order: Order) -> None:
        order.status, order.status_ts = "open", self.path.now_ms
        self.open_oids.append(order.oid)
        self.events.append(("order", order.user, self._order_update(order)))

    def _finish(self, order: Order, status: str) -> None:
        order.status, order.status_ts = status, self.path.now_ms
        if order.oid in self.open_oids:
            self.open_oids.remove(order.oid)
        self.events.append(("order", order.user, self._order_update(order)))

    def _forget_cloid(self, order: Order) -> None:
        if order.cloid:
            self.cloids.pop((order.user, order.cloid), None)

    def cancel(self, user: str, cancels: Sequence[Mapping], by_cloid: bool) -> list:
        acct = self.account(user)
        out: list = []
        for c in cancels:
            asset = c.get("asset") if by_cloid else c.get("a")
            oid = self.cloids.get((acct.user, str(c.get("cloid", "")).lower())) if by_cloid else c.get("o")
            order = self.orders.get(oid) if isinstance(oid, int) else None
            if order is None or order.user != acct.user or order.asset != asset or order.oid not in self.open_oids:
                out.append({"error": ERR_CANCEL})
                continue
            self._finish(order, "canceled")
            out.append("success")
        return out

    def modify(self, user: str, modifies: Sequence[Mapping]) -> list:
        """batchModify: each open order (by oid or cloid) is replaced by the new wire. As on
        Hyperliquid the replacement is a new order with a new oid (the cloid carries over when the
        new wire names none); an order no longer open answers ERR_MODIFY."""
        acct = self.account(user)
        out: list = []
        for m in modifies:
            ref = m.get("oid")
            oid = self.cloids.get((acct.user, ref.lower())) if isinstance(ref, str) else ref
            old = self.orders.get(oid) if isinstance(oid, int) else None
            wire = m.get("order") if isinstance(m.get("order"), Mapping) else {}
            if old is None or old.user != acct.user or old.oid not in self.open_oids or old.asset != wire.get("a"):
                out.append({"error": ERR_MODIFY})
                continue
            if old.cloid and not wire.get("c"):
                wire = {**wire, "c": old.cloid}
            self._forget_cloid(old)  # the replacement may carry the same cloid
            try:
                order = self._validate(acct, wire)
            except _Reject as rej:
                if old.cloid:
                    self.cloids[(acct.user, old.cloid)] = old.oid
                out.append({"error": str(rej)})  # refused: the old order stands
                continue
            self._finish(old, "canceled")
            placed = self._admit(acct, order)
            out.append(placed)
        return out

    def find_order(self, user: str, oid_or_cloid: int | str) -> Order | None:
        if isinstance(oid_or_cloid, str):
            oid = self.cloids.get((user.lower(), oid_or_cloid.lower()))
        else:
            oid = oid_or_cloid
        order = self.orders.get(oid) if oid is not None else None
        return order if order is not None and order.user == user.lower() else None

    # ---- fills and positions ------------------------------------------------------------
    def _fill(self, acct: Account, order: Order, px: float, sz: float, *, crossed: bool, time_ms: int) -> dict:
        sd = self.spec(order.coin).sz_decimals
        pos = acct.position(order.coin)
        start = pos.szi
        signed = sz if order.is_buy else -sz
        closed_pnl = 0.0
        if start == 0 or (start > 0) == order.is_buy:
            new = round(start + signed, sd)
            pos.entry_px = (abs(start) * pos.entry_px + sz * px) / abs(new)
            direction = "Open Long" if order.is_buy else "Open Short"
            if start == 0:
                pos.funding_since_open = 0.0
        else:
            closing = min(sz, abs(start))
            closed_pnl = (px - pos.entry_px) * closing * (1 if start > 0 else -1)
            new = round(start + signed, sd)
            if new == 0:
                direction, pos.entry_px = ("Close Long" if start > 0 else "Close Short"), 0.0
            elif (new > 0) != (start > 0):
                direction, pos.entry_px = ("Long > Short" if start > 0 else "Short > Long"), px
                pos.funding_since_open = 0.0
            else:
                direction = "Close Long" if start > 0 else "Close Short"
        pos.szi = new
        pos.funding_since_change = 0.0
        fee = px * sz * (TAKER_FEE if crossed else MAKER_FEE)
        acct.balance += closed_pnl - fee
        order.sz = round(order.sz - sz, sd)
        self._next_tid += 1
        fill = {
            "coin": order.coin, "px": fmt(px), "sz": fmt(round(sz, sd)), "side": "B" if order.is_buy else "A",
            "time": time_ms, "startPosition": fmt(round(start, sd)), "dir": direction,
            "closedPnl": fmt(closed_pnl, 6), "hash": _hash(order.oid, self._next_tid), "oid": order.oid,
            "crossed": crossed, "fee": fmt(fee, 6), "tid": self._next_tid, "feeToken": "USDC",
        }
        if order.cloid:
            fill["cloid"] = order.cloid
        acct.fills.append(fill)
        self.events.append(("trades", order.coin, [{
            "coin": order.coin, "side": fill["side"], "px": fill["px"], "sz": fill["sz"], "hash": fill["hash"],
            "time": time_ms, "tid": fill["tid"],
            "users": [acct.user, _HOUSE] if order.is_buy else [_HOUSE, acct.user],
        }]))
        return fill

    # ---- time ---------------------------------------------------------------------------
    def advance(self, n_bars: int = 1) -> int:
        """Reveal up to n_bars bars; resting and trigger orders fill where a bar crosses them."""
        moved = 0
        for _ in range(max(n_bars, 0)):
            t = self.path.step()
            if t is None:
                break
            moved += 1
            for spec in self.assets:
                bar = self.path.bar_at(spec.name, t)
                if bar is None:
                    continue
                self._apply_funding(spec.name, t)
                self._run_triggers(spec.name, bar)
                self._match_resting(spec.name, bar)
                self.events.append(("candle", spec.name, bar))
            self.events.append(("market", None, t))
        return moved

    def _bar_close_ms(self, bar: Bar) -> int:
        return bar.t + self.path.interval_ms - 1

    def _run_triggers(self, coin: str, bar: Bar) -> None:
        """A bar only says how far the price went, not in which order: stops fire before take-profits
        (the replay's rule for a bar touching both) and, within a kind, the trigger nearer the open first."""
        mine = [self.orders[oid] for oid in self.open_oids if self.orders[oid].coin == coin and self.orders[oid].is_trigger]
        for o in sorted(mine, key=lambda o: (o.tpsl != "sl", abs(o.trigger_px - bar.o))):
            if o.oid not in self.open_oids:
                continue
            sell_side_hit = bar.l <= o.trigger_px if o.tpsl == "sl" else bar.h >= o.trigger_px
            buy_side_hit = bar.h >= o.trigger_px if o.tpsl == "sl" else bar.l <= o.trigger_px
            if not (buy_side_hit if o.is_buy else sell_side_hit):
                continue
            acct = self.accounts[o.user]
            if o.reduce_only and (acct.position(coin).szi == 0 or (acct.position(coin).szi > 0) == o.is_buy):
                self._finish(o, "reduceOnlyCanceled")
                continue
            if o.is_market_trigger:
                self._market_trigger(acct, o, bar)
            else:
                o.trigger_px, o.tpsl = None, None  # now a plain resting limit order

    def _market_trigger(self, acct: Account, o: Order, bar: Bar) -> None:
        """A triggered market order takes the book where the price crossed the trigger (the bar's
        open when it gapped through), down to MARKET_TRIGGER_SLIPPAGE from the trigger price; what
        the book cannot fill within that is cancelled, as a market order's remainder is."""
        falling = (o.tpsl == "sl") != o.is_buy  # a sell stop / buy take-profit fires on a fall
        ref = min(bar.o, o.trigger_px) if falling else max(bar.o, o.trigger_px)
        bids, asks = self.book_at(o.coin, ref)
        cap = o.trigger_px * (1 + MARKET_TRIGGER_SLIPPAGE if o.is_buy else 1 - MARKET_TRIGGER_SLIPPAGE)
        sd = self.spec(o.coin).sz_decimals
        fills = []
        for px, avail in asks if o.is_buy else bids:
            if o.sz <= 0 or (px > cap if o.is_buy else px < cap):
                break
            qty = round(min(avail, self._reduce_cap(acct, o)), sd)
            if qty <= 0:
                break
            fills.append(self._fill(acct, o, px, qty, crossed=True, time_ms=self._bar_close_ms(bar)))
        if fills:
            self.events.append(("fills", o.user, fills))
        self._finish(o, "filled" if fills else "canceled")

    def _match_resting(self, coin: str, bar: Bar) -> None:
        for oid in list(self.open_oids):
            o = self.orders[oid]
            if o.coin != coin or o.is_trigger:
                continue
            if not (bar.l <= o.limit_px if o.is_buy else bar.h >= o.limit_px):
                continue
            acct = self.accounts[o.user]
            qty = round(self._reduce_cap(acct, o), self.spec(coin).sz_decimals)
            if qty <= 0:
                self._finish(o, "reduceOnlyCanceled")
                continue
            fill = self._fill(acct, o, o.limit_px, qty, crossed=False, time_ms=self._bar_close_ms(bar))
            self.events.append(("fills", o.user, [fill]))
            self._finish(o, "filled" if o.sz <= 0 else "reduceOnlyCanceled")

    def _apply_funding(self, coin: str, t: int) -> None:
        rate_prem = self.funding.get(coin, {}).get(t)
        if rate_prem is None:
            return
        rate, mark = rate_prem[0], self.mid(coin)
        for acct in self.accounts.values():
            pos = acct.positions.get(coin)
            if not pos or not pos.szi:
                continue
            usdc = -pos.szi * mark * rate
            acct.balance += usdc
            pos.funding_all_time -= usdc
            pos.funding_since_open -= usdc
            pos.funding_since_change -= usdc
            self.events.append(("funding", acct.user, {
                "time": t, "coin": coin, "usdc": fmt(usdc, 6), "szi": fmt(pos.szi), "fundingRate": fmt(rate, 10),
            }))

    # ---- wire helpers -------------------------------------------------------------------
    def _order_update(self, o: Order) -> dict:
        return {"order": self.order_wire(o), "status": o.status, "statusTimestamp": o.status_ts}

    def order_wire(self, o: Order) -> dict:
        sd = self.spec(o.coin).sz_decimals
        d = {"coin": o.coin, "side": "B" if o.is_buy else "A", "limitPx": fmt(o.limit_px),
             "sz": fmt(max(round(o.sz, sd), 0.0)), "oid": o.oid, "timestamp": o.timestamp, "origSz": fmt(o.orig_sz)}
        if o.cloid:
            d["cloid"] = o.cloid
        return d


class _Reject(Exception):
    pass


_HOUSE = "0x" + "0" * 39 + "1"


def _with_cloid(d: dict, order: Order) -> dict:
    if order.cloid:
        d["cloid"] = order.cloid
    return d


def _hash(oid: int, tid: int) -> str:
    return "0x" + hashlib.sha256(f"{oid}:{tid}".encode()).hexdigest()
