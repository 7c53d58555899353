"""Runtime logging into the trading DB's `runtime_logs` table (and stderr for journald).

The monitor reads engine health from the latest heartbeat row, so the heartbeat line format is a
contract (spec/reference/runtime.md §1 item 13): build it only with `format_heartbeat` and read it
only with `parse_heartbeat`. Rows are batched by a background thread so a slow disk never stalls
the trading loop; a failed write keeps the rows for the next attempt.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any, TextIO

from live.trading_db import TradingDbError, iso_utc, now_ms, open_trading_db

HEARTBEAT_PREFIX = "🫀 engine ok."
HEARTBEAT_KEYS = ("loops", "errors", "symbols", "open_pos", "loop", "ws_connected", "kill", "kill_reason",
                  "strategy_mode", "config_id", "version")
_INT_KEYS = frozenset({"loops", "errors", "symbols", "open_pos", "ws_restarts", "last_bar_t", "last_sub_t"})
_BOOL_KEYS = frozenset({"ws_connected", "ws_thread_alive"})
_PAIR = re.compile(r"(\w+)=(\S+)")


def _fmt_value(key: str, value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "True" if value else "False"
    if key == "loop":
        return f"{float(value):.2f}s"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = re.sub(r"\s+", "_", str(value).strip())
    return text or "none"


def format_heartbeat(**fields: Any) -> str:
    """`🫀 engine ok. loops=… errors=… … version=…`; the contract keys first, extras after."""
    missing = [k for k in HEARTBEAT_KEYS if k not in fields]
    if missing:
        raise ValueError(f"format_heartbeat: missing field(s) {missing}")
    keys = list(HEARTBEAT_KEYS) + [k for k in fields if k not in HEARTBEAT_KEYS]
    for key in keys:
        if not re.fullmatch(r"\w+", key):
            raise ValueError(f"format_heartbeat: bad key {key!r}")
    return HEARTBEAT_PREFIX + " " + " ".join(f"{k}={_fmt_value(k, fields[k])}" for k in keys)


def _parse_value(key: str, text: str) -> Any:
    if text == "none":
        return None
    if key in _INT_KEYS:
        return int(text)
    if key == "loop":
        return float(text.removesuffix("s"))
    if key in _BOOL_KEYS:
        return text in ("True", "true", "1")
    return text


def parse_heartbeat(line: str) -> dict[str, Any] | None:
    """The fields of a heartbeat line (anywhere in `line`), or None if it is not one."""
    at = line.find(HEARTBEAT_PREFIX)
    if at < 0:
        return None
    out: dict[str, Any] = {}
    for key, text in _PAIR.findall(line[at + len(HEARTBEAT_PREFIX):]):
        try:
            out[key] = _parse_value(key, text)
        except ValueError:
            out[key] = text
    return out


class RuntimeLogger:
    """Thread-safe logger: every line goes to stderr at once and to `runtime_logs` in batches."""

    MAX_BUFFER = 20_000

    def __init__(self, db_path: str | os.PathLike, mode: str, stream: str = "engine",
                 flush_interval_s: float = 1.0, echo: TextIO | None = sys.stderr) -> None:
        self.db_path = Path(db_path)
        self.mode = mode
        self.stream = stream
        self.echo = echo
        self.dropped = 0
        self._pid = os.getpid()
        self._buf: deque[tuple] = deque()
        self._lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._stop = threading.Event()
        self._interval = flush_interval_s
        self._thread = threading.Thread(target=self._run, name="runtime-log", daemon=True)
        self._thread.start()

    def log(self, level: str, message: str) -> None:
        ts = now_ms()
        row = (ts, iso_utc(ts), self._pid, self.mode, self.stream, level.upper(), str(message))
        with self._lock:
            if len(self._buf) >= self.MAX_BUFFER:
                self._buf.popleft()
                self.dropped += 1
            self._buf.append(row)
        if self.echo is not None:
            try:
                print(f"{row[1]} {row[5]} {row[6]}", file=self.echo, flush=True)
            except (OSError, ValueError):
                pass

    def info(self, message: str) -> None:
        self.log("INFO", message)

    def warning(self, message: str) -> None:
        self.log("WARNING", message)

    def error(self, message: str) -> None:
        self.log("ERROR", message)

    def heartbeat(self, **fields: Any) -> str:
        line = format_heartbeat(**fields)
        self.log("INFO", line)
        return line

    def flush(self) -> bool:
        """Write buffered rows; on a DB error they stay buffered (returns False)."""
        with self._db_lock:
            with self._lock:
                rows = list(self._buf)
            if not rows:
                return True
            try:
                if self._conn is None:
                    self._conn = open_trading_db(self.db_path, check_same_thread=False)
                    self._conn.execute("PRAGMA synchronous=NORMAL")  # logs need not cost an fsync each
                self._conn.executemany(
                    "INSERT INTO runtime_logs (ts_ms, ts, pid, mode, stream, level, message) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            except (sqlite3.Error, TradingDbError) as exc:
                if self.echo is not None:
                    print(f"runtime_log: cannot write {self.db_path}: {exc}", file=self.echo, flush=True)
                return False
            with self._lock:
                for _ in range(min(len(rows), len(self._buf))):
                    self._buf.popleft()
            return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
        with self._db_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> RuntimeLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RuntimeLogHandler(logging.Handler):
    """Routes `logging` records (third-party libraries included) into a RuntimeLogger."""

    def __init__(self, logger: RuntimeLogger) -> None:
        super().__init__()
        self.runtime_logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.runtime_logger.log(record.levelname, self.format(record))
        except Exception:  # a logging failure must never take the trader down
            self.handleError(record)
