"""Exchange fills reach the trading DB even when the order reply never brought them back.

The order path stores the fills it fetched for its own order, but a fill can also happen where the
daemon was not looking: a resting order filling later, a reply lost to a timeout, a restart, or a
human trading on the same account. Two independent feeds close that gap, as the reference runtime
does (spec/reference/runtime.md §1, §3):

- the WebSocket `userFills` channel: frames are buffered by the WS thread and drained by the main
  loop; the buffer is cleared only after the batch committed. An `isSnapshot` frame (sent on every
  (re)connect) is history, so only its fills inside the backfill window are taken;
- a REST backfill (`Info.user_fills_by_time`) every `rest_every_s` from a cursor persisted in
  `engine_state`: the first window reaches `backfill_ms` back, each later one overlaps the previous
  by 5 minutes, and the cursor moves in the same transaction as the fills it covered (a failed call
  or commit leaves it where it was).

Each fill is stored once per (hash, tid) in `oms_fills` and `trades` (both UNIQUE), whichever feed
brings it first. A fill is matched to its intent by exchange oid (or a sibling fill of that oid),
then by cloid, then by time proximity (same symbol/side/kind, oid not yet known, within
`match_ttl_ms`); a fill nothing explains is an ORPHAN: a synthetic `manual_<hash12>_<tid>` FILLED
intent and an ORPHAN_FILL audit event, after which the reconciler aligns the engine's position.
A fill the order path already stored is a duplicate here and changes nothing. A fill of a resting
protective order (intent action PROTECT) is stored in `oms_fills` only: live/protection.py books it
into the engine (and writes its `trades` row) exactly once.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from live.oms import Intent, Oms, fill_action
from live.trading_db import audit, insert_trade, iso_utc, load_engine_state, save_engine_state, transaction

CURSOR_KEY = "fills_rest_cursor"
OVERLAP_MS = 5 * 60_000
REST_PAGE_LIMIT = 2000          # the exchange returns at most this many fills per call


@dataclass
class IngestResult:
    new: int = 0
    duplicate: int = 0
    orphans: int = 0
    matched_via: Counter = field(default_factory=Counter)
    touched: set[str] = field(default_factory=set)   # symbols whose position a new fill changed

    def add(self, other: IngestResult) -> None:
        self.new += other.new
        self.duplicate += other.duplicate
        self.orphans += other.orphans
        self.matched_via.update(other.matched_via)
        self.touched |= other.touched


class FillIntake:
    """WS userFills buffer + REST backfill + matching, on the daemon's trading DB connection."""

    def __init__(self, oms: Oms, fetch_by_time: Callable[[int, int], list[dict]], *, now_ms: Callable[[], int],
                 rest_every_s: float = 60.0, backfill_ms: int = 7_200_000, match_ttl_ms: int = 600_000,
                 mode: str = "live", max_pending: int = 50_000, monotonic: Callable[[], float] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        import time

        self.oms, self.conn = oms, oms.conn
        self.fetch_by_time = fetch_by_time
        self.now_ms = now_ms
        self.rest_every_s, self.backfill_ms, self.match_ttl_ms = rest_every_s, backfill_ms, match_ttl_ms
        self.mode = mode
        self.max_pending = max_pending
        self.monotonic = monotonic or time.monotonic
        self.log = log or (lambda _msg: None)
        self._lock = threading.Lock()
        self._pending: deque[tuple[str, dict]] = deque()
        self._next_rest = 0.0
        self.counts: Counter = Counter()       # new fills stored, per feed: ws, ws_snapshot, rest
        self.duplicates: Counter = Counter()   # fills a feed brought that were already stored
        self.rest_failures = 0

    # ---------------------------------------------------------------- WS thread side
    def offer_ws(self, data: dict) -> None:
        """MarketWs listener (runs on the WS thread): buffer only, never touch the DB here."""
        source = "ws_snapshot" if data.get("isSnapshot") else "ws"
        with self._lock:
            for f in data.get("fills") or []:
                if isinstance(f, dict):
                    self._pending.append((source, f))
            overflow = len(self._pending) - self.max_pending
            for _ in range(max(overflow, 0)):
                self._pending.popleft()
        if overflow > 0:
            self.log(f"fill intake: WS buffer over {self.max_pending}; {overflow} oldest dropped, REST backfill forced")
            self._next_rest = 0.0

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    # ---------------------------------------------------------------- main loop side
    def drain_ws(self) -> IngestResult:
        """Ingest the buffered WS fills in one transaction; the buffer is cut only on success."""
        with self._lock:
            batch = list(self._pending)
        if not batch:
            return IngestResult()
        floor = self._window_start()
        result = IngestResult()
        with transaction(self.conn):
            for source, f in batch:
                if source == "ws_snapshot" and int(f.get("time") or 0) < floor:
                    continue  # history older than the backfill window: not ours to revive
                result.add(self._ingest_one(f, source))
        with self._lock:
            for _ in range(len(batch)):
                self._pending.popleft()
        return result

    def maybe_backfill(self) -> IngestResult | None:
        if self.monotonic() < self._next_rest:
            return None
        self._next_rest = self.monotonic() + self.rest_every_s
        return self.backfill()

    def backfill(self) -> IngestResult:
        """One REST window from the cursor (minus the overlap) to now; the cursor moves on commit."""
        start, end = self._window_start(), self.now_ms()
        try:
            fills = self.fetch_by_time(start, end)
        except Exception as exc:  # the exchange unreachable: the cursor stays, next round retries
            self.rest_failures += 1
            self.log(f"fill intake: REST userFillsByTime failed ({type(exc).__name__}: {str(exc)[:200]}); "
                     "cursor kept")
            return IngestResult()
        fills = sorted(fills or [], key=lambda f: (int(f.get("time") or 0), int(f.get("tid") or 0)))
        cursor = end
        if len(fills) >= REST_PAGE_LIMIT:  # a full page: continue from its last fill next time
            cursor = int(fills[-1].get("time") or start) + OVERLAP_MS
        result = IngestResult()
        with transaction(self.conn):
            for f in fills:
                result.add(self._ingest_one(f, "rest"))
            save_engine_state(self.conn, CURSOR_KEY, {"end_ms": int(cursor)})
        self.rest_failures = 0
        return result

    def cursor_ms(self) -> int | None:
        saved = load_engine_state(self.conn, CURSOR_KEY)
        return None if not saved else int(saved["end_ms"])

    def _window_start(self) -> int:
        cursor = self.cursor_ms()
        return self.now_ms() - self.backfill_ms if cursor is None else cursor - OVERLAP_MS

    # ---------------------------------------------------------------- one fill
    def _ingest_one(self, fill: dict, source: str) -> IngestResult:
        out = IngestResult()
        if not _well_formed(fill):
            return out
        if self.oms.has_fill(fill):
            out.duplicate = 1
            self.duplicates[source] += 1
            return out
        intent, via = self.match(fill)
        if intent is None:
            intent, via = self.oms.manual_intent(fill), "orphan"
            out.orphans = 1
            audit(self.conn, "ORPHAN_FILL", fill["coin"], "warning",
                  {"intent_id": intent.intent_id, "source": source, "oid": fill.get("oid"), "side": fill.get("side"),
                   "sz": fill.get("sz"), "px": fill.get("px"), "dir": fill.get("dir"), "hash": fill.get("hash"),
                   "tid": fill.get("tid")}, ts_ms=self.now_ms())
        if not self.oms.record_fill(intent, fill, via):  # pragma: no cover - has_fill ran in this transaction
            out.duplicate = 1
            return out
        if intent.action != "PROTECT":  # a protective order's fill is booked by live/protection.py
            exchange_trade_row(self.conn, intent, fill, via=via, source=source, mode=self.mode, now_ms=self.now_ms())
        self._settle(intent, fill)
        self.counts[source] += 1
        out.new = 1
        out.matched_via[via] += 1
        out.touched.add(str(fill["coin"]).upper())
        return out

    def match(self, fill: dict) -> tuple[Intent | None, str]:
        """runtime.md §3: exchange oid (or a sibling fill of it), then cloid, then time proximity."""
        if fill.get("oid") is not None:
            found = self.oms.by_oid(fill["oid"])
            if found is not None:
                return found
        cloid = fill.get("cloid")
        if cloid:
            intent = self.oms.by_cloid(str(cloid))
            return (intent, "cloid") if intent is not None else (None, "")
        _, action = fill_action(fill)
        side = "BUY" if fill.get("side") == "B" else "SELL"
        intent = self.oms.time_candidate(str(fill["coin"]), side, action in ("OPEN", "ADD"),
                                         int(fill.get("time") or 0), self.match_ttl_ms)
        return (intent, "time") if intent is not None else (None, "")

    def _settle(self, intent: Intent, fill: dict) -> None:
        """A late fill moves its intent: FILLED when complete (or a close), else PARTIAL. NEW is the
        order path's to resolve (it re-runs the bar and asks the exchange), so it is left alone."""
        if intent.status not in ("SENT", "UNKNOWN", "PARTIAL"):
            return
        filled = self.oms.filled_size(intent)
        full = intent.action == "CLOSE" or filled >= intent.requested_size * 0.999
        self.oms.set_status(intent, "FILLED" if full else "PARTIAL", only_from=("SENT", "UNKNOWN", "PARTIAL"),
                            oid=fill.get("oid") if intent.exchange_order_id is None else None)



def exchange_trade_row(conn, intent: Intent, fill: dict, *, via: str, source: str, mode: str,
                       reason: str | None = None, now_ms: int = 0) -> int:
    """The `trades` row of an exchange fill the order path did not record (reason: manual for an
    orphan, late_fill otherwise, or the caller's)."""
    pos_type, action = fill_action(fill)
    px, sz, fee = float(fill["px"]), float(fill["sz"]), float(fill.get("fee") or 0.0)
    return insert_trade(conn, {
        "timestamp": iso_utc(int(fill.get("time") or now_ms)), "symbol": fill["coin"], "type": pos_type,
        "action": action, "price": px, "size": sz, "notional": px * sz,
        "reason": reason or ("manual" if via == "orphan" else "late_fill"), "confidence": None,
        "pnl": float(fill.get("closedPnl") or 0.0), "fee_usd": fee, "fee_token": fill.get("feeToken", "USDC"),
        "fee_rate": fee / (px * sz) if px * sz else 0.0, "leverage": intent.leverage,
        "meta_json": {"mode": mode, "source": source, "intent_id": intent.intent_id, "matched_via": via,
                      "cloid": fill.get("cloid"), "oid": fill.get("oid"), "exchange_fill": fill},
        "fill_hash": str(fill["hash"]), "fill_tid": int(fill["tid"]),
    })


def _well_formed(fill: dict) -> bool:
    try:
        return bool(fill["coin"]) and float(fill["sz"]) > 0 and float(fill["px"]) > 0 and "hash" in fill \
            and "tid" in fill
    except (KeyError, TypeError, ValueError):
        return False
