"""`trader market-data`: keeps the candle DBs complete and fresh, and optionally samples BBO.

This replaces the Rust WS sidecar with what production actually relied on (runtime.md §9): REST
`candleSnapshot` polling shortly after every bar close, a full-horizon backfill whenever a DB does
not cover its horizon, horizon pruning (except the append-only intervals, AQC-203), and one
reconnecting WebSocket for mids/BBO. The REST close-poll runs even when WS candles are on, so a
dropped socket can never leave a hole in a candle DB. Only this process writes the candle DBs.

Everything is configured by the sidecar's env vars (`MarketDataSettings.from_env`), so the same
systemd env file keeps working; the CLI options are an overlay on those names.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from live import sdnotify
from live.clock import Clock, SystemClock
from live.env import EnvError, env_bool, env_float, env_int, env_path
from live.market_ws import MarketWs, WsConfig, ws_url
from marketdata.candles import write_candles
from marketdata.hl_candles import InfoClient, Pacer, fetch_candles, parse_candles
from marketdata.intervals import MarketDataError, interval_ms, normalize_interval
from marketdata.sqlite_store import connect, ensure_bbo_schema, ensure_candles_schema

DEFAULT_BASE_URL = "https://api.hyperliquid.xyz"
HORIZON_DEFAULT_DAYS = {"1m": 1, "3m": 7, "5m": 7, "15m": 30, "30m": 30, "1h": 120}
UNKNOWN_HORIZON_MS = 24 * 3_600_000
HOUR_MS, DAY_MS = 3_600_000, 86_400_000
PRUNE_EVERY_S = 60.0
FULL_BACKFILL_RETRY_S = 300.0  # a key still incomplete after a full backfill waits this long to retry
TAIL_MISS_LIMIT = 3  # polls after a close before accepting that the exchange has no bar for it
MAX_LOOP_SLEEP_S = 1.0


# ============================================================================ settings

@dataclass(frozen=True)
class MarketDataSettings:
    symbols: tuple[str, ...]
    intervals: tuple[str, ...]
    candles_db_dir: Path
    base_url: str = DEFAULT_BASE_URL
    candle_limit: int = 2000
    horizon_days: Mapping[str, float] = field(default_factory=dict)
    prune_disable: frozenset[str] = frozenset({"3m", "5m"})
    verify_s: float = 10.0
    close_delay_ms: int = 2000
    rest_chunk_bars: int = 1500
    rest_min_gap_ms: int = 500
    rest_timeout_s: float = 10.0
    ws_enable: bool = True
    ws_candles: bool = False
    ws_bbo: bool = False
    ws_candle_persist_s: float = 60.0
    ws_stale_s: float = 30.0
    ws_silent_reconnect_s: float = 90.0
    ws_sub_send_ms: int = 10
    ws_max_queue: int = 2000
    mids_from_bbo: bool = False
    mids_from_bbo_fallback_age_s: float = 5.0
    bbo_snapshots: bool = False
    bbo_db_path: Path | None = None
    bbo_sample_ms: int = 1000
    bbo_max_queue: int = 20000
    bbo_retention_hours: float = 24.0
    bbo_sweep_s: float = 600.0
    health_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MarketDataSettings:
        """Parse and validate every AI_QUANT_* knob; EnvError names the first bad variable."""
        db_dir = env_path(env, "AI_QUANT_CANDLES_DB_DIR", "candles_dbs")
        intervals = _interval_list(env)
        ws_bbo = env_bool(env, "AI_QUANT_WS_ENABLE_BBO", False)
        snapshots = env_bool(env, "AI_QUANT_BBO_SNAPSHOTS_ENABLE", False)
        if snapshots and not ws_bbo:
            raise EnvError("AI_QUANT_BBO_SNAPSHOTS_ENABLE=1 needs AI_QUANT_WS_ENABLE_BBO=1 (snapshots sample BBO frames)")
        ws_enable = env_bool(env, "AI_QUANT_WS_ENABLE", True)
        if (snapshots or ws_bbo) and not ws_enable:
            raise EnvError("AI_QUANT_WS_ENABLE=0 contradicts AI_QUANT_WS_ENABLE_BBO=1 (BBO comes from the WebSocket)")
        return cls(
            symbols=_symbol_list(env),
            intervals=intervals,
            candles_db_dir=db_dir,
            base_url=_base_url(env),
            candle_limit=env_int(env, "AI_QUANT_SIDECAR_CANDLE_LIMIT", 2000, lo=1, hi=100_000),
            horizon_days={iv: _horizon_days(env, iv) for iv in intervals},
            prune_disable=_prune_disable(env),
            verify_s=env_float(env, "AI_QUANT_CANDLE_VERIFY_SECS", 10.0, lo=0.05, hi=3600),
            close_delay_ms=env_int(env, "AI_QUANT_CANDLE_CLOSE_DELAY_MS", 2000, lo=0, hi=600_000),
            rest_chunk_bars=env_int(env, "AI_QUANT_CANDLE_REST_CHUNK_BARS", 1500, lo=2, hi=5000),
            rest_min_gap_ms=env_int(env, "AI_QUANT_CANDLE_REST_MIN_GAP_MS", 500, lo=0, hi=60_000),
            rest_timeout_s=env_float(env, "AI_QUANT_CANDLE_REST_TIMEOUT_S", 10.0, lo=0.1, hi=300),
            ws_enable=ws_enable,
            ws_candles=env_bool(env, "AI_QUANT_WS_ENABLE_CANDLE", False),
            ws_bbo=ws_bbo,
            ws_candle_persist_s=env_float(env, "HL_WS_CANDLE_PERSIST_SECS", 60.0, lo=0, hi=3600),
            ws_stale_s=env_float(env, "AI_QUANT_WS_STALE_SECS", 30.0, lo=0.1, hi=3600),
            ws_silent_reconnect_s=env_float(env, "AI_QUANT_WS_SILENT_RECONNECT_SECS", 90.0, lo=0.5, hi=3600),
            ws_sub_send_ms=env_int(env, "HL_WS_SUB_SEND_MS", 10, lo=0, hi=10_000),
            ws_max_queue=env_int(env, "HL_WS_MAX_INCOMING_QUEUE", 2000, lo=16, hi=1_000_000),
            mids_from_bbo=env_bool(env, "AI_QUANT_MIDS_FROM_BBO", False),
            mids_from_bbo_fallback_age_s=env_float(env, "AI_QUANT_MIDS_FROM_BBO_FALLBACK_AGE_S", 5.0, lo=0, hi=3600),
            bbo_snapshots=snapshots,
            bbo_db_path=env_path(env, "AI_QUANT_BBO_SNAPSHOTS_DB_PATH", db_dir / "bbo_snapshots.db"),
            bbo_sample_ms=env_int(env, "AI_QUANT_BBO_SNAPSHOTS_SAMPLE_MS", 1000, lo=1, hi=3_600_000),
            bbo_max_queue=env_int(env, "AI_QUANT_BBO_SNAPSHOTS_MAX_QUEUE", 20000, lo=1, hi=10_000_000),
            bbo_retention_hours=env_float(env, "AI_QUANT_BBO_SNAPSHOTS_RETENTION_HOURS", 24.0, lo=0.001, hi=24 * 3650),
            bbo_sweep_s=max(30.0, env_float(env, "AI_QUANT_BBO_SNAPSHOTS_RETENTION_SWEEP_SECS", 600.0, lo=0)),
            health_s=env_float(env, "AI_QUANT_MARKET_DATA_HEALTH_SECS", 60.0, lo=1, hi=86_400),
        )

    def horizon_ms(self, interval: str) -> int:
        """max(horizon days, candle_limit bars): the window every DB must cover."""
        days = self.horizon_days.get(interval)
        base = UNKNOWN_HORIZON_MS if days is None else int(days * DAY_MS)
        return max(base, self.candle_limit * interval_ms(interval))

    def buffer_ms(self, interval: str) -> int:
        return min(max(self.horizon_ms(interval) // 10, 6 * HOUR_MS), 7 * DAY_MS)

    def db_path(self, interval: str) -> Path:
        return self.candles_db_dir / f"candles_{interval}.db"


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value.strip() if value is not None and value.strip() else None


def _symbol_list(env: Mapping[str, str]) -> tuple[str, ...]:
    name = "AI_QUANT_SIDECAR_SYMBOLS" if _text(env, "AI_QUANT_SIDECAR_SYMBOLS") else "AI_QUANT_SYMBOLS"
    raw = _text(env, name)
    if raw is None:
        raise EnvError("AI_QUANT_SIDECAR_SYMBOLS is empty: set it (e.g. BTC,ETH,SOL) or pass --symbols")
    out: list[str] = []
    for part in raw.split(","):
        sym = part.strip()
        if not sym:
            continue
        if not sym.replace("-", "").replace("_", "").isalnum():
            raise EnvError(f"{name}: {sym!r} is not a symbol name")
        if sym not in out:
            out.append(sym)
    return tuple(out)


def _interval_list(env: Mapping[str, str]) -> tuple[str, ...]:
    name = "AI_QUANT_SIDECAR_INTERVALS" if _text(env, "AI_QUANT_SIDECAR_INTERVALS") else "AI_QUANT_INTERVAL"
    raw = _text(env, name) or "1h"
    out: list[str] = []
    for part in raw.split(","):
        if not part.strip():
            continue
        try:
            iv = normalize_interval(part)
        except MarketDataError as exc:
            raise EnvError(f"{name}: {exc}") from None
        if iv not in out:
            out.append(iv)
    return tuple(out)


def _prune_disable(env: Mapping[str, str]) -> frozenset[str]:
    """Default "3m,5m"; an explicitly empty value re-enables pruning for every interval."""
    name = "AI_QUANT_CANDLE_PRUNE_DISABLE_INTERVALS"
    raw = env.get(name)
    if raw is None:
        return frozenset({"3m", "5m"})
    try:
        return frozenset(normalize_interval(p) for p in raw.split(",") if p.strip())
    except MarketDataError as exc:
        raise EnvError(f"{name}: {exc}") from None


def _horizon_days(env: Mapping[str, str], iv: str) -> float | None:
    for name in (f"AI_QUANT_CANDLE_HORIZON_{iv.upper()}_D", f"AI_QUANT_CANDLE_HORIZON_{iv}_D"):
        if _text(env, name) is not None:
            return env_float(env, name, 0.0, lo=0.001, hi=3650)
    return HORIZON_DEFAULT_DAYS.get(iv)


def _base_url(env: Mapping[str, str]) -> str:
    url = (_text(env, "AI_QUANT_HL_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise EnvError(f"AI_QUANT_HL_BASE_URL={url!r} must start with http:// or https://")
    return url


# ============================================================================ candles

def last_closed_bar(now_ms: int, step_ms: int, delay_ms: int = 0) -> int:
    """Open time of the newest bar whose close is at least delay_ms in the past."""
    return ((now_ms - delay_ms) // step_ms) * step_ms - step_ms


@dataclass(frozen=True)
class Coverage:
    min_t: int | None
    max_t: int | None
    count: int


def coverage(conn: sqlite3.Connection, symbol: str, interval: str, since_t: int) -> Coverage:
    row = conn.execute("SELECT MIN(t), MAX(t), COUNT(*) FROM candles WHERE symbol=? AND interval=? AND t>=?",
                       (symbol, interval, since_t)).fetchone()
    return Coverage(row[0], row[1], int(row[2]))


def is_complete(cov: Coverage, want_start: int, last_closed: int, step: int) -> bool:
    """Starts within 2 bars of the horizon start and holds >= 98% of its bars."""
    if cov.count == 0 or cov.min_t is None:
        return False
    expected = max((last_closed - want_start) // step + 1, 1)
    return cov.min_t <= want_start + 2 * step and cov.count >= 0.98 * expected


@dataclass
class KeyState:
    """What the poller knows about one (symbol, interval) beyond what the DB says."""

    symbol: str
    interval: str
    final_t: int | None = None  # newest bar fetched at least close_delay after its close
    first_available_t: int | None = None  # earliest bar the exchange had for the horizon
    full_at: float | None = None
    tail_misses: int = 0
    ready: bool = False
    last_error: str = ""


@dataclass
class CandleStats:
    requests: int = 0
    rows: int = 0
    errors: int = 0
    full_backfills: int = 0
    tail_polls: int = 0
    ws_rows: int = 0
    pruned: int = 0


class CandleKeeper:
    """REST backfill + close polling + pruning for every (symbol, interval); single DB writer."""

    def __init__(self, settings: MarketDataSettings, client: InfoClient, clock: Clock, console: Console) -> None:
        self.s, self.client, self.clock, self.console = settings, client, clock, console
        self.pacer = Pacer(settings.rest_min_gap_ms / 1000.0)
        self.stats = CandleStats()
        by_length = sorted(settings.intervals, key=interval_ms)  # short bars close often: poll them first
        self.keys = {(sym, iv): KeyState(sym, iv) for iv in by_length for sym in settings.symbols}
        self._progress = ""
        for iv in settings.intervals:  # fail at start, not at the first poll, on an unwritable dir
            connect(settings.db_path(iv)).close()
        self._conns: dict[str, sqlite3.Connection] = {}
        self._ws_last: dict[tuple[str, str], tuple[int, float]] = {}

    def conn(self, interval: str) -> sqlite3.Connection:
        """Opened lazily so it belongs to the thread that runs the loop (sqlite3's rule)."""
        conn = self._conns.get(interval)
        if conn is None:
            conn = self._conns[interval] = connect(self.s.db_path(interval))
            ensure_candles_schema(conn)
        return conn

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    # ---- verify -----------------------------------------------------------------------
    def verify_all(self, between_keys: Callable[[], object] | None = None) -> None:
        """One pass over every key; between_keys runs after each (the watchdog ping during long backfills)."""
        now = self.clock.now_ms()
        for i, st in enumerate(self.keys.values(), 1):
            self._progress = f"[{i}/{len(self.keys)}] "
            if between_keys is not None:
                between_keys()
            try:
                self.verify(st, now)
                st.last_error = ""
            except (MarketDataError, sqlite3.Error, OSError) as exc:
                self.stats.errors += 1
                st.last_error = str(exc)
                self.console.print(f"candles {st.symbol} {st.interval}: {exc}", highlight=False, soft_wrap=True)

    def verify(self, st: KeyState, now_ms: int) -> None:
        """Full backfill when the horizon is not covered, else poll the newest closed bar."""
        step = interval_ms(st.interval)
        last_closed = last_closed_bar(now_ms, step, self.s.close_delay_ms)
        want_start = self._want_start(st, now_ms, step)
        cov = coverage(self.conn(st.interval), st.symbol, st.interval, want_start)
        st.ready = is_complete(cov, want_start, last_closed, step)
        mono = self.clock.monotonic()
        if not st.ready and (st.full_at is None or mono - st.full_at >= FULL_BACKFILL_RETRY_S):
            st.full_at = mono
            self._full(st, now_ms, last_closed, step)
            want_start = self._want_start(st, now_ms, step)
            cov = coverage(self.conn(st.interval), st.symbol, st.interval, want_start)
            st.ready = is_complete(cov, want_start, last_closed, step)
        elif st.final_t is None or st.final_t < last_closed:
            self._tail(st, cov, now_ms, last_closed, step)

    def _want_start(self, st: KeyState, now_ms: int, step: int) -> int:
        start = -(-(now_ms - self.s.horizon_ms(st.interval)) // step) * step
        return max(start, st.first_available_t) if st.first_available_t is not None else start

    def _fetch(self, st: KeyState, start_ms: int, end_ms: int):
        result = fetch_candles(self.client, st.symbol, st.interval, start_ms, end_ms,
                               chunk_bars=self.s.rest_chunk_bars, pacer=self.pacer)
        self.stats.requests += result.requests
        if result.rows:
            write_candles(self.s.db_path(st.interval), result.rows, st.interval)
            self.stats.rows += len(result.rows)
        return result

    def _full(self, st: KeyState, now_ms: int, last_closed: int, step: int) -> None:
        started = time.monotonic()
        result = self._fetch(st, now_ms - self.s.horizon_ms(st.interval), now_ms)
        self.stats.full_backfills += 1
        if result.rows:
            st.first_available_t = result.first_t
            self._mark_final(st, result.last_t, last_closed)
        self.console.print(f"{self._progress}candles {st.symbol} {st.interval}: backfilled {len(result.rows)} bars "
                           f"({result.requests} requests, {time.monotonic() - started:.1f}s)", highlight=False)

    def _tail(self, st: KeyState, cov: Coverage, now_ms: int, last_closed: int, step: int) -> None:
        newest = cov.max_t if cov.max_t is not None else last_closed
        result = self._fetch(st, min(newest, last_closed) - 2 * step, now_ms)
        self.stats.tail_polls += 1
        self._mark_final(st, result.last_t, last_closed)

    def _mark_final(self, st: KeyState, fetched_last_t: int | None, last_closed: int) -> None:
        if fetched_last_t is not None and fetched_last_t >= last_closed:
            st.final_t, st.tail_misses = last_closed, 0
            return
        st.tail_misses += 1
        if st.tail_misses >= TAIL_MISS_LIMIT:
            self.console.print(f"candles {st.symbol} {st.interval}: exchange has no bar at {_iso(last_closed)} "
                               f"after {st.tail_misses} polls; moving on", highlight=False)
            st.final_t, st.tail_misses = last_closed, 0

    # ---- WS candles -------------------------------------------------------------------
    def persist_ws(self, items: list[dict]) -> int:
        """Write WS candle frames on a new bar or every ws_candle_persist_s for the same bar."""
        mono, written = self.clock.monotonic(), 0
        for item in items:
            key = (item.get("s"), item.get("i"))
            if key not in self.keys:
                continue
            rows, _ = parse_candles(item, key[0], key[1])
            final_t = self.keys[key].final_t
            if not rows or (final_t is not None and rows[0]["t"] <= final_t):
                continue  # a late frame must not overwrite the REST close-poll's final bar
            last = self._ws_last.get(key)
            if last is not None and last[0] == rows[0]["t"] and mono - last[1] < self.s.ws_candle_persist_s:
                continue
            write_candles(self.s.db_path(key[1]), rows, key[1])
            self._ws_last[key] = (rows[0]["t"], mono)
            written += 1
        self.stats.ws_rows += written
        return written

    # ---- pruning ----------------------------------------------------------------------
    def prune(self) -> dict[str, int]:
        """Delete bars older than horizon + 2 buffers, except append-only intervals."""
        now, deleted = self.clock.now_ms(), {}
        for iv in self.s.intervals:
            if iv in self.s.prune_disable:
                continue
            conn = self.conn(iv)
            cutoff = now - (self.s.horizon_ms(iv) + 2 * self.s.buffer_ms(iv))
            with conn:
                deleted[iv] = conn.execute("DELETE FROM candles WHERE interval=? AND t<?", (iv, cutoff)).rowcount
        self.stats.pruned += sum(deleted.values())
        return deleted

    def ready_count(self) -> int:
        return sum(st.ready for st in self.keys.values())


# ============================================================================ BBO snapshots

class BboSampler:
    """Per-symbol throttle plus a bounded queue, fed from the WS thread, drained by the writer."""

    def __init__(self, sample_ms: int, max_queue: int, clock: Clock) -> None:
        self.sample_s, self.max_queue, self.clock = sample_ms / 1000.0, max_queue, clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._queue: deque[tuple] = deque()
        self.sampled = 0
        self.dropped = 0

    def offer(self, symbol: str, bid: float | None, ask: float | None, exch_time: int | None = None) -> bool:
        mono = self.clock.monotonic()
        with self._lock:
            last = self._last.get(symbol)
            if last is not None and mono - last < self.sample_s:
                return False
            self._last[symbol] = mono
            if len(self._queue) >= self.max_queue:
                self.dropped += 1
                return False
            mid = (bid + ask) / 2.0 if bid is not None and ask is not None else None
            self._queue.append((symbol, self.clock.now_ms(), bid, ask, mid, _iso_now()))
            self.sampled += 1
            return True

    def drain(self) -> list[tuple]:
        with self._lock:
            rows, self._queue = list(self._queue), deque()
        return rows

    def queued(self) -> int:
        with self._lock:
            return len(self._queue)


class BboStore:
    """bbo_snapshots(symbol, ts_ms, bid, ask, mid, updated_at) with time-based retention."""

    def __init__(self, path: Path) -> None:
        self.path = path
        connect(path, what="BBO snapshots DB").close()
        self._conn: sqlite3.Connection | None = None
        self.written = 0
        self.swept = 0

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path, what="BBO snapshots DB")
            ensure_bbo_schema(self._conn)
        return self._conn

    def write(self, rows: list[tuple]) -> int:
        if rows:
            with self.conn:
                self.conn.executemany("INSERT OR REPLACE INTO bbo_snapshots (symbol, ts_ms, bid, ask, mid, updated_at) "
                                      "VALUES (?,?,?,?,?,?)", rows)
            self.written += len(rows)
        return len(rows)

    def sweep(self, cutoff_ms: int) -> int:
        with self.conn:
            n = self.conn.execute("DELETE FROM bbo_snapshots WHERE ts_ms<?", (int(cutoff_ms),)).rowcount
        self.swept += n
        return n

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# ============================================================================ service

class MarketDataService:
    """The long-running loop: candles, WS, BBO snapshots, health lines and systemd notify."""

    def __init__(self, settings: MarketDataSettings, *, clock: Clock | None = None,
                 console: Console | None = None) -> None:
        self.s = settings
        self.clock = clock or SystemClock()
        self.console = console or Console(stderr=True)
        self._stop = threading.Event()
        self.client = InfoClient(settings.base_url, settings.rest_timeout_s)
        self.candles = CandleKeeper(settings, self.client, self.clock, self.console)
        self.sampler = BboSampler(settings.bbo_sample_ms, settings.bbo_max_queue, self.clock) \
            if settings.bbo_snapshots else None
        self.bbo_store = BboStore(settings.bbo_db_path) if settings.bbo_snapshots else None
        self._ws_candles: deque[dict] = deque(maxlen=100_000)
        self.ws = self._make_ws() if settings.ws_enable else None
        self._due: dict[str, float] = {}
        self._closed_seen: dict[str, int] = {}
        self._ws_seen = (0, 0)  # (connects, disconnects) already reported
        self.watchdog = sdnotify.WatchdogPinger()

    def _make_ws(self) -> MarketWs:
        s = self.s
        cfg = WsConfig(url=ws_url(s.base_url), symbols=s.symbols, bbo=s.ws_bbo,
                       candle_intervals=s.intervals if s.ws_candles else (), stale_s=s.ws_stale_s,
                       silent_reconnect_s=s.ws_silent_reconnect_s, sub_send_ms=s.ws_sub_send_ms,
                       max_queue=s.ws_max_queue, mids_from_bbo=s.mids_from_bbo,
                       mids_from_bbo_fallback_age_s=s.mids_from_bbo_fallback_age_s)
        on_bbo = self.sampler.offer if self.sampler is not None else None
        on_candle = self._ws_candles.append if s.ws_candles else None
        return MarketWs(cfg, on_bbo=on_bbo, on_candle=on_candle)

    # ---- lifecycle --------------------------------------------------------------------
    def stop(self) -> None:
        """Safe from a signal handler: the loop notices within one second."""
        self._stop.set()

    def run(self, max_runtime_s: float | None = None) -> int:
        started = time.monotonic()
        self.console.print(self._banner(), highlight=False, soft_wrap=True)
        try:
            if self.ws is not None:
                self.ws.start()
            # READY before the first pass: a cold backfill of many keys can outlast systemd's start timeout
            sdnotify.ready("backfilling candle DBs")
            self.tick(force_verify=True)
            self.console.print(f"market-data running: {self._status()}", highlight=False, soft_wrap=True)
            sdnotify.status(self._status())
            while not self._stop.is_set():
                if max_runtime_s is not None and time.monotonic() - started >= max_runtime_s:
                    break
                self._stop.wait(self._sleep_s())
                if not self._stop.is_set():
                    self.tick()
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        sdnotify.stopping()
        if self.ws is not None:
            self.ws.stop()
        self._flush_bbo()
        if self.bbo_store is not None:
            self.bbo_store.close()
        self.candles.close()
        self.client.close()
        self.console.print(f"market-data stopped: {self._status()}", highlight=False, soft_wrap=True)

    # ---- one loop iteration -------------------------------------------------------------
    def tick(self, force_verify: bool = False) -> None:
        mono = self.clock.monotonic()
        if self._ws_candles:  # before the REST poll, so queued frames never land after a final bar
            items = [self._ws_candles.popleft() for _ in range(len(self._ws_candles))]
            self._guarded("WS candles", lambda: self.candles.persist_ws(items))
        if force_verify or self._due_now("verify", self.s.verify_s, mono) or self._new_close():
            self.candles.verify_all(between_keys=self.watchdog.maybe_ping)
            self._due["verify"] = self.clock.monotonic() + self.s.verify_s
        self._guarded("BBO snapshots", self._flush_bbo)
        if self._due_now("prune", PRUNE_EVERY_S, mono):
            self._guarded("prune", self.candles.prune)
        if self.bbo_store is not None and self._due_now("bbo_sweep", self.s.bbo_sweep_s, mono):
            self._guarded("BBO retention sweep", self.sweep_bbo)
        self._report_ws_events()
        if self._due_now("health", self.s.health_s, mono, first_now=False):
            self.console.print(f"market-data health: {self._status()}", highlight=False, soft_wrap=True)
            sdnotify.status(self._status())
        self.watchdog.maybe_ping()

    def _report_ws_events(self) -> None:
        """One line per socket drop and per reconnect, so `grep -i disconnect` finds them in journald."""
        if self.ws is None:
            return
        h = self.ws.health()
        seen = self._ws_seen
        if h["disconnects"] > seen[1]:
            self.console.print(f"ws disconnect #{h['disconnects']}: {h['last_error'] or 'closed'}", highlight=False,
                               soft_wrap=True)
        if h["connects"] > seen[0] and h["connects"] > 1:
            self.console.print(f"ws reconnected (connect #{h['connects']}, {h['subscriptions']} subscriptions re-sent)",
                               highlight=False)
        self._ws_seen = (h["connects"], h["disconnects"])

    def _guarded(self, what: str, fn: Callable[[], object]) -> None:
        """A locked or full disk must not kill the loop: report one line and retry next tick."""
        try:
            fn()
        except (MarketDataError, sqlite3.Error, OSError) as exc:
            self.candles.stats.errors += 1
            self.console.print(f"{what}: {exc}", highlight=False, soft_wrap=True)

    def sweep_bbo(self) -> int:
        cutoff = self.clock.now_ms() - int(self.s.bbo_retention_hours * HOUR_MS)
        return self.bbo_store.sweep(cutoff) if self.bbo_store is not None else 0

    def _flush_bbo(self) -> None:
        if self.sampler is not None and self.bbo_store is not None:
            self.bbo_store.write(self.sampler.drain())

    def _due_now(self, name: str, every_s: float, mono: float, first_now: bool = True) -> bool:
        due = self._due.get(name)
        if due is None:
            self._due[name] = mono + every_s
            return first_now
        if mono >= due:
            self._due[name] = mono + every_s
            return True
        return False

    def _new_close(self) -> bool:
        """True once per interval each time a bar close (plus the delay) has passed."""
        now, changed = self.clock.now_ms(), False
        for iv in self.s.intervals:
            closed = last_closed_bar(now, interval_ms(iv), self.s.close_delay_ms)
            if self._closed_seen.get(iv) != closed:
                changed = changed or iv in self._closed_seen
                self._closed_seen[iv] = closed
        return changed

    def _sleep_s(self) -> float:
        now = self.clock.now_ms()
        waits = [MAX_LOOP_SLEEP_S, max(self._due.get("verify", 0.0) - self.clock.monotonic(), 0.0)]
        for iv in self.s.intervals:
            step = interval_ms(iv)
            next_poll = last_closed_bar(now, step, self.s.close_delay_ms) + 2 * step + self.s.close_delay_ms
            waits.append(max(next_poll - now, 0) / 1000.0)
        return max(min(waits), 0.01)

    # ---- reporting ----------------------------------------------------------------------
    def _banner(self) -> str:
        s = self.s
        ws = "off" if not s.ws_enable else "+".join(
            ["allMids"] + (["bbo"] if s.ws_bbo else []) + (["candle"] if s.ws_candles else []))
        keep = ",".join(sorted(s.prune_disable)) or "none"
        return (f"market-data: {len(s.symbols)} symbols x {','.join(s.intervals)} -> {s.candles_db_dir} "
                f"from {s.base_url}; ws {ws}; REST poll {s.close_delay_ms} ms after each close; "
                f"append-only: {keep}" + (f"; BBO snapshots -> {s.bbo_db_path}" if s.bbo_snapshots else ""))

    def _status(self) -> str:
        st = self.candles.stats
        parts = [f"candles ready {self.candles.ready_count()}/{len(self.candles.keys)}",
                 f"rest requests={st.requests} rows={st.rows} errors={st.errors} pruned={st.pruned}"]
        if self.ws is not None:
            h = self.ws.health()
            stale = ",".join(h["stale"][:4]) + ("..." if len(h["stale"]) > 4 else "") or "-"
            parts.append(f"ws connected={h['connected']} reconnects={h['reconnects']} "
                         f"mids_age={h['mids_age_s']}s stale={stale}")
        if self.sampler is not None and self.bbo_store is not None:
            parts.append(f"bbo written={self.bbo_store.written} queued={self.sampler.queued()} "
                         f"dropped={self.sampler.dropped} swept={self.bbo_store.swept}")
        return "; ".join(parts)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
