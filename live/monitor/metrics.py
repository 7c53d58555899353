"""Trading DBs -> Prometheus metrics, built with prometheus_client at scrape time.

Why a custom collector rather than Counter/Gauge objects: the monitor is a reader, not the trader.
Every figure already lives in the trading DB, so each scrape reads it (through the server's snapshot
cache and a per-mode `DbTally`) and hands the values to `generate_latest`; nothing is kept in
process-global state that could drift from the DB or double-count after a monitor restart.

Names: every metric is `aiq_…` with a `mode` label (paper | live). The earlier unprefixed gauges
(`engine_up`, `kill_mode`, …, see LEGACY_GAUGES) are still served with the same values so existing
alert rules keep firing; they are deprecated (docs/MONITOR.md, "Prometheus").

Counters come from append-only tables, folded incrementally (only rows newer than the last scrape are
read; a replaced DB starts the fold over, which Prometheus sees as a counter reset):
- fills: `trades` rows by symbol and action;
- order rejections: ORDER_REJECTED / ORDER_BLOCKED rows of `audit_events` (live/alert_rules.REJECTED);
- alerts: the trader's Alerter keeps its sent/failed/dropped counters in memory only, but logs each
  outcome through the RuntimeLogger into `runtime_logs`; those lines are counted (ALERT_LINES).

A missing heartbeat is exported as an age of +Inf (not left out), so that `aiq_heartbeat_age_seconds
> 120` fires when the daemon never wrote one instead of silently matching nothing. A figure that is
unknown (no DB, unknown kill state, a position without a mark) is left out, never exported as 0.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from live.alert_rules import REJECTED
from live.monitor.snapshot import STATUS_OK, DbUnavailable, open_readonly

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
Getter = Callable[[dict[str, Any]], Any]


def _flag(value: Any) -> float | None:
    return None if value is None else (1.0 if value else 0.0)


def _db_ok(snap: dict[str, Any]) -> bool:
    return snap["db"]["status"] == STATUS_OK


def _heartbeat_age(snap: dict[str, Any]) -> float:
    age = snap["heartbeat"]["age_s"]
    return math.inf if age is None else age


def _kill_level(snap: dict[str, Any]) -> float | None:
    level = snap["kill"]["level"]
    return None if level is None else float(level)


def _open_positions(snap: dict[str, Any]) -> float | None:
    return float(len(snap["open_positions"])) if _db_ok(snap) else None


def _marked(snap: dict[str, Any]) -> bool:
    """Unrealised PnL (and so equity) is known only when every open position has a mark: the desk
    counts an unmarked position as 0, a metric must not (an alert on equity would read it as flat)."""
    return _db_ok(snap) and all(p.get("unrealised_pnl") is not None for p in snap["open_positions"])


def _pnl_today(snap: dict[str, Any]) -> float | None:
    return None if snap["pnl_today"] is None else snap["pnl_today"]["net"]


# The pre-issue-16 names, kept so existing alert rules keep working (deprecated; same values).
LEGACY_GAUGES: tuple[tuple[str, str, Getter], ...] = (
    ("db_up", "Deprecated: use aiq_db_up", lambda s: 1.0 if _db_ok(s) else 0.0),
    ("engine_up", "Deprecated: use aiq_engine_up", lambda s: 1.0 if s["engine_up"] else 0.0),
    ("heartbeat_age_s", "Deprecated: use aiq_heartbeat_age_seconds", _heartbeat_age),
    ("open_pos", "Deprecated: use aiq_open_positions", _open_positions),
    ("ws_connected", "Deprecated: use aiq_ws_connected", lambda s: _flag(s["heartbeat"]["fields"].get("ws_connected"))),
    ("kill_mode", "Deprecated: use aiq_kill_level", _kill_level),
    ("heartbeat_errors", "Deprecated: use aiq_heartbeat_errors", lambda s: s["heartbeat"]["fields"].get("errors")),
    ("balance_usd", "Deprecated: use aiq_balance_usd", lambda s: s["balance"]),
    ("pnl_today", "Deprecated: use aiq_pnl_today_usd", _pnl_today),
    ("drawdown_pct", "Deprecated: use aiq_drawdown_percent", lambda s: s["drawdown_pct"]),
)

# One sample per mode: name, help, value(snapshot) -> float | None (None: the sample is left out).
AIQ_GAUGES: tuple[tuple[str, str, Getter], ...] = (
    ("aiq_db_up", "1 when the trading DB could be read", lambda s: 1.0 if _db_ok(s) else 0.0),
    ("aiq_engine_up", "1 when the last heartbeat is fresh and no clean stop followed it",
     lambda s: 1.0 if s["engine_up"] else 0.0),
    ("aiq_heartbeat_age_seconds", "Seconds since the last heartbeat (+Inf when none)", _heartbeat_age),
    ("aiq_equity_usd", "Realised balance plus the unrealised PnL of every open position",
     lambda s: s["equity"] if _marked(s) else None),
    ("aiq_balance_usd", "Realised balance: the balance after the last fill", lambda s: s["balance"]),
    ("aiq_unrealised_pnl_usd", "Unrealised PnL of the open positions at the engine's last marks",
     lambda s: s["unrealised_pnl"] if _marked(s) else None),
    ("aiq_open_positions", "Open positions rebuilt from trades", _open_positions),
    ("aiq_kill_level", "Kill switch: 0 off, 1 close_only, 2 halt_all (absent when unknown)", _kill_level),
    ("aiq_ws_connected", "WS connected flag from the heartbeat",
     lambda s: _flag(s["heartbeat"]["fields"].get("ws_connected"))),
    ("aiq_heartbeat_errors", "Engine loop errors since the trader started, from the heartbeat",
     lambda s: s["heartbeat"]["fields"].get("errors")),
    ("aiq_pnl_today_usd", "Today's (UTC) realised PnL net of fees", _pnl_today),
    ("aiq_drawdown_percent", "Drawdown of the balance curve from its peak, percent", lambda s: s["drawdown_pct"]),
    ("aiq_max_drawdown_percent", "Worst drawdown of the balance curve, percent", lambda s: s["max_drawdown_pct"]),
)

GAUGES = LEGACY_GAUGES            # /api/metrics keeps its keys (tests/test_monitor.py)
JSON_GAUGES = LEGACY_GAUGES + AIQ_GAUGES


def gauge_value(getter: Getter, snap: dict[str, Any]) -> float | None:
    """A getter's value, None when the snapshot lacks the section (an older or missing DB)."""
    try:
        value = getter(snap)
        return None if value is None else float(value)
    except (KeyError, TypeError, ValueError):
        return None


# ------------------------------------------------------------------ counters folded from the DB
# The Alerter's own log lines (live/alerts.py _Lane), written to runtime_logs by the daemon's logger.
ALERT_SENT = re.compile(r"^alert (?:(?P<kind>\S+) sent to |\(dry run\) to )")
ALERT_FAILED = re.compile(r"^alert (?P<kind>\S+) to .+ failed after \d+ attempt")
ALERT_DROPPED = re.compile(r"^alert queue for (?P<target>.+) full \(\d+\) or closed: \S+ dropped "
                           r"\((?P<n>\d+) dropped so far\)")
DRY_RUN_KIND = "dry_run"  # a dry-run line does not name the kind


@dataclass
class Tallies:
    """Counts read from one DB: what the counter families export."""

    fills: Counter = field(default_factory=Counter)          # (symbol, action)
    rejections: Counter = field(default_factory=Counter)     # (symbol, event)
    alerts_sent: Counter = field(default_factory=Counter)    # kind
    alerts_failed: Counter = field(default_factory=Counter)  # kind
    drops: dict[tuple[int, str], int] = field(default_factory=dict)  # (pid, target) -> lane total

    @property
    def alerts_dropped(self) -> int:
        return sum(self.drops.values())

    def copy(self) -> Tallies:
        return Tallies(Counter(self.fills), Counter(self.rejections), Counter(self.alerts_sent),
                       Counter(self.alerts_failed), dict(self.drops))


def _fold_trade(t: Tallies, row: sqlite3.Row) -> None:
    t.fills[(row["symbol"] or "", row["action"] or "")] += 1


def _fold_audit(t: Tallies, row: sqlite3.Row) -> None:
    if row["event"] in REJECTED:
        t.rejections[(row["symbol"] or "", row["event"])] += 1


def _fold_log(t: Tallies, row: sqlite3.Row) -> None:
    """One runtime_logs row that starts with 'alert ': a drop line carries its lane's running total
    (the Alerter logs at most one a minute), so the newest total per trader process and target wins."""
    msg = row["message"] or ""
    if m := ALERT_SENT.match(msg):
        t.alerts_sent[m["kind"] or DRY_RUN_KIND] += 1
    elif m := ALERT_FAILED.match(msg):
        t.alerts_failed[m["kind"]] += 1
    elif m := ALERT_DROPPED.match(msg):
        key = (int(row["pid"] or 0), m["target"])
        t.drops[key] = max(t.drops.get(key, 0), int(m["n"]))


@dataclass(frozen=True)
class TableFold:
    """How one append-only table is folded: the rows after `last_id`, and a column whose value at
    `last_id` tells a replaced DB from a grown one."""

    table: str
    mark: str
    select: str      # columns read
    where: str       # extra filter on the rows read
    fold: Callable[[Tallies, sqlite3.Row], None]


FOLDS = (
    TableFold("trades", "timestamp", "symbol, action", "", _fold_trade),
    TableFold("audit_events", "ts_ms", "symbol, event", f"AND event IN ({','.join('?' * len(REJECTED))})",
              _fold_audit),
    TableFold("runtime_logs", "ts_ms", "pid, message", "AND message LIKE 'alert %'", _fold_log),
)
FOLD_ARGS = {"audit_events": tuple(sorted(REJECTED))}


class DbTally:
    """The counters of one mode's DB, folded incrementally between scrapes: a runtime_logs table of
    500k rows is scanned once, then each scrape reads only the rows written since."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._tallies = Tallies()
        self._seen: dict[str, tuple[int, Any]] = {}

    def read(self) -> Tallies | None:
        """Fold in the new rows and return a copy of the counts; None when the DB cannot be read."""
        with self._lock:
            try:
                conn = open_readonly(self.path)
            except DbUnavailable:
                self._tallies, self._seen = Tallies(), {}
                return None
            try:
                conn.execute("BEGIN")
                for spec in FOLDS:
                    self._advance(conn, spec)
            finally:
                conn.close()
            return self._tallies.copy()

    def _advance(self, conn: sqlite3.Connection, spec: TableFold) -> None:
        try:
            hi, mark = self._newest(conn, spec)
            last_id, last_mark = self._seen.get(spec.table, (0, None))
            if hi < last_id or (last_id and self._mark_at(conn, spec, last_id) != last_mark):
                self._reset(spec.table)
                last_id = 0
            rows = conn.execute(f"SELECT {spec.select} FROM {spec.table} WHERE id > ? AND id <= ? {spec.where}",
                                (last_id, hi, *FOLD_ARGS.get(spec.table, ())))
            for row in rows:
                spec.fold(self._tallies, row)
            self._seen[spec.table] = (hi, mark)
        except sqlite3.Error:  # a table missing from an older DB costs its own counters only;
            self._reset(spec.table)  # a fold cut short starts over rather than count rows twice
            self._seen.pop(spec.table, None)

    @staticmethod
    def _newest(conn: sqlite3.Connection, spec: TableFold) -> tuple[int, Any]:
        row = conn.execute(f"SELECT id, {spec.mark} FROM {spec.table} ORDER BY id DESC LIMIT 1").fetchone()
        return (0, None) if row is None else (int(row[0]), row[1])

    @staticmethod
    def _mark_at(conn: sqlite3.Connection, spec: TableFold, row_id: int) -> Any:
        row = conn.execute(f"SELECT {spec.mark} FROM {spec.table} WHERE id = ?", (row_id,)).fetchone()
        return None if row is None else row[0]

    def _reset(self, table: str) -> None:
        """The DB was replaced or rewritten: that table's counts start over."""
        t = self._tallies
        if table == "trades":
            t.fills.clear()
        elif table == "audit_events":
            t.rejections.clear()
        else:
            t.alerts_sent.clear()
            t.alerts_failed.clear()
            t.drops.clear()


# ------------------------------------------------------------------ the collector
@dataclass(frozen=True)
class ModeReading:
    """One mode at one scrape: its desk snapshot and its counters (None: DB unreadable)."""

    snapshot: dict[str, Any]
    tallies: Tallies | None = None


def _mode_gauges(table: Iterable[tuple[str, str, Getter]], readings: list[ModeReading]) -> Iterator[Metric]:
    for name, help_text, getter in table:
        family = GaugeMetricFamily(name, help_text, labels=["mode"])
        for r in readings:
            value = gauge_value(getter, r.snapshot)
            if value is not None:
                family.add_metric([r.snapshot["mode"]], value)
        yield family


def _bar_gauges(readings: list[ModeReading]) -> Iterator[Metric]:
    """Per symbol: the close time of its newest bar and its age (source: AIQ_MONITOR_CANDLES_DB when
    set, else the engine checkpoint's last bar; see snapshot.data_lag)."""
    age = GaugeMetricFamily("aiq_last_bar_age_seconds", "Seconds since the close of the newest bar of a symbol",
                            labels=["mode", "symbol"])
    ts = GaugeMetricFamily("aiq_last_bar_timestamp_seconds", "Close time of the newest bar of a symbol, Unix seconds",
                           labels=["mode", "symbol"])
    for r in readings:
        for lag in r.snapshot.get("data_lag") or []:
            labels = [r.snapshot["mode"], lag["symbol"]]
            age.add_metric(labels, float(lag["lag_s"]))
            ts.add_metric(labels, lag["last_bar_ms"] / 1000.0)
    yield age
    yield ts


def _counter(name: str, help_text: str, labels: list[str], readings: list[ModeReading],
             values: Callable[[Tallies], Iterable[tuple[tuple[str, ...], float]]]) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=["mode", *labels])
    for r in readings:
        if r.tallies is not None:
            for key, value in values(r.tallies):
                family.add_metric([r.snapshot["mode"], *key], float(value))
    return family


def _counters(readings: list[ModeReading]) -> Iterator[Metric]:
    yield _counter("aiq_fills", "Fills in the trades table", ["symbol", "action"], readings,
                   lambda t: sorted(t.fills.items()))
    yield _counter("aiq_order_rejections", "ORDER_REJECTED / ORDER_BLOCKED audit events", ["symbol", "event"],
                   readings, lambda t: sorted(t.rejections.items()))
    yield _counter("aiq_alerts_sent", "Alert deliveries (one per target) the trader logged as sent",
                   ["kind"], readings, lambda t: sorted(((k,), v) for k, v in t.alerts_sent.items()))
    yield _counter("aiq_alerts_failed", "Alert deliveries the trader gave up on after its retries",
                   ["kind"], readings, lambda t: sorted(((k,), v) for k, v in t.alerts_failed.items()))
    yield _counter("aiq_alerts_dropped", "Alerts dropped on a full queue, as last logged (a lower bound)",
                   [], readings, lambda t: [((), t.alerts_dropped)])


class DeskCollector:
    """A prometheus_client collector whose `collect()` reads the DBs: `read` is called per scrape."""

    def __init__(self, read: Callable[[], list[ModeReading]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        readings = self.read()
        yield from _mode_gauges(AIQ_GAUGES, readings)
        yield from _bar_gauges(readings)
        yield from _counters(readings)
        yield from _mode_gauges(LEGACY_GAUGES, readings)


def exposition(read: Callable[[], list[ModeReading]]) -> bytes:
    """The text format (0.0.4) for one scrape; a registry per request, so `?mode=` only changes
    what `read` returns and nothing is shared between requests."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DeskCollector(read))
    return generate_latest(registry)


def render(snapshots: list[dict[str, Any]], tallies: list[Tallies | None] | None = None) -> str:
    """Snapshots (and optionally their counters) -> text; for tools and tests without a server."""
    counts = tallies if tallies is not None else [None] * len(snapshots)
    readings = [ModeReading(s, t) for s, t in zip(snapshots, counts, strict=True)]
    return exposition(lambda: readings).decode()
