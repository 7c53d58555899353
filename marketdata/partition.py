"""Monthly archive partitions for a hot candle DB (runbook §3, AQC-204).

Old months are copied into `candles_{iv}_YYYY-MM.db` beside the hot DB and, only on request and
only after the copy is proven complete (same row count and same checksum of every column), deleted
from the hot DB. Readers merge hot DB + partitions, so a partition run never changes what a
replay sees.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from marketdata.intervals import MarketDataError, normalize_interval
from marketdata.sqlite_store import (
    CANDLE_COLUMNS,
    connect,
    ensure_candles_schema,
    table_columns,
    table_exists,
)

DAY_MS = 86_400_000


@dataclass
class MonthPlan:
    month: str
    start_ms: int
    end_ms: int  # exclusive: min(next month start, cutoff)
    rows: int
    partition: Path
    copied: int = 0
    verified: bool = False
    deleted: int = 0
    detail: str = ""


@dataclass
class PartitionPlan:
    src_db: Path
    out_dir: Path
    interval: str
    cutoff_ms: int
    months: list[MonthPlan] = field(default_factory=list)

    @property
    def rows_to_archive(self) -> int:
        return sum(m.rows for m in self.months)


def month_bounds(month: str) -> tuple[int, int]:
    year, mon = (int(x) for x in month.split("-"))
    start = datetime(year, mon, 1, tzinfo=UTC)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def plan_partition(src_db: Path, interval: str, keep_days: float, now_ms: int, out_dir: Path | None = None
                   ) -> PartitionPlan:
    """Which months hold rows older than now - keep_days, and how many rows each."""
    iv = normalize_interval(interval)
    if keep_days < 1:
        raise MarketDataError(f"--keep-days must be >= 1, got {keep_days}")
    out_dir = out_dir or src_db.parent / "partitions" / iv
    cutoff = int(now_ms - keep_days * DAY_MS)
    conn = connect(src_db, readonly=True)
    try:
        if not table_exists(conn, "candles"):
            raise MarketDataError(f"no candles table in {src_db}")
        rows = conn.execute(
            "SELECT strftime('%Y-%m', t / 1000, 'unixepoch') AS month, COUNT(*) FROM candles "
            "WHERE interval=? AND t<? GROUP BY month ORDER BY month", (iv, cutoff)).fetchall()
    finally:
        conn.close()
    plan = PartitionPlan(src_db, out_dir, iv, cutoff)
    for month, count in rows:
        start, end = month_bounds(month)
        part = out_dir / f"candles_{iv}_{month}.db"
        plan.months.append(MonthPlan(month, start, min(end, cutoff), int(count), part))
    return plan


def apply_partition(plan: PartitionPlan, *, delete: bool, vacuum: bool,
                    on_month: Callable[[MonthPlan], None] | None = None) -> PartitionPlan:
    """Copy each month (INSERT OR IGNORE), verify, then delete it from the hot DB if asked."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    conn = connect(plan.src_db)
    try:
        columns = [c for c in CANDLE_COLUMNS if c in table_columns(conn, "candles")]
        for month in plan.months:
            _archive_month(conn, plan.interval, month, columns, delete)
            if on_month:
                on_month(month)
        if vacuum and any(m.deleted for m in plan.months):
            conn.execute("VACUUM")
    finally:
        conn.close()
    return plan


def _archive_month(conn: sqlite3.Connection, iv: str, month: MonthPlan, columns: list[str], delete: bool) -> None:
    part = connect(month.partition)  # creates the file in WAL mode with the full schema
    try:
        ensure_candles_schema(part)
    finally:
        part.close()
    cols = ", ".join(columns)
    window = "interval=? AND t>=? AND t<?"
    args = (iv, month.start_ms, month.end_ms)
    conn.execute("ATTACH DATABASE ? AS part", (str(month.partition),))
    try:
        with conn:
            before = conn.total_changes
            conn.execute(f"INSERT OR IGNORE INTO part.candles ({cols}) SELECT {cols} FROM main.candles WHERE {window}",
                         args)
            month.copied = conn.total_changes - before
        month.verified, month.detail = _verify_month(conn, columns, window, args)
        if delete and month.verified:
            with conn:
                month.deleted = conn.execute(f"DELETE FROM main.candles WHERE {window}", args).rowcount
    finally:
        conn.execute("DETACH DATABASE part")


def _verify_month(conn, columns, window, args) -> tuple[bool, str]:
    """Every hot row of the month must be in the partition with identical values.

    updated_at is left out of the comparison: the sidecar re-stamps rows it rewrites with the same
    prices, and such a row is still safely archived.
    """
    values = [c for c in columns if c != "updated_at"]
    hot = _checksum(conn, f"SELECT {_cols('m', values)} FROM main.candles m WHERE {_qualify(window, 'm')} "
                          "ORDER BY m.symbol, m.t", args)
    same_key = "m.symbol = p.symbol AND m.interval = p.interval AND m.t = p.t"
    archived = _checksum(conn, f"SELECT {_cols('p', values)} FROM part.candles p WHERE {_qualify(window, 'p')} "
                               f"AND EXISTS (SELECT 1 FROM main.candles m WHERE {same_key}) "
                               "ORDER BY p.symbol, p.t", args)
    if hot != archived:
        return False, f"partition differs from hot DB ({hot[0]} hot rows, {archived[0]} matching archived rows)"
    return True, f"{hot[0]} rows, sha256 {hot[1][:16]}"


def _cols(alias: str, columns: list[str]) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns)


def _qualify(window: str, alias: str) -> str:
    return " AND ".join(f"{alias}.{part.strip()}" for part in window.split(" AND "))


def _checksum(conn, sql: str, args) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    for row in conn.execute(sql, args):
        digest.update(repr(row).encode())
        count += 1
    return count, digest.hexdigest()
