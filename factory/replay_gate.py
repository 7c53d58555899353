"""Replay alignment: does the canonical engine, replaying the trader's recent window from the
trader's own state, make exactly the fills the trader made?

Pure functions (no I/O) so the comparison rules are testable with plain numbers; the scheduled
tool (tools/run_scheduled_replay_alignment_gate.py) does the reading, the replay and the writing.

Bar alignment: a fill's decision bar is its time rounded to the nearest interval boundary. The
engine stamps fills at the bar close; the trader fills a moment after the close, so both land on
the same boundary as long as the trader acts within half a bar.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

REASON_CODES = ("state_initialisation_gap", "market_data_alignment_gap", "deterministic_logic_divergence",
                "insufficient_live_trades", "scheduler_unhandled_exception")
FILL_ACTIONS = ("OPEN", "ADD", "REDUCE", "CLOSE")
MAX_DIFFS = 50


@dataclass(frozen=True)
class Fill:
    symbol: str
    side: str
    action: str
    bar_ms: int
    t_ms: int
    price: float
    size: float


def decision_bar(t_ms: int, interval_ms: int) -> int:
    return ((int(t_ms) + interval_ms // 2) // interval_ms) * interval_ms


def window_bounds(now_ms: int, window_minutes: float, lag_minutes: float) -> tuple[int, int]:
    end = int(now_ms - lag_minutes * 60_000)
    return int(end - window_minutes * 60_000), end


def window_closes(start_ms: int, end_ms: int, interval_ms: int) -> tuple[int, int]:
    """First and last bar close inside [start_ms, end_ms] (a bar belongs iff it closed in the window)."""
    lo = (start_ms // interval_ms + 1) * interval_ms  # the bar closing at lo opened at or after start
    hi = (end_ms // interval_ms) * interval_ms
    return lo, hi


def _side(raw) -> str:
    s = str(raw or "").upper()
    return {"BUY": "LONG", "SELL": "SHORT", "1": "LONG", "-1": "SHORT"}.get(s, s)


def fills_from_db_rows(rows: list[dict], interval_ms: int, lo: int, hi: int) -> list[Fill]:
    """Trading-DB rows (with t_ms) -> fills whose decision bar closes in [lo, hi]."""
    out = []
    for r in rows:
        action = str(r.get("action") or "").upper()
        if action not in FILL_ACTIONS or r.get("t_ms") is None:
            continue
        bar = decision_bar(r["t_ms"], interval_ms)
        if lo <= bar <= hi:
            out.append(Fill(str(r["symbol"]).upper(), _side(r.get("type")), action, bar, int(r["t_ms"]),
                            float(r.get("price") or 0.0), float(r.get("size") or 0.0)))
    return sorted(out, key=lambda f: (f.bar_ms, f.symbol, FILL_ACTIONS.index(f.action), f.t_ms))


def fills_from_replay(fills: list[dict], interval_ms: int, lo: int, hi: int) -> list[Fill]:
    """Replay report fills -> the same shape. FUNDING rows are accounting, not fills, and
    end_of_data closes are the replay flattening at the window's end, which the trader never does."""
    out = []
    for f in fills:
        action = str(f.get("action") or "").upper()
        if action not in FILL_ACTIONS or f.get("reason") == "end_of_data":
            continue
        bar = decision_bar(f["t_ms"], interval_ms)
        if lo <= bar <= hi:
            out.append(Fill(str(f["symbol"]).upper(), _side(f.get("side")), action, bar, int(f["t_ms"]),
                            float(f["price"]), float(f["size"])))
    return sorted(out, key=lambda f: (f.bar_ms, f.symbol, FILL_ACTIONS.index(f.action), f.t_ms))


def state_at(rows: list[dict], interval_ms: int, lo: int) -> dict | None:
    """The trader's balance and open positions before the first window bar, as a replay init_state.

    Positions are rebuilt like the monitor does: the last OPEN not followed by a CLOSE, then ADD and
    REDUCE replayed. None when no balance is known before the window.
    """
    balance, positions = None, {}
    for r in sorted((r for r in rows if r.get("t_ms") is not None), key=lambda r: r["t_ms"]):
        if decision_bar(r["t_ms"], interval_ms) >= lo:
            break
        if r.get("balance") is not None:
            balance = float(r["balance"])
        sym, action = str(r.get("symbol") or "").upper(), str(r.get("action") or "").upper()
        size, price = float(r.get("size") or 0.0), float(r.get("price") or 0.0)
        if action == "OPEN":
            positions[sym] = {"symbol": sym, "side": _side(r.get("type")), "size": size, "entry_price": price,
                              "entry_atr": r.get("entry_atr"), "leverage": r.get("leverage") or 1.0,
                              "margin_used": r.get("margin_used"), "confidence": r.get("confidence") or "low",
                              "adds_count": 0, "tp1_taken": False, "open_time_ms": int(r["t_ms"]),
                              "last_add_time_ms": int(r["t_ms"])}
        elif action == "ADD" and sym in positions:
            p = positions[sym]
            p["entry_price"] = (p["entry_price"] * p["size"] + price * size) / (p["size"] + size)
            p["size"] += size
            p["adds_count"] += 1
            p["last_add_time_ms"] = int(r["t_ms"])
            if r.get("margin_used") is not None and p.get("margin_used") is not None:
                p["margin_used"] += float(r["margin_used"])
        elif action == "REDUCE" and sym in positions:
            positions[sym]["size"] -= size
            positions[sym]["tp1_taken"] = True
        elif action == "CLOSE":
            positions.pop(sym, None)
    if balance is None or balance <= 0:
        return None
    return {"version": 1, "source": "trading_db", "exported_at_ms": lo, "balance": balance,
            "positions": [p for p in positions.values() if p["size"] > 1e-12]}


def _rel_diff(a: float, b: float) -> float:
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


def compare_fills(live: list[Fill], replay: list[Fill], *, lo: int, hi: int, min_live_trades: int = 1,
                  strict: bool = True, rel_tol: float = 1e-9, missing_bars: set[tuple[str, int]] | None = None) -> dict:
    """Trade-by-trade comparison; returns {ok, reason_codes, counts, diffs}.

    Classification (first match): a fill on a bar whose candle is missing -> market_data_alignment_gap;
    one side has a fill the other lacks -> deterministic_logic_divergence; same fill, size off ->
    state_initialisation_gap (size follows equity and position state); price off ->
    market_data_alignment_gap. Without strict, unmatched fills on the window's first or last bar
    are residuals (reported, not failing).
    """
    missing = missing_bars or set()
    codes: set[str] = set()
    diffs: list[dict] = []
    residuals: list[dict] = []
    total = [0]

    def note(code: str, kind: str, lf: Fill | None, rf: Fill | None, edge_ok: bool = False) -> None:
        entry = {"kind": kind, "code": code, "live": asdict(lf) if lf else None, "replay": asdict(rf) if rf else None}
        if edge_ok:
            residuals.append(entry)
            return
        codes.add(code)
        total[0] += 1
        if len(diffs) < MAX_DIFFS:
            diffs.append(entry)

    by_key: dict[tuple, list[Fill]] = {}
    for f in replay:
        by_key.setdefault((f.symbol, f.bar_ms, f.action, f.side), []).append(f)
    matched = 0
    for lf in live:
        bucket = by_key.get((lf.symbol, lf.bar_ms, lf.action, lf.side))
        if not bucket:
            gap = (lf.symbol, lf.bar_ms) in missing
            note("market_data_alignment_gap" if gap else "deterministic_logic_divergence", "live_only", lf, None,
                 edge_ok=not strict and lf.bar_ms in (lo, hi))
            continue
        rf = bucket.pop(0)
        matched += 1
        if _rel_diff(lf.size, rf.size) > rel_tol:
            note("state_initialisation_gap", "size_mismatch", lf, rf)
        if _rel_diff(lf.price, rf.price) > rel_tol:
            note("market_data_alignment_gap", "price_mismatch", lf, rf)
    for bucket in by_key.values():
        for rf in bucket:
            gap = (rf.symbol, rf.bar_ms) in missing
            note("market_data_alignment_gap" if gap else "deterministic_logic_divergence", "replay_only", None, rf,
                 edge_ok=not strict and rf.bar_ms in (lo, hi))
    if len(live) < min_live_trades:
        codes.add("insufficient_live_trades")
    ordered = [c for c in REASON_CODES if c in codes]
    return {"ok": not ordered, "reason_codes": ordered, "live_fills": len(live), "replay_fills": len(replay),
            "matched": matched, "diffs": diffs, "diffs_total": total[0], "residuals": residuals,
            "strict": strict, "rel_tol": rel_tol, "window_closes": {"first": lo, "last": hi}}
