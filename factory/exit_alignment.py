"""Exit alignment: for every exit the trader made, how late and how far off in price it filled
against the replay's exit of the same position, and whether that is within the limits.

The fill-by-fill comparison (factory.replay_gate) says *whether* live and replay agree; this says
*by how much* their exits differ, because an exit acted on late is the costliest way live trading
drifts from what the replay shows (a stop touched at 10:05 and sold after 11:00).

Matching (docs/PROMOTION.md §4 repeats it for operators):
- A position is (symbol, side, entry bar). The entry bar is the time of the position's OPEN rounded
  to the nearest boundary of the entry grid (the config's entry interval, else its main interval):
  the replay books the OPEN at the (sub-)bar close and the trader fills it a moment later, so both
  round to the same boundary while the trader enters within half an entry bar.
- A position's exits are its REDUCE and CLOSE fills, from its OPEN up to its CLOSE. The n-th REDUCE
  of a live position is matched with the n-th REDUCE of the replay's position with the same key, and
  its CLOSE with the replay's CLOSE. Reasons are not compared: a live `protective_stop` close is
  matched with the replay's close of that position, whatever reason the replay gives.
- Live rows of one order (the same `intent_id`, else `cloid`, else `oid` in meta_json) are one
  exit: an exchange may fill a close in parts (REDUCE, REDUCE, CLOSE rows). Its size is the sum,
  its price the size-weighted average, its time that of the last part (when the exit was done) and
  it is a CLOSE when any part closed the position.
- A replay position already open before the replayed bars takes its entry time from the replay's
  closed-trade record (every replayed position ends in one: open ones close at end of data, and those
  end_of_data closes are not exits the trader makes). A live exit with no OPEN before it in the
  trading DB has no known position and never matches.
- Scope: the replay's exits booked on the window's bars, t in (first close - interval, last close],
  with their live partner wherever it lies in time, and the live exits in that span that have no
  replay partner.

Measures per matched exit: delay_ms = live fill time - replay fill time (the replay books exits at
the (sub-)bar close), and adverse_bps = the price difference against the position, positive when
the live fill is worse: (replay - live) / replay x 1e4 for a long (it sells), (live - replay) /
replay x 1e4 for a short. "Worst" delay is the one furthest from 0 (a trigger order can fill before
the sub-bar close the replay books it at); worst price is the most adverse. A better live price is
reported, never failed: the gate guards against the replay promising more than live delivers.
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from factory.promotion import _ts_ms  # the one parser of trading-DB timestamps

EXIT_ACTIONS = ("REDUCE", "CLOSE")
REASON_CODES = ("exit_unmatched", "exit_delay_limit_exceeded", "exit_price_limit_exceeded")
_SIDES = {"LONG": "LONG", "SHORT": "SHORT", "BUY": "LONG", "SELL": "SHORT"}


class ExitDataError(ValueError):
    """A trading DB the exit comparison cannot trust (missing, not a trading DB, a corrupt row)."""


@dataclass(frozen=True)
class Limits:
    """Fail the gate when an exit's |delay| or adverse price difference, or their medians, exceed these."""
    max_delay_ms: float
    max_median_delay_ms: float
    max_adverse_bps: float
    max_median_adverse_bps: float

    def check(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"exit limit {name}={value!r} must be a finite number >= 0 (limits cannot be disabled)")


@dataclass(frozen=True)
class Exit:
    symbol: str
    side: str
    entry_ms: int | None     # the position's OPEN time; None when the trading DB lacks it
    action: str              # REDUCE | CLOSE
    ordinal: int             # n-th exit of this action in the position (1-based)
    t_ms: int
    price: float
    size: float
    reason: str
    ref: str                 # where it came from: "trades id 12,13" or "replay fill 7"


def entry_bar(entry_ms: int, grid_ms: int) -> int:
    """The entry grid boundary nearest to the OPEN's time."""
    return ((int(entry_ms) + grid_ms // 2) // grid_ms) * grid_ms


def default_limits(exit_interval_ms: int, grace_ms: int, market_slippage_cap_bps: float,
                   stress_slippage_bps: float) -> Limits:
    """The limits when none are configured, each tied to a figure the system already commits to:

    - every exit within one exit sub-bar + the trader's candle-close grace of the replay's booking:
      issue 13's acceptance ("every live exit is sent within one exit sub-bar (+ grace) of the
      sub-bar the replay books it on");
    - the median within half an exit sub-bar + grace: a trader that steps every sub-bar sends exits
      seconds after the close, so a median past half a sub-bar means it is systematically behind
      (one stepping once per main bar has a median near half a main bar) even when no single exit
      breaks the first limit;
    - every exit at most the trader's market-order slippage cap (HL_LIVE_MARKET_SLIPPAGE_PCT, 1 %)
      worse than the replay: a market order cannot fill further than that from the price it was
      sent at, so a larger difference means the price moved that far before the trader acted;
    - the median at most the promotion gate's stress slippage (20 bps): promotion proved the config
      still profitable with that much extra cost per leg, and no more.
    """
    return Limits(max_delay_ms=float(exit_interval_ms + grace_ms),
                  max_median_delay_ms=float(exit_interval_ms / 2 + grace_ms),
                  max_adverse_bps=float(market_slippage_cap_bps), max_median_adverse_bps=float(stress_slippage_bps))


# --- reading ---------------------------------------------------------------------------------
def _positive(raw, what: str, where: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise ExitDataError(f"{where}: {what} {raw!r} is not a positive number")
    return value


def _order_id(meta_raw, where: str) -> str | None:
    if meta_raw in (None, ""):
        return None
    try:
        meta = json.loads(meta_raw)
    except (TypeError, ValueError):
        raise ExitDataError(f"{where}: meta_json is not JSON") from None
    if not isinstance(meta, dict):
        raise ExitDataError(f"{where}: meta_json is not a JSON object")
    for key in ("intent_id", "cloid", "oid"):
        if meta.get(key) not in (None, ""):
            return f"{key}:{meta[key]}"
    return None


def read_live_exits(db_path: str | Path) -> list[Exit]:
    """Every exit in the trading DB's `trades`, with its position; corrupt rows raise ExitDataError.

    Read-only. Columns a DB from an older build lacks (reason, meta_json) read as empty.
    """
    p = Path(db_path)
    if not p.is_file():
        raise ExitDataError(f"{p}: trading DB not found")
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=15)
        try:
            have = {r[1] for r in con.execute("PRAGMA table_info(trades)")}
            if not have:
                raise ExitDataError(f"{p}: no trades table (not a trading DB)")
            cols = ["id", "timestamp", "symbol", "type", "action", "price", "size"]
            cols += [c if c in have else f"NULL AS {c}" for c in ("reason", "meta_json")]
            rows = con.execute(f"SELECT {', '.join(cols)} FROM trades WHERE UPPER(action) IN "
                               "('OPEN', 'REDUCE', 'CLOSE') ORDER BY id").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise ExitDataError(f"{p}: trades table unreadable: {exc}") from None
    return _exits_from_rows(rows, p)


def _exits_from_rows(rows, path: Path) -> list[Exit]:
    open_pos: dict[str, tuple[str, int]] = {}     # symbol -> (side, OPEN time)
    groups: list[dict] = []
    current: dict[str, dict] = {}                 # symbol -> the exit group being filled
    for rid, ts, symbol, side_raw, action, price, size, reason, meta in rows:
        where = f"{path}: trades id {rid}"
        t = _ts_ms(ts)
        if t is None:
            raise ExitDataError(f"{where}: timestamp {ts!r} is not a time")
        sym = str(symbol or "").strip().upper()
        if not sym:
            raise ExitDataError(f"{where}: empty symbol")
        side = _SIDES.get(str(side_raw or "").strip().upper())
        if side is None:
            raise ExitDataError(f"{where}: type {side_raw!r} is not LONG or SHORT")
        action = str(action).upper()
        if action == "OPEN":
            open_pos[sym] = (side, t)
            current.pop(sym, None)
            continue
        px, sz = _positive(price, "exit price", where), _positive(size, "exit size", where)
        order = _order_id(meta, where)
        held = open_pos.get(sym)
        entry = held[1] if held and held[0] == side else None
        g = current.get(sym)
        if g is None or order is None or g["order"] != order or g["entry"] != entry or g["side"] != side:
            g = {"symbol": sym, "side": side, "entry": entry, "order": order, "ids": [], "size": 0.0,
                 "value": 0.0, "t": t, "close": False, "reasons": []}
            groups.append(g)
            current[sym] = g
        g["ids"].append(int(rid))
        g["size"] += sz
        g["value"] += sz * px
        g["t"] = max(g["t"], t)
        g["close"] = g["close"] or action == "CLOSE"
        if reason and str(reason) not in g["reasons"]:
            g["reasons"].append(str(reason))
        if action == "CLOSE":
            open_pos.pop(sym, None)
            current.pop(sym, None)
    counts: dict[tuple, int] = {}
    out = []
    for g in groups:
        action = "CLOSE" if g["close"] else "REDUCE"
        key = (g["symbol"], g["side"], g["entry"], action)
        counts[key] = counts.get(key, 0) + 1
        out.append(Exit(g["symbol"], g["side"], g["entry"], action, counts[key], g["t"], g["value"] / g["size"],
                        g["size"], "+".join(g["reasons"]), "trades id " + ",".join(map(str, g["ids"]))))
    return out


def replay_exits(fills: list[dict], trades: list[dict]) -> list[Exit]:
    """The replay report's exits with their positions (end_of_data closes are not exits)."""
    first_trade: dict[str, int] = {}
    for tr in trades:
        first_trade.setdefault(str(tr["symbol"]).upper(), int(tr["entry_time_ms"]))
    entry: dict[str, int | None] = {}
    seen: set[str] = set()
    counts: dict[tuple, int] = {}
    out = []
    for i, f in enumerate(fills):
        sym, action = str(f["symbol"]).upper(), str(f.get("action") or "").upper()
        if action == "OPEN":
            entry[sym] = int(f["t_ms"])
            seen.add(sym)
            continue
        if action not in EXIT_ACTIONS:
            continue
        if sym not in seen:   # a position carried into the replay: its trade record has the entry
            entry[sym] = first_trade.get(sym)
            seen.add(sym)
        if f.get("reason") != "end_of_data":
            side = _SIDES.get(str(f.get("side") or "").upper(), str(f.get("side")))
            key = (sym, side, entry.get(sym), action)
            counts[key] = counts.get(key, 0) + 1
            out.append(Exit(sym, side, entry.get(sym), action, counts[key], int(f["t_ms"]), float(f["price"]),
                            float(f["size"]), str(f.get("reason") or ""), f"replay fill {i}"))
        if action == "CLOSE":
            entry[sym] = None
    return out


# --- comparing ---------------------------------------------------------------------------------
def adverse_bps(side: str, live_price: float, replay_price: float) -> float:
    diff = (replay_price - live_price) if side == "LONG" else (live_price - replay_price)
    return diff / replay_price * 1e4


def _keyed(exits: list[Exit], grid_ms: int) -> list[tuple[tuple | None, Exit]]:
    """(symbol, side, entry bar, action, n-th of that action in the position) for each exit, in order;
    None when its position is unknown. Counting on the rounded entry keeps keys unique even if two
    positions' entries round to one boundary."""
    counts: dict[tuple, int] = {}
    out = []
    for e in exits:
        if e.entry_ms is None:
            out.append((None, e))
            continue
        base = (e.symbol, e.side, entry_bar(e.entry_ms, grid_ms), e.action)
        counts[base] = counts.get(base, 0) + 1
        out.append((base + (counts[base],), e))
    return out


def _side_dict(e: Exit | None) -> dict | None:
    if e is None:
        return None
    return {"t_ms": e.t_ms, "price": e.price, "size": e.size, "reason": e.reason, "entry_ms": e.entry_ms, "ref": e.ref}


def _stats(values: list[float], worst) -> dict:
    if not values:
        return {"median": None, "worst": None}
    return {"median": float(statistics.median(values)), "worst": float(worst(values))}


def compare_exits(live: list[Exit], replay: list[Exit], *, entry_grid_ms: int, interval_ms: int, lo: int, hi: int,
                  limits: Limits) -> dict:
    """Match live exits to the replay's (module docstring) and judge them against `limits`.

    Returns {ok, reason_codes, exits[...], matched, live_only, replay_only, delay_ms{median, worst},
    adverse_bps{median, worst}, limits, matching}; every exit row has status matched | live_only |
    replay_only and the list of limits it broke.
    """
    limits.check()
    span = (lo - interval_ms, hi)

    def in_span(t: int) -> bool:
        return span[0] < t <= span[1]

    live_keyed = _keyed(live, entry_grid_ms)
    replay_keyed = _keyed(replay, entry_grid_ms)
    live_by_key = {k: e for k, e in live_keyed if k is not None}
    replay_keys = {k for k, _ in replay_keyed if k is not None}
    rows = [(k, live_by_key.get(k) if k is not None else None, r) for k, r in replay_keyed if in_span(r.t_ms)]
    # a live exit whose partner the replay booked outside the window is that window's to judge
    rows += [(k, e, None) for k, e in live_keyed if in_span(e.t_ms) and (k is None or k not in replay_keys)]
    exits, delays, prices = [], [], []
    for k, lf, rf in rows:
        ref = rf or lf
        row = {"symbol": ref.symbol, "side": ref.side, "entry_ms": ref.entry_ms, "action": ref.action,
               "ordinal": k[-1] if k else ref.ordinal, "live": _side_dict(lf), "replay": _side_dict(rf), "delay_ms": None,
               "adverse_bps": None, "breaks": []}
        if lf is None or rf is None:
            row["status"] = "replay_only" if lf is None else "live_only"
            row["breaks"].append("unmatched")
        else:
            row["status"] = "matched"
            row["delay_ms"] = lf.t_ms - rf.t_ms
            row["adverse_bps"] = adverse_bps(ref.side, lf.price, rf.price)
            delays.append(row["delay_ms"])
            prices.append(row["adverse_bps"])
            if abs(row["delay_ms"]) > limits.max_delay_ms:
                row["breaks"].append("max_delay_ms")
            if row["adverse_bps"] > limits.max_adverse_bps:
                row["breaks"].append("max_adverse_bps")
        exits.append(row)
    exits.sort(key=lambda x: ((x["replay"] or x["live"])["t_ms"], x["symbol"], x["action"], x["ordinal"]))
    delay = _stats(delays, lambda v: max(v, key=abs))
    price = _stats(prices, max)
    codes = []
    if any(x["status"] != "matched" for x in exits):
        codes.append("exit_unmatched")
    if any("max_delay_ms" in x["breaks"] for x in exits) or (
            delay["median"] is not None and abs(delay["median"]) > limits.max_median_delay_ms):
        codes.append("exit_delay_limit_exceeded")
    if any("max_adverse_bps" in x["breaks"] for x in exits) or (
            price["median"] is not None and price["median"] > limits.max_median_adverse_bps):
        codes.append("exit_price_limit_exceeded")
    return {"ok": not codes, "reason_codes": codes, "exits": exits, "exits_total": len(exits),
            "matched": len(delays), "live_only": sum(x["status"] == "live_only" for x in exits),
            "replay_only": sum(x["status"] == "replay_only" for x in exits), "delay_ms": delay,
            "adverse_bps": price, "limits": asdict(limits),
            "matching": {"entry_grid_ms": entry_grid_ms, "span_ms": {"after": span[0], "until": span[1]}}}


def summary_line(res: dict) -> str:
    """One line for the console and the blocker's detail."""
    d, p, lim = res["delay_ms"], res["adverse_bps"], res["limits"]
    text = f"exits {res['matched']}/{res['exits_total']} matched"
    if d["median"] is not None:
        text += (f", delay median {d['median'] / 1000:.1f} s worst {d['worst'] / 1000:.1f} s "
                 f"(limits {lim['max_median_delay_ms'] / 1000:g} s median, {lim['max_delay_ms'] / 1000:g} s each), "
                 f"adverse median {p['median']:.1f} bps worst {p['worst']:.1f} bps "
                 f"(limits {lim['max_median_adverse_bps']:g} bps median, {lim['max_adverse_bps']:g} bps each)")
    return text


def text_table(res: dict) -> str:
    """The exit table for people: one line per exit, then the medians, worsts and limits."""
    from marketdata.sanity import iso_ms

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    head = (f"{'status':<11} {'symbol':<8} {'side':<5} {'entry (UTC)':<24} {'exit':<9} {'replay fill (UTC)':<24} "
            f"{'delay s':>9} {'adverse bps':>11} {'replay px':>12} {'live px':>12}  reasons (replay / live)  breaks")
    lines = ["Exit alignment: live fill vs the replay's exit of the same position", head, "-" * len(head)]
    for x in res["exits"]:
        lf, rf = x["live"] or {}, x["replay"] or {}
        lines.append(
            f"{x['status']:<11} {x['symbol']:<8} {x['side']:<5} "
            f"{iso_ms(x['entry_ms']) if x['entry_ms'] is not None else '?':<24} {x['action'] + ' #' + str(x['ordinal']):<9} "
            f"{iso_ms(rf['t_ms']) if rf else '-':<24} {num(None if x['delay_ms'] is None else x['delay_ms'] / 1000, '.1f'):>9} "
            f"{num(x['adverse_bps'], '.2f'):>11} {num(rf.get('price'), '.6g'):>12} {num(lf.get('price'), '.6g'):>12}  "
            f"{rf.get('reason') or '-'} / {lf.get('reason') or '-'}  {','.join(x['breaks']) or 'ok'}")
    if not res["exits"]:
        lines.append("(no exits in the window)")
    lines += ["", summary_line(res), "verdict: " + ("PASS" if res["ok"] else "FAIL: " + ", ".join(res["reason_codes"]))]
    return "\n".join(lines) + "\n"
