"""/info replies in Hyperliquid's exact shapes (numbers as strings, times as ints)."""

from __future__ import annotations

from collections.abc import Mapping

from live.sandbox.matching import Venue, VenueError
from live.sandbox.numbers import fmt, fmt_sig
from live.sandbox.pricepath import INTERVAL_MS, Bar

CANDLE_LIMIT = 5000
FILLS_LIMIT = 2000
FUNDING_LIMIT = 500


def meta(v: Venue) -> dict:
    universe = []
    for a in v.assets:
        entry = {"name": a.name, "szDecimals": a.sz_decimals, "maxLeverage": a.max_leverage,
                 "marginTableId": a.max_leverage}
        if a.only_isolated:
            entry["onlyIsolated"] = True
        universe.append(entry)
    tables = sorted({a.max_leverage for a in v.assets})
    margin_tables = [[lev, {"description": "", "marginTiers": [{"lowerBound": "0.0", "maxLeverage": lev}]}]
                     for lev in tables]
    return {"universe": universe, "marginTables": margin_tables}


def asset_ctx(v: Venue, coin: str) -> dict:
    bars = v.path.revealed(coin)
    day = bars[-max(1, 86_400_000 // v.path.interval_ms):]
    mid = v.mid(coin)
    bids, asks = v.book(coin)
    rate = _current_funding(v, coin)
    return {
        "funding": fmt(rate[0], 10) if rate else "0.0",
        "openInterest": "0.0",
        "prevDayPx": fmt_sig(day[0].o) if day else "0.0",
        "dayNtlVlm": fmt(sum(b.v * b.c for b in day), 6),
        "premium": fmt(rate[1], 10) if rate and rate[1] is not None else "0.0",
        "oraclePx": fmt_sig(mid),
        "markPx": fmt_sig(mid),
        "midPx": fmt_sig(mid) if mid else None,
        "impactPxs": [fmt(bids[0][0]), fmt(asks[0][0])] if bids and asks else None,
        "dayBaseVlm": fmt(sum(b.v for b in day), 6),
    }


def _current_funding(v: Venue, coin: str) -> tuple[float, float | None] | None:
    rates = v.funding.get(coin)
    if not rates:
        return None
    now = v.path.now_bar_t
    past = [t for t in rates if t <= now]
    return rates[max(past)] if past else None


def all_mids(v: Venue) -> dict:
    return {a.name: fmt_sig(v.mid(a.name)) for a in v.assets if v.mid(a.name) > 0}


def candle(v: Venue, coin: str, bar: Bar) -> dict:
    return {"t": bar.t, "T": bar.t + v.path.interval_ms - 1, "s": coin, "i": v.path.interval,
            "o": fmt_sig(bar.o), "c": fmt_sig(bar.c), "h": fmt_sig(bar.h), "l": fmt_sig(bar.l),
            "v": fmt(bar.v, 8), "n": int(bar.n)}


def candle_snapshot(v: Venue, req: Mapping) -> list:
    coin, interval = req.get("coin"), req.get("interval")
    if coin not in v.asset_index:
        return []
    if interval not in INTERVAL_MS:
        raise VenueError(f"Invalid interval: {interval}")
    if interval != v.path.interval:
        return []
    start, end = int(req.get("startTime") or 0), req.get("endTime")
    end = int(end) if end is not None else v.path.now_ms
    bars = v.path.revealed(coin)[-CANDLE_LIMIT:]
    return [candle(v, coin, b) for b in bars if start <= b.t <= end]


def funding_history(v: Venue, body: Mapping) -> list:
    coin = body.get("coin")
    start, end = int(body.get("startTime") or 0), body.get("endTime")
    end = min(int(end), v.path.now_bar_t) if end is not None else v.path.now_bar_t
    out = []
    for t, (rate, prem) in sorted(v.funding.get(coin, {}).items()):
        if start <= t <= end:
            row = {"coin": coin, "fundingRate": fmt(rate, 10), "time": t}
            if prem is not None:
                row["premium"] = fmt(prem, 10)
            out.append(row)
    return out[:FUNDING_LIMIT]


def l2_book(v: Venue, coin: str) -> dict:
    bids, asks = v.book(coin)
    level = lambda px, sz: {"px": fmt(px), "sz": fmt(sz), "n": 1}  # noqa: E731
    return {"coin": coin, "time": v.path.now_ms,
            "levels": [[level(*b) for b in bids], [level(*a) for a in asks]]}


def bbo(v: Venue, coin: str) -> dict:
    bids, asks = v.book(coin)
    side = lambda lv: {"px": fmt(lv[0]), "sz": fmt(lv[1]), "n": 1} if lv else None  # noqa: E731
    return {"coin": coin, "time": v.path.now_ms, "bbo": [side(bids[0] if bids else None), side(asks[0] if asks else None)]}


def clearinghouse_state(v: Venue, user: str) -> dict:
    acct = v.accounts.get(user.lower())
    if acct is None:
        empty = {"accountValue": "0.0", "totalMarginUsed": "0.0", "totalNtlPos": "0.0", "totalRawUsd": "0.0"}
        return {"assetPositions": [], "marginSummary": empty, "crossMarginSummary": dict(empty),
                "withdrawable": "0.0", "crossMaintenanceMarginUsed": "0.0", "time": v.path.now_ms}
    positions, ntl, signed_ntl, used = [], 0.0, 0.0, 0.0
    for coin, p in acct.positions.items():
        if not p.szi:
            continue
        mark = v.mid(coin)
        lev, is_cross = v.leverage_of(acct, coin)
        value = abs(p.szi) * mark
        margin = value / lev
        upnl = p.szi * (mark - p.entry_px)
        ntl, signed_ntl, used = ntl + value, signed_ntl + p.szi * mark, used + margin
        lev_wire = {"type": "cross" if is_cross else "isolated", "value": lev}
        if not is_cross:
            lev_wire["rawUsd"] = fmt(margin - p.szi * p.entry_px, 6)
        positions.append({"type": "oneWay", "position": {
            "coin": coin, "szi": fmt(p.szi), "entryPx": fmt_sig(p.entry_px), "leverage": lev_wire,
            "liquidationPx": None, "marginUsed": fmt(margin, 6), "positionValue": fmt(value, 6),
            "returnOnEquity": fmt(upnl / (abs(p.szi) * p.entry_px / lev), 8) if p.entry_px else "0.0",
            "unrealizedPnl": fmt(upnl, 6), "maxLeverage": v.spec(coin).max_leverage,
            "cumFunding": {"allTime": fmt(p.funding_all_time, 6), "sinceOpen": fmt(p.funding_since_open, 6),
                           "sinceChange": fmt(p.funding_since_change, 6)},
        }})
    value = v.account_value(acct)
    summary = {"accountValue": fmt(value, 6), "totalMarginUsed": fmt(used, 6), "totalNtlPos": fmt(ntl, 6),
               "totalRawUsd": fmt(value - signed_ntl, 6)}
    withdrawable = max(value - used - v.order_margin(acct), 0.0)
    return {"assetPositions": positions, "marginSummary": summary, "crossMarginSummary": dict(summary),
            "withdrawable": fmt(withdrawable, 6), "crossMaintenanceMarginUsed": fmt(used / 2, 6),
            "time": v.path.now_ms}


def open_orders(v: Venue, user: str, frontend: bool = False) -> list:
    out = []
    for oid in reversed(v.open_oids):
        o = v.orders[oid]
        if o.user != user.lower():
            continue
        d = v.order_wire(o)
        if frontend:
            d.update(_frontend_fields(o))
        out.append(d)
    return out


def _frontend_fields(o) -> dict:
    trig = o.trigger_px is not None
    cond = "N/A" if not trig else f"Price {'above' if (o.tpsl == 'tp') != o.is_buy else 'below'} {fmt(o.trigger_px)}"
    return {"isTrigger": trig, "triggerPx": fmt(o.trigger_px) if trig else "0.0", "triggerCondition": cond,
            "reduceOnly": o.reduce_only, "orderType": _order_type(o), "tif": None if trig else o.tif,
            "isPositionTpsl": False, "children": []}


def _order_type(o) -> str:
    if o.trigger_px is None:
        return "Limit"
    kind = "Take Profit" if o.tpsl == "tp" else "Stop"
    return f"{kind} {'Market' if o.is_market_trigger else 'Limit'}"


def order_status(v: Venue, user: str, oid) -> dict:
    o = v.find_order(user, oid) if isinstance(oid, (int, str)) else None
    if o is None:
        return {"status": "unknownOid"}
    order = v.order_wire(o)
    order.update(_frontend_fields(o))
    return {"status": "order", "order": {"order": order, "status": o.status, "statusTimestamp": o.status_ts}}


def user_fills(v: Venue, user: str) -> list:
    acct = v.accounts.get(user.lower())
    return list(reversed(acct.fills))[:FILLS_LIMIT] if acct else []


def user_fills_by_time(v: Venue, body: Mapping) -> list:
    acct = v.accounts.get(str(body.get("user", "")).lower())
    if acct is None:
        return []
    start, end = int(body.get("startTime") or 0), body.get("endTime")
    end = int(end) if end is not None else 2**62
    return [f for f in acct.fills if start <= f["time"] <= end][:FILLS_LIMIT]
