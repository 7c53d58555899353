"""Order management: the write-ahead intent log, deterministic client order ids, fill ingest.

Money is never lost silently because every order exists on disk before it exists on the wire:
`create_intent` INSERTs and COMMITs (synchronous=FULL) the intent, and only then may the broker
send it. The intent's dedupe_key names (action, symbol, side, candle time, seq) and is UNIQUE, and
its client order id (cloid) is derived from that key, so a daemon that restarts and re-runs the
same bar computes the same key and the same cloid: it finds the intent it already wrote and asks
the exchange about that cloid instead of sending a second order.

Statuses: NEW (written, not known to be sent), WOULD (dry_live), SENT, UNKNOWN (the submit timed
out or the connection dropped: resolved by asking the exchange, never by re-sending), PARTIAL,
FILLED, REJECTED, EXPIRED, CANCELLED. Fills are stored once per (fill hash, tid).
Table and column names follow spec/reference/runtime.md §5 (the monitor reads them).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from live.exchange_errors import ExchangeUnavailable
from live.trading_db import now_ms

STATUSES = ("NEW", "WOULD", "SENT", "UNKNOWN", "PARTIAL", "FILLED", "REJECTED", "EXPIRED", "CANCELLED")
OPEN_STATUSES = ("NEW", "SENT", "UNKNOWN", "PARTIAL")
FINAL_STATUSES = ("WOULD", "FILLED", "REJECTED", "EXPIRED", "CANCELLED")
DEFAULT_CLOID_PREFIX = "aiq_"
UNREACHABLE = "exchange unreachable"  # the error prefix of an intent refused because reads kept failing

SCHEMA = """
CREATE TABLE IF NOT EXISTS oms_intents (
    intent_id TEXT PRIMARY KEY,
    created_ts_ms INTEGER NOT NULL,
    sent_ts_ms INTEGER,
    symbol TEXT NOT NULL,
    action TEXT NOT NULL,
    side TEXT NOT NULL,
    requested_size REAL,
    requested_notional REAL,
    entry_atr REAL,
    leverage REAL,
    decision_ts_ms INTEGER,
    strategy_version TEXT,
    strategy_sha1 TEXT,
    reason TEXT,
    confidence TEXT,
    status TEXT NOT NULL,
    dedupe_key TEXT UNIQUE,
    client_order_id TEXT,
    exchange_order_id TEXT,
    last_error TEXT,
    meta_json TEXT
);
CREATE INDEX IF NOT EXISTS idx_oms_intents_status ON oms_intents(status);
CREATE INDEX IF NOT EXISTS idx_oms_intents_cloid ON oms_intents(client_order_id);
CREATE TABLE IF NOT EXISTS oms_orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    intent_id TEXT,
    created_ts_ms INTEGER,
    symbol TEXT,
    side TEXT,
    order_type TEXT,
    requested_size REAL,
    reduce_only INTEGER,
    client_order_id TEXT,
    exchange_order_id TEXT,
    status TEXT,
    raw_json TEXT
);
CREATE TABLE IF NOT EXISTS oms_fills (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER,
    symbol TEXT,
    intent_id TEXT,
    order_id TEXT,
    action TEXT,
    side TEXT,
    pos_type TEXT,
    price REAL,
    size REAL,
    notional REAL,
    fee_usd REAL,
    fee_token TEXT,
    fee_rate REAL,
    pnl_usd REAL,
    fill_hash TEXT,
    fill_tid INTEGER,
    matched_via TEXT,
    raw_json TEXT,
    UNIQUE(fill_hash, fill_tid)
);
CREATE INDEX IF NOT EXISTS idx_oms_fills_intent ON oms_fills(intent_id);
CREATE TABLE IF NOT EXISTS oms_open_orders (
    exchange_order_id TEXT PRIMARY KEY,
    first_seen_ts_ms INTEGER,
    last_seen_ts_ms INTEGER,
    symbol TEXT,
    side TEXT,
    price REAL,
    orig_size REAL,
    remaining_size REAL,
    reduce_only INTEGER,
    client_order_id TEXT,
    intent_id TEXT,
    raw_json TEXT
);
CREATE TABLE IF NOT EXISTS oms_reconcile_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER,
    kind TEXT,
    symbol TEXT,
    intent_id TEXT,
    client_order_id TEXT,
    exchange_order_id TEXT,
    result TEXT,
    detail_json TEXT
);
"""


class OmsError(RuntimeError):
    pass


def dedupe_key(action: str, symbol: str, side: str, candle_ms: int, seq: int | str) -> str:
    """Restart-stable identity of one order decision (one engine fill of one bar)."""
    return f"{action.upper()}:{symbol.upper()}:{side.upper()}:{int(candle_ms)}:{seq}"


def prefix_bytes(prefix: str) -> bytes:
    """AI_QUANT_OMS_CLOID_PREFIX: ASCII (at most 8 bytes) or 0x-hex; default aiq_."""
    text = prefix if prefix else DEFAULT_CLOID_PREFIX
    if text.startswith("0x"):
        try:
            raw = bytes.fromhex(text[2:])
        except ValueError:
            raise OmsError(f"AI_QUANT_OMS_CLOID_PREFIX={text!r} is not valid hex") from None
    else:
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            raise OmsError(f"AI_QUANT_OMS_CLOID_PREFIX={text!r} must be ASCII") from None
    if not 1 <= len(raw) <= 8:
        raise OmsError(f"AI_QUANT_OMS_CLOID_PREFIX={text!r} must be 1 to 8 bytes")
    return raw


def cloid_for(key: str, prefix: str = DEFAULT_CLOID_PREFIX) -> str:
    """0x + 32 hex: the prefix bytes, then the leading bytes of sha256(dedupe_key)."""
    head = prefix_bytes(prefix)
    body = hashlib.sha256(key.encode("utf-8")).digest()[: 16 - len(head)]
    return "0x" + (head + body).hex()


def is_our_cloid(cloid: str | None, prefix: str = DEFAULT_CLOID_PREFIX) -> bool:
    if not cloid or not cloid.lower().startswith("0x"):
        return False
    return cloid.lower()[2:].startswith(prefix_bytes(prefix).hex())


def fill_action(fill: dict) -> tuple[str, str]:
    """(pos_type LONG/SHORT, OPEN/ADD/REDUCE/CLOSE) from an exchange fill's dir, startPosition, sz."""
    direction = str(fill.get("dir", ""))
    start = float(fill.get("startPosition") or 0.0)
    sz = float(fill.get("sz") or 0.0)
    if direction.startswith("Open"):
        pos_type = "LONG" if "Long" in direction else "SHORT"
        return pos_type, "OPEN" if abs(start) < 1e-12 else "ADD"
    if direction.startswith("Close"):
        pos_type = "LONG" if "Long" in direction else "SHORT"
        end = abs(start) - sz
        return pos_type, "CLOSE" if end <= 1e-9 * max(1.0, abs(start)) else "REDUCE"
    # a flip ("Long > Short") closes the old side first
    return ("LONG" if direction.startswith("Long") else "SHORT"), "CLOSE"


@dataclass
class Intent:
    intent_id: str
    symbol: str
    action: str
    side: str
    requested_size: float
    requested_notional: float
    decision_ts_ms: int
    status: str
    dedupe_key: str
    client_order_id: str
    created_ts_ms: int = 0
    sent_ts_ms: int | None = None
    exchange_order_id: str | None = None
    last_error: str | None = None
    leverage: float | None = None
    entry_atr: float | None = None
    reason: str | None = None
    confidence: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def reduce_only(self) -> bool:
        return self.action in ("REDUCE", "CLOSE")

    @property
    def is_buy(self) -> bool:
        return self.side == "BUY"

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> Intent:
        return cls(intent_id=r["intent_id"], symbol=r["symbol"], action=r["action"], side=r["side"],
                   requested_size=float(r["requested_size"] or 0.0),
                   requested_notional=float(r["requested_notional"] or 0.0),
                   decision_ts_ms=int(r["decision_ts_ms"] or 0), status=r["status"], dedupe_key=r["dedupe_key"],
                   client_order_id=r["client_order_id"], created_ts_ms=int(r["created_ts_ms"] or 0),
                   sent_ts_ms=r["sent_ts_ms"], exchange_order_id=r["exchange_order_id"], last_error=r["last_error"],
                   leverage=r["leverage"], entry_atr=r["entry_atr"], reason=r["reason"], confidence=r["confidence"],
                   meta=json.loads(r["meta_json"]) if r["meta_json"] else {})


class Oms:
    """The OMS tables in the live trading DB (the connection is in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection, *, cloid_prefix: str = DEFAULT_CLOID_PREFIX,
                 clock=None, strategy_version: str | None = None, strategy_sha1: str | None = None) -> None:
        self.conn = conn
        self.prefix = cloid_prefix or DEFAULT_CLOID_PREFIX
        prefix_bytes(self.prefix)
        self._now = clock.now_ms if clock is not None else now_ms
        self.strategy_version = strategy_version
        self.strategy_sha1 = strategy_sha1
        conn.executescript(SCHEMA)

    # ---------------------------------------------------------------- intents
    def create_intent(self, *, symbol: str, action: str, side: str, size: float, notional: float,
                      decision_ts_ms: int, seq: int | str, leverage: float | None = None,
                      entry_atr: float | None = None, reason: str | None = None, confidence: str | None = None,
                      meta: dict | None = None) -> tuple[Intent, bool]:
        """Write and COMMIT the intent; returns (intent, created). created=False: the key already existed."""
        if self.conn.in_transaction:
            raise OmsError("create_intent inside an open transaction: the intent must be committed before it is sent")
        key = dedupe_key(action, symbol, side, decision_ts_ms, seq)
        existing = self.by_dedupe(key)
        if existing is not None:
            return existing, False
        cloid = cloid_for(key, self.prefix)
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO oms_intents (intent_id, created_ts_ms, symbol, action, side, requested_size, "
            "requested_notional, entry_atr, leverage, decision_ts_ms, strategy_version, strategy_sha1, reason, "
            "confidence, status, dedupe_key, client_order_id, meta_json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'NEW', ?, ?, ?)",
            (uuid.uuid4().hex, self._now(), symbol.upper(), action.upper(), side.upper(), float(size),
             float(notional), entry_atr, leverage, int(decision_ts_ms), self.strategy_version, self.strategy_sha1,
             reason, confidence, key, cloid, json.dumps(meta or {}, sort_keys=True, default=str)))
        found = self.by_dedupe(key)
        if found is None:  # pragma: no cover - the row was just written
            raise OmsError(f"intent {key} vanished after insert")
        return found, cur.rowcount == 1

    def by_dedupe(self, key: str) -> Intent | None:
        r = self.conn.execute("SELECT * FROM oms_intents WHERE dedupe_key = ?", (key,)).fetchone()
        return None if r is None else Intent.from_row(r)

    def has_intents_for_bar(self, decision_ts_ms: int) -> bool:
        """Any intent (other than a WOULD of dry_live) decided on this bar: a crash may have left its
        fills unrecorded, so the bar must be re-run through the executor, not just warmed."""
        row = self.conn.execute("SELECT 1 FROM oms_intents WHERE decision_ts_ms = ? AND status != 'WOULD' "
                                "AND action != 'PROTECT' LIMIT 1", (int(decision_ts_ms),)).fetchone()
        return row is not None

    def get(self, intent_id: str) -> Intent | None:
        r = self.conn.execute("SELECT * FROM oms_intents WHERE intent_id = ?", (intent_id,)).fetchone()
        return None if r is None else Intent.from_row(r)

    def by_cloid(self, cloid: str) -> Intent | None:
        r = self.conn.execute("SELECT * FROM oms_intents WHERE lower(client_order_id) = ?",
                              (cloid.lower(),)).fetchone()
        return None if r is None else Intent.from_row(r)

    def intents(self, statuses: tuple[str, ...] = OPEN_STATUSES) -> list[Intent]:
        marks = ",".join("?" * len(statuses))
        rows = self.conn.execute(f"SELECT * FROM oms_intents WHERE status IN ({marks}) ORDER BY created_ts_ms",
                                 statuses)
        return [Intent.from_row(r) for r in rows]

    def set_status(self, intent: Intent, status: str, *, only_from: tuple[str, ...] | None = None,
                   error: str | None = None, oid: int | str | None = None, sent: bool = False) -> bool:
        """Move an intent to `status`; with only_from the move happens only from those statuses
        (compare-and-set: a resolution can never be applied twice)."""
        if status not in STATUSES:
            raise OmsError(f"unknown intent status {status!r}")
        sets, args = ["status = ?"], [status]
        if error is not None:
            sets.append("last_error = ?")
            args.append(error[:2000])
        if oid is not None:
            sets.append("exchange_order_id = ?")
            args.append(str(oid))
        if sent:
            sets.append("sent_ts_ms = COALESCE(sent_ts_ms, ?)")
            args.append(self._now())
        sql = f"UPDATE oms_intents SET {', '.join(sets)} WHERE intent_id = ?"
        args.append(intent.intent_id)
        if only_from:
            sql += f" AND status IN ({','.join('?' * len(only_from))})"
            args.extend(only_from)
        changed = self.conn.execute(sql, args).rowcount == 1
        if changed:
            intent.status = status
            intent.last_error = error if error is not None else intent.last_error
            intent.exchange_order_id = str(oid) if oid is not None else intent.exchange_order_id
        return changed

    # ---------------------------------------------------------------- orders and fills
    def record_order(self, intent: Intent, *, order_type: str, size: float, status: str, raw: Any,
                     oid: int | str | None = None) -> None:
        self.conn.execute(
            "INSERT INTO oms_orders (intent_id, created_ts_ms, symbol, side, order_type, requested_size, "
            "reduce_only, client_order_id, exchange_order_id, status, raw_json) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (intent.intent_id, self._now(), intent.symbol, intent.side, order_type, float(size),
             int(intent.reduce_only), intent.client_order_id, None if oid is None else str(oid), status,
             json.dumps(raw, sort_keys=True, default=str)))

    def record_fill(self, intent: Intent | None, fill: dict, matched_via: str) -> bool:
        """Store one exchange fill once (UNIQUE fill_hash, fill_tid); True when it was new."""
        pos_type, action = fill_action(fill)
        px, sz, fee = float(fill["px"]), float(fill["sz"]), float(fill.get("fee") or 0.0)
        notional = px * sz
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO oms_fills (ts_ms, symbol, intent_id, order_id, action, side, pos_type, price, "
            "size, notional, fee_usd, fee_token, fee_rate, pnl_usd, fill_hash, fill_tid, matched_via, raw_json) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (int(fill.get("time") or 0), str(fill["coin"]).upper(), intent.intent_id if intent else None,
             str(fill.get("oid")), action, "BUY" if fill.get("side") == "B" else "SELL", pos_type, px, sz, notional,
             fee, fill.get("feeToken", "USDC"), fee / notional if notional else 0.0,
             float(fill.get("closedPnl") or 0.0), str(fill.get("hash")), int(fill.get("tid") or 0), matched_via,
             json.dumps(fill, sort_keys=True)))
        return cur.rowcount == 1

    def has_fill(self, fill: dict) -> bool:
        return self.conn.execute("SELECT 1 FROM oms_fills WHERE fill_hash = ? AND fill_tid = ?",
                                 (str(fill.get("hash")), int(fill.get("tid") or 0))).fetchone() is not None

    def by_oid(self, oid: int | str) -> tuple[Intent, str] | None:
        """The intent that owns exchange order oid: its own oid, or a sibling fill of that order."""
        r = self.conn.execute("SELECT * FROM oms_intents WHERE exchange_order_id = ?", (str(oid),)).fetchone()
        if r is not None:
            return Intent.from_row(r), "oid"
        r = self.conn.execute("SELECT i.* FROM oms_fills f JOIN oms_intents i ON i.intent_id = f.intent_id "
                              "WHERE f.order_id = ? LIMIT 1", (str(oid),)).fetchone()
        return None if r is None else (Intent.from_row(r), "fill_sibling")

    def time_candidate(self, symbol: str, side: str, entry: bool, t_ms: int, ttl_ms: int) -> Intent | None:
        """Nearest sent intent of the same symbol/side/kind whose exchange oid is still unknown
        (an intent with a known oid would have matched by oid), within ttl_ms of the fill time."""
        actions = ("OPEN", "ADD") if entry else ("REDUCE", "CLOSE")
        rows = self.conn.execute(
            "SELECT * FROM oms_intents WHERE symbol = ? AND side = ? AND action IN (?, ?) "
            "AND status IN ('SENT', 'PARTIAL', 'UNKNOWN') AND exchange_order_id IS NULL "
            "AND sent_ts_ms IS NOT NULL AND abs(sent_ts_ms - ?) <= ? ORDER BY abs(sent_ts_ms - ?) LIMIT 1",
            (symbol.upper(), side, *actions, int(t_ms), int(ttl_ms), int(t_ms))).fetchone()
        return None if rows is None else Intent.from_row(rows)

    def manual_intent(self, fill: dict) -> Intent:
        """The synthetic FILLED intent of a fill no intent of ours explains (a manual trade)."""
        pos_type, action = fill_action(fill)
        tid = int(fill.get("tid") or 0)
        intent_id = f"manual_{str(fill.get('hash', '')).removeprefix('0x')[:12]}_{tid}"
        side = "BUY" if fill.get("side") == "B" else "SELL"
        sz, px = float(fill["sz"]), float(fill["px"])
        self.conn.execute(
            "INSERT OR IGNORE INTO oms_intents (intent_id, created_ts_ms, sent_ts_ms, symbol, action, side, "
            "requested_size, requested_notional, decision_ts_ms, reason, status, dedupe_key, client_order_id, "
            "exchange_order_id, meta_json) VALUES (?,?,?,?,?,?,?,?,?,'manual','FILLED',?,?,?,?)",
            (intent_id, self._now(), int(fill.get("time") or 0), str(fill["coin"]).upper(), action, side, sz,
             sz * px, int(fill.get("time") or 0), intent_id, fill.get("cloid"), str(fill.get("oid")),
             json.dumps({"orphan": True, "pos_type": pos_type}, sort_keys=True)))
        return self.get(intent_id)

    def filled_size(self, intent: Intent) -> float:
        r = self.conn.execute("SELECT COALESCE(SUM(size), 0) FROM oms_fills WHERE intent_id = ?",
                              (intent.intent_id,)).fetchone()
        return float(r[0])

    def fills_of(self, intent: Intent) -> list[dict]:
        rows = self.conn.execute("SELECT raw_json FROM oms_fills WHERE intent_id = ? ORDER BY fill_tid",
                                 (intent.intent_id,))
        return [json.loads(r[0]) for r in rows]

    # ---------------------------------------------------------------- reconciliation records
    def reconcile_event(self, kind: str, *, symbol: str | None = None, intent_id: str | None = None,
                        cloid: str | None = None, oid: int | str | None = None, result: str = "",
                        detail: dict | None = None) -> None:
        self.conn.execute(
            "INSERT INTO oms_reconcile_events (ts_ms, kind, symbol, intent_id, client_order_id, exchange_order_id, "
            "result, detail_json) VALUES (?,?,?,?,?,?,?,?)",
            (self._now(), kind, symbol, intent_id, cloid, None if oid is None else str(oid), result,
             json.dumps(detail or {}, sort_keys=True, default=str)))

    def upsert_open_order(self, order: dict) -> int:
        """Remember an exchange open order; returns its first_seen_ts_ms (staleness is local time)."""
        oid = str(order["oid"])
        now = self._now()
        cloid = order.get("cloid")
        intent = self.by_cloid(cloid) if cloid else None
        self.conn.execute(
            "INSERT INTO oms_open_orders (exchange_order_id, first_seen_ts_ms, last_seen_ts_ms, symbol, side, price, "
            "orig_size, remaining_size, reduce_only, client_order_id, intent_id, raw_json) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(exchange_order_id) DO UPDATE SET "
            "last_seen_ts_ms = excluded.last_seen_ts_ms, remaining_size = excluded.remaining_size, "
            "raw_json = excluded.raw_json",
            (oid, now, now, order.get("coin"), "BUY" if order.get("side") == "B" else "SELL",
             float(order.get("limitPx") or 0), float(order.get("origSz") or order.get("sz") or 0),
             float(order.get("sz") or 0), int(bool(order.get("reduceOnly", False))), cloid,
             intent.intent_id if intent else None, json.dumps(order, sort_keys=True)))
        return int(self.conn.execute("SELECT first_seen_ts_ms FROM oms_open_orders WHERE exchange_order_id = ?",
                                     (oid,)).fetchone()[0])

    def forget_open_orders_except(self, live_oids: set[str]) -> int:
        rows = [r[0] for r in self.conn.execute("SELECT exchange_order_id FROM oms_open_orders")]
        gone = [oid for oid in rows if oid not in live_oids]
        for oid in gone:
            self.conn.execute("DELETE FROM oms_open_orders WHERE exchange_order_id = ?", (oid,))
        return len(gone)


# ====================================================================== execution
@dataclass
class OrderRequest:
    """One engine fill turned into an order decision."""

    symbol: str
    action: str                      # OPEN | ADD | REDUCE | CLOSE
    side: str                        # BUY | SELL
    size: float
    notional: float
    decision_ts_ms: int              # the candle (bar open time) that decided it
    seq: int | str
    leverage: float | None = None
    entry_atr: float | None = None
    reason: str | None = None
    confidence: str | None = None
    tif: str = "Ioc"
    limit_px: float | None = None    # GTC orders only; IOC prices come from the mid
    meta: dict = field(default_factory=dict)

    @property
    def is_entry(self) -> bool:
        return self.action in ("OPEN", "ADD")


@dataclass
class Execution:
    intent: Intent
    fills: list[dict]
    error: str | None = None

    @property
    def status(self) -> str:
        return self.intent.status

    @property
    def filled_sz(self) -> float:
        return sum(float(f["sz"]) for f in self.fills)

    @property
    def avg_px(self) -> float | None:
        sz = self.filled_sz
        return sum(float(f["px"]) * float(f["sz"]) for f in self.fills) / sz if sz else None

    @property
    def fee(self) -> float:
        return sum(float(f.get("fee") or 0.0) for f in self.fills)

    @property
    def closed_pnl(self) -> float:
        return sum(float(f.get("closedPnl") or 0.0) for f in self.fills)

    @property
    def refused(self) -> bool:
        """Nothing happened on the exchange (the daemon treats it like a risk refusal)."""
        return self.status in ("REJECTED", "EXPIRED", "CANCELLED") and not self.fills


class OrderExecutor:
    """Send-once semantics on top of Oms + broker: write, (hook), send, classify, resolve.

    `still_valid(intent)` decides whether an intent found NEW after a restart may still be sent
    (the daemon: its bar is still tradeable). `before_send` is a test seam called after the
    intent is committed and before the request leaves (a crash there is what the OMS survives).

    A NEW intent of a previous process may have been signed at any moment until that process
    died, however long after the intent was committed (a loaded machine): its order can land until
    expiresAfter of that moment. The previous process died before this one started (the instance
    lock), so `resolve_new` asks the exchange until this executor's start + expiresAfter + margin,
    never only until the intent's created time + expiresAfter.
    """

    def __init__(self, oms: Oms, broker, gate, *, audit: Callable[[str, str | None, dict], None],
                 still_valid: Callable[[Intent], bool], poll_s: float = 0.2, fills_wait_s: float = 2.0,
                 before_send: Callable[[Intent], None] | None = None, sleep=time.sleep) -> None:
        self.oms, self.broker, self.gate = oms, broker, gate
        self.audit = audit
        self.still_valid = still_valid
        self.poll_s = poll_s
        self.fills_wait_s = fills_wait_s
        self.before_send = before_send
        self.sleep = sleep
        self.started_ms = time.time_ns() // 1_000_000  # after the instance lock: earlier processes are gone

    # ---------------------------------------------------------------- entry point
    def execute(self, req: OrderRequest) -> Execution:
        intent, created = self.oms.create_intent(
            symbol=req.symbol, action=req.action, side=req.side, size=req.size, notional=req.notional,
            decision_ts_ms=req.decision_ts_ms, seq=req.seq, leverage=req.leverage, entry_atr=req.entry_atr,
            reason=req.reason, confidence=req.confidence, meta={**req.meta, "tif": req.tif})
        if intent.status == "SENT" and not self.oms.fills_of(intent):
            # acknowledged by the exchange, then the process died before its fills were stored:
            # ask once about the cloid (never re-send)
            found = self._ask_exchange(intent, deadline=0.0)
            if found is not None:
                self._reconcile_note("RESOLVE_SENT", intent, found.status)
                return found
        if intent.status in ("FILLED", "PARTIAL", "SENT"):
            return Execution(intent, self._known_fills(intent))
        if intent.status in ("WOULD", "REJECTED", "EXPIRED", "CANCELLED"):
            return Execution(intent, self.oms.fills_of(intent), intent.last_error)
        if intent.status == "UNKNOWN":
            return self.resolve(intent)
        if not created:  # NEW left by a crash between commit and send: resolved exactly once here
            outcome = self.resolve_new(intent)
            if outcome is not None:
                return outcome
            self._reconcile_note("RESOLVE_NEW", intent, "send_now")
        return self._send(intent, req)

    def resolve_new(self, intent: Intent) -> Execution | None:
        """A NEW intent from before a restart: the exchange's answer, EXPIRED, or None (send it now)."""
        # signed (if ever) no earlier than created, and by a previous process no later than our start
        found = self._ask_exchange(intent, deadline=self._deadline(max(intent.created_ts_ms, self.started_ms)))
        if found is not None:
            self._reconcile_note("RESOLVE_NEW", intent, f"found_on_exchange:{found.status}")
            return found
        if self.still_valid(intent):
            return None
        self.oms.set_status(intent, "EXPIRED", only_from=("NEW",),
                            error="written but never sent; its bar is no longer tradeable")
        self._reconcile_note("RESOLVE_NEW", intent, "EXPIRED")
        self.audit("INTENT_EXPIRED", intent.symbol, self._brief(intent))
        return Execution(intent, [], intent.last_error)

    # ---------------------------------------------------------------- send
    def _send(self, intent: Intent, req: OrderRequest) -> Execution:
        from live.hl_broker import OrderRefused

        ok, why = self.gate.may_send()
        if not ok:
            if why == "dry_live":
                self.oms.set_status(intent, "WOULD", only_from=("NEW",))
                return Execution(intent, [])
            return self._refuse(intent, f"blocked: {why}", "ORDER_BLOCKED")
        try:
            size, px = self._size_and_price(intent, req)
            if req.is_entry and req.leverage:
                self.broker.ensure_leverage(intent.symbol, req.leverage)
        except OrderRefused as exc:
            return self._refuse(intent, str(exc), "ORDER_REJECTED")
        except ExchangeUnavailable as exc:
            return self._refuse(intent, f"{UNREACHABLE}: {exc}", "EXCHANGE_UNREACHABLE")
        if self.before_send is not None:
            self.before_send(intent)
        try:
            res = self.broker.submit(intent.symbol, intent.is_buy, size, px, reduce_only=intent.reduce_only,
                                     cloid=intent.client_order_id, tif=req.tif)
        except ExchangeUnavailable as exc:  # the client could not be built: nothing was sent
            return self._refuse(intent, f"{UNREACHABLE}: {exc}", "EXCHANGE_UNREACHABLE")
        self.oms.record_order(intent, order_type=f"limit_{req.tif.lower()}", size=size, status=res.status,
                              raw={"response": res.raw, "error": res.error, "limit_px": px}, oid=res.oid)
        if res.status == "REJECTED":
            return self._refuse(intent, res.error or "rejected", "ORDER_REJECTED", sent=True)
        if res.status == "UNKNOWN":
            self.oms.set_status(intent, "UNKNOWN", only_from=("NEW",), error=res.error, sent=True)
            self.audit("ORDER_UNKNOWN", intent.symbol, {**self._brief(intent), "error": res.error})
            return self.resolve(intent)
        self.oms.set_status(intent, "SENT", only_from=("NEW",), oid=res.oid, sent=True)
        if res.status == "RESTING":
            return Execution(intent, [])
        fills = self._collect_fills(intent, res.oid, res.filled_sz)
        self._finish(intent, fills, "filled" if res.status == "FILLED" else "canceled")
        return Execution(intent, fills)

    def _size_and_price(self, intent: Intent, req: OrderRequest) -> tuple[float, float]:
        from live.hl_broker import OrderRefused, round_price, round_size

        sd = self.broker.sz_decimals(intent.symbol)
        if req.limit_px is not None:
            px = round_price(req.limit_px, sd)
        else:
            px = self.broker.limit_price(intent.symbol, intent.is_buy)
        if req.is_entry:
            return self.broker.entry_size(intent.symbol, req.size, self.broker.mid(intent.symbol)), px
        held = self.broker.positions().get(intent.symbol, 0.0)
        if held == 0.0 or (held > 0) == intent.is_buy:
            raise OrderRefused(f"Reduce only order would increase position (refused locally: no "
                               f"{'short' if intent.is_buy else 'long'} {intent.symbol} position on the exchange)")
        size = abs(held) if intent.action == "CLOSE" else min(round_size(req.size, sd), abs(held))
        if size <= 0:
            raise OrderRefused(f"Order has invalid size (refused locally: {req.size:g} rounds to 0)")
        return size, px

    def _refuse(self, intent: Intent, error: str, event: str, sent: bool = False) -> Execution:
        self.oms.set_status(intent, "REJECTED", only_from=("NEW", "UNKNOWN"), error=error, sent=sent)
        self.audit(event, intent.symbol, {**self._brief(intent), "error": error})
        return Execution(intent, [], error)

    # ---------------------------------------------------------------- resolution
    def resolve(self, intent: Intent) -> Execution:
        """UNKNOWN -> whatever the exchange says about the cloid; never a second send."""
        start = intent.sent_ts_ms or intent.created_ts_ms
        found = self._ask_exchange(intent, deadline=self._deadline(start))
        if found is not None:
            self._reconcile_note("RESOLVE_UNKNOWN", intent, found.status)
            return found
        error = "not found on the exchange after the submit timeout and its expiresAfter"
        self.oms.set_status(intent, "EXPIRED", only_from=("UNKNOWN", "NEW"), error=error)
        self._reconcile_note("RESOLVE_UNKNOWN", intent, "EXPIRED")
        self.audit("INTENT_EXPIRED", intent.symbol, {**self._brief(intent), "error": error})
        return Execution(intent, [], error)

    def _deadline(self, start_ms: int) -> float:
        """Wall seconds until which an order sent at start_ms may still appear (expiresAfter + margin)."""
        return start_ms / 1000.0 + float(getattr(self.broker, "expires_s", 15.0)) + 1.0

    def _ask_exchange(self, intent: Intent, deadline: float) -> Execution | None:
        while True:
            try:
                st = self.broker.order_status(intent.client_order_id)
            except Exception as exc:  # an unreachable exchange is not an answer: keep asking
                st = {"status": "error", "error": str(exc)}
            if st.get("status") == "order":
                order = st["order"]
                return self._adopt(intent, str(order.get("status")), int(order["order"]["oid"]))
            if time.time() >= deadline:
                return None
            self.sleep(self.poll_s)

    def _adopt(self, intent: Intent, order_status: str, oid: int) -> Execution:
        self.oms.set_status(intent, "SENT", only_from=("NEW", "UNKNOWN"), oid=oid, sent=True)
        if order_status == "open":
            return Execution(intent, self._record_fills(intent, self.broker.fills_for_oid(oid), "cloid"))
        fills = self._collect_fills(intent, oid, None, via="cloid")
        self._finish(intent, fills, order_status)
        return Execution(intent, fills, None if fills else f"exchange status {order_status}")

    def _finish(self, intent: Intent, fills: list[dict], order_status: str) -> None:
        filled = sum(float(f["sz"]) for f in fills)
        if filled > 0:
            full = intent.action == "CLOSE" or filled >= intent.requested_size * 0.999
            status = "FILLED" if full or order_status == "filled" else "PARTIAL"
        elif order_status in ("canceled", "marginCanceled", "reduceOnlyCanceled", "selfTradeCanceled"):
            status = "CANCELLED"
        else:
            status = "REJECTED"
        self.oms.set_status(intent, status, only_from=("SENT", "UNKNOWN", "NEW"),
                            error=None if filled else f"exchange status {order_status}")

    def _collect_fills(self, intent: Intent, oid: int, expected: float | None, via: str = "oid") -> list[dict]:
        """The exchange's fills of oid (they may trail the order reply by a moment)."""
        end = time.time() + self.fills_wait_s
        while True:
            fills = self.broker.fills_for_oid(oid)
            got = sum(float(f["sz"]) for f in fills)
            if (expected is None and fills) or (expected is not None and got >= expected * (1 - 1e-9)) \
                    or time.time() >= end:
                return self._record_fills(intent, fills, via)
            self.sleep(self.poll_s)

    def _record_fills(self, intent: Intent, fills: list[dict], via: str) -> list[dict]:
        for f in fills:
            self.oms.record_fill(intent, f, via)
        return self.oms.fills_of(intent)

    def _known_fills(self, intent: Intent) -> list[dict]:
        fills = self.oms.fills_of(intent)
        if not fills and intent.exchange_order_id and intent.status != "SENT":
            fills = self._record_fills(intent, self.broker.fills_for_oid(int(intent.exchange_order_id)), "oid")
        return fills

    # ---------------------------------------------------------------- notes
    def _brief(self, intent: Intent) -> dict:
        return {"intent_id": intent.intent_id, "action": intent.action, "side": intent.side,
                "size": intent.requested_size, "cloid": intent.client_order_id, "dedupe_key": intent.dedupe_key}

    def _reconcile_note(self, kind: str, intent: Intent, result: str) -> None:
        self.oms.reconcile_event(kind, symbol=intent.symbol, intent_id=intent.intent_id,
                                 cloid=intent.client_order_id, oid=intent.exchange_order_id, result=result)
