"""The trading daemon: the canonical engine on closed bars, behind the RiskManager.

Each new closed bar of the entry interval (read from the candle DBs the market-data service keeps
fresh, after a grace window) goes through `cpu_replay.engine.Engine.step` — the code path of
`backtester replay` — and the fills it produces pass the RiskManager before they are recorded by
the broker (paper: the trading DB; dry_live: audit events only). A fill the RiskManager refuses is
undone by restoring the engine from its pre-bar snapshot and re-running the bar with that
symbol's entries blocked (or, for a refused exit, with no orders at all on that bar), so the
engine's state always equals what was actually done.

Risk limits run on the bar clock (the bar's close time): rate limits count orders per minute of
market time, and the daily loss stop resets at the UTC midnight of the bars, which makes a
catch-up over old bars behave exactly like running through them live.
"""

from __future__ import annotations

import signal
import time
from dataclasses import replace

import numpy as np

from cpu_replay.engine import Engine
from live import checkpoint
from live.clock import ManualClock, SystemClock
from live.config_watch import ConfigWatcher
from live.env import Settings
from live.lock import InstanceLock
from live.paper_broker import DryLiveBroker, PaperBroker
from live.risk import HALT_ALL, RiskManager
from live.runtime_log import RuntimeLogger
from live.sdnotify import WatchdogPinger, ready, status, stopping
from live.strategy_modes import ModeSwitcher
from live.trading_db import audit, open_trading_db, transaction
from marketdata.candles import load_market_data
from marketdata.funding import funding_matrix
from marketdata.intervals import MarketDataError, interval_ms, normalize_interval
from strategy.config import load_config
from strategy.layout import (
    A_EQUITY,
    ACTION_NAMES,
    FL_ACTION,
    FL_NOTIONAL,
    FL_SIDE,
    FL_SYM,
    POS_LAST_CLOSE,
    POS_SIDE,
    POS_SIZE,
)
from strategy.params import P_ENABLE_PYRAMIDING, P_MAX_OPEN_POSITIONS

VERSION = "0.1.0"
CHECKPOINT_EVERY_BARS = 500


class DaemonError(RuntimeError):
    """A startup problem reported as one line (exit code 1)."""


class TraderDaemon:
    def __init__(self, settings: Settings, *, until_caught_up: bool = False, wall=None) -> None:
        self.settings = settings
        self.until_caught_up = until_caught_up
        self.wall = wall or SystemClock()
        self.stop_requested = False
        self.loops = 0
        self.errors = 0

    # ------------------------------------------------------------------ startup
    def _load_config(self, path):
        return load_config(path, mode=self.strategy_mode, live=not self.settings.is_paper)

    def _start(self) -> None:
        s = self.settings
        if s.mode == "live":
            raise DaemonError("AI_QUANT_MODE=live needs the Hyperliquid broker, which is not available in "
                              "this version yet; use paper or dry_live")
        if not s.strategy_yaml.exists():
            raise DaemonError(f"strategy YAML not found: {s.strategy_yaml} (AI_QUANT_STRATEGY_YAML)")
        self.lock = InstanceLock(s.lock_path).acquire()
        self.conn = open_trading_db(s.db_path)
        self.log = RuntimeLogger(s.db_path, s.mode)
        self.strategy_mode = s.strategy_mode
        self.watcher = ConfigWatcher(s.strategy_yaml, self._load_config)
        self.cfg = self.watcher.config
        self.interval = normalize_interval(s.interval or self.cfg.interval)
        self.iv_ms = interval_ms(self.interval)
        self.candles_db = str(s.candles_db_dir / f"candles_{self.interval}.db")
        self.symbols = self._symbols()
        self.bar_clock = None
        self.risk = None
        self._restore_engine()
        self.broker = PaperBroker(self.conn, s.mode, self.symbols) if s.is_paper else DryLiveBroker(self.conn, self.symbols)
        self.switcher = ModeSwitcher(self.strategy_mode, s.strategy_mode_file, enabled=s.mode_switch_enable,
                                     interval_of=self._interval_of_mode,
                                     exit_on_restart_required=s.mode_switch_exit_on_restart_required,
                                     cooldown_s=s.mode_switch_cooldown_s, on_audit=self._audit)
        self.pinger = WatchdogPinger()
        self.log.info(f"trader starting: mode={s.mode} interval={self.interval} symbols={','.join(self.symbols)} "
                      f"config_id={self.cfg.config_id[:12]} db={s.db_path}")

    def _symbols(self) -> list[str]:
        try:
            md = load_market_data(self.candles_db, self.interval, end_ms=None)
        except MarketDataError as exc:
            raise DaemonError(str(exc)) from None
        available = set(md.symbols)
        wanted = list(self.settings.symbols) or sorted(available)
        missing = [x for x in wanted if x not in available]
        if missing:
            raise DaemonError(f"AI_QUANT_SYMBOLS: {','.join(missing)} not in {self.candles_db}")
        excluded = {x.upper() for x in self.cfg.watchlist_exclude}
        return sorted(x for x in wanted if x not in excluded)

    def _interval_of_mode(self, mode: str | None) -> str:
        return load_config(self.settings.strategy_yaml, mode=mode, live=not self.settings.is_paper).interval

    def _restore_engine(self) -> None:
        saved = checkpoint.load(self.conn)
        wv = np.ascontiguousarray(self.cfg.windows(), dtype=np.int64)
        params = self.cfg.params_matrix(self.symbols)
        state = None
        self.last_bar_t = None
        self.epoch = checkpoint.new_epoch()
        if saved is not None:
            if saved["symbols"] != self.symbols or saved["windows"] != [int(w) for w in wv]:
                raise DaemonError(f"{self.settings.db_path}: its engine checkpoint was made for other symbols or "
                                  "indicator windows; use a new AI_QUANT_DB_PATH for this config")
            state = checkpoint.decode(saved)
            self.last_bar_t = int(saved["last_bar_t"])
            self.epoch = saved["epoch"]
        balance = 10_000.0
        self.engine = Engine(params, wv, self.symbols, self.iv_ms, balance, state=state)
        self.base_params = self.engine.params.copy()

    def _audit(self, event: str, symbol: str | None, data: dict) -> None:
        with transaction(self.conn):
            audit(self.conn, event, symbol, "warning" if "KILL" in event or "BLOCK" in event else "info", data)
        self.log.info(f"audit {event} {symbol or ''} {data}")

    def _ensure_risk(self, bar_close_ms: int) -> None:
        if self.risk is None:
            self.bar_clock = ManualClock(now_ms=bar_close_ms, monotonic=bar_close_ms / 1000.0)
            persisted = checkpoint.load_risk(self.conn)
            self.risk = RiskManager(self.settings.risk, clock=self.bar_clock, on_audit=self._audit,
                                    persisted=persisted, on_persist=lambda snap: None)
        elif bar_close_ms > self.bar_clock.now_ms():
            self.bar_clock.set_wall_ms(bar_close_ms)

    # ------------------------------------------------------------------ bars
    def _pending(self, now_ms: int):
        """Closed bars after the last processed one, aligned to the engine's symbols."""
        grace = self.settings.candle_close_grace_ms
        start = None if self.last_bar_t is None else self.last_bar_t - self.iv_ms
        try:
            md = load_market_data(self.candles_db, self.interval, start_ms=start)
        except MarketDataError as exc:
            if "no " in str(exc) and self.last_bar_t is not None:
                return None
            raise
        md = align_symbols(md, self.symbols)
        funding = funding_matrix(str(self.settings.funding_db) if self.settings.funding_db else None, md)
        closed = md.times + self.iv_ms + grace <= now_ms
        after = md.times > (self.last_bar_t if self.last_bar_t is not None else -1)
        todo = np.flatnonzero(closed & after)
        return md, funding, todo

    def _bar_params(self, blocked: set[int], entries_off: bool) -> np.ndarray:
        params = self.base_params.copy()
        rows = range(len(self.symbols)) if entries_off else sorted(blocked)
        for s in rows:
            params[s, P_MAX_OPEN_POSITIONS] = 0.0
            params[s, P_ENABLE_PYRAMIDING] = 0.0
        return params

    def _positions_notional(self) -> float:
        pos = self.engine.state.pos
        return float(np.nansum(np.abs(pos[:, POS_SIZE] * pos[:, POS_LAST_CLOSE]) * (pos[:, POS_SIDE] != 0)))

    def _step_checked(self, md, funding, b: int) -> np.ndarray:
        """Run bar b; re-run from the snapshot while the RiskManager refuses one of its fills."""
        t = int(md.times[b])
        self._ensure_risk(t + self.iv_ms)
        self.risk.poll(force=True)
        snapshot = self.engine.state.copy()
        blocked: set[int] = set()
        trade = self.risk.kill_mode != HALT_ALL
        entries_off = self.risk.kill_mode != "off"
        prev = md.valid[:, b - 1] if b > 0 else np.zeros(len(self.symbols), bool)
        for _ in range(len(self.symbols) + 2):
            self.engine.params = self._bar_params(blocked, entries_off)
            fills = self.engine.step(t, md.open[:, b], md.high[:, b], md.low[:, b], md.close[:, b],
                                     md.volume[:, b], md.valid[:, b], prev, funding[:, b], trade=trade)
            refused = self._first_refused(fills, snapshot)
            if refused is None:
                break
            self.engine.state = snapshot.copy()
            sym, action = refused
            if action in ("OPEN", "ADD"):
                blocked.add(sym)
            else:
                trade = False
        self.engine.params = self.base_params
        return fills

    def _first_refused(self, fills: np.ndarray, snapshot) -> tuple[int, str] | None:
        equity = float(snapshot.acct[A_EQUITY])
        exposure = float(np.nansum(np.abs(snapshot.pos[:, POS_SIZE] * snapshot.pos[:, POS_LAST_CLOSE])
                                   * (snapshot.pos[:, POS_SIDE] != 0)))
        for row in fills:
            s, action = int(row[FL_SYM]), ACTION_NAMES[int(row[FL_ACTION])]
            side = "BUY" if (row[FL_SIDE] > 0) == (action in ("OPEN", "ADD")) else "SELL"
            decision = self.risk.allow_order(self.symbols[s], action, side, float(row[FL_NOTIONAL]), equity, exposure)
            if not decision.allowed:
                return s, action
            if action in ("OPEN", "ADD"):
                exposure += float(row[FL_NOTIONAL])
        return None

    def _record(self, md, b: int, fills: np.ndarray) -> None:
        t = int(md.times[b])
        for row in fills:
            action = ACTION_NAMES[int(row[FL_ACTION])]
            self.risk.note_order_sent(self.symbols[int(row[FL_SYM])], action, float(row[FL_NOTIONAL]))
        with transaction(self.conn):
            self.broker.record(fills, bar_t_ms=t, epoch=self.epoch, config_id=self.cfg.config_id,
                               pos=self.engine.state.pos)
            if len(fills) or (b % CHECKPOINT_EVERY_BARS == 0):
                self._save_checkpoint(t)
        for row in fills:
            action = ACTION_NAMES[int(row[FL_ACTION])]
            if action in ("REDUCE", "CLOSE"):
                self.risk.note_fill(float(row[8]) - float(row[7]), action == "CLOSE", t + self.iv_ms)
        self.last_bar_t = t
        if "flatten" in self.risk.update_equity(float(self.engine.state.acct[A_EQUITY]), t + self.iv_ms):
            self.log.warning("safe mode: drawdown from the high-water mark reached the limit; flattening")
            self._flatten(t)

    def _flatten(self, t: int) -> None:
        fills = self.engine.flatten(t + self.iv_ms)
        with transaction(self.conn):
            self.broker.record(fills, bar_t_ms=t, epoch=self.epoch + ":flatten", config_id=self.cfg.config_id,
                               pos=self.engine.state.pos)
            self._save_checkpoint(t)

    def _save_checkpoint(self, t: int) -> None:
        checkpoint.save(self.conn, self.engine.state, last_bar_t=t, symbols=self.symbols,
                        windows=self.engine.wv, config_id=self.cfg.config_id, epoch=self.epoch)
        if self.risk is not None:
            checkpoint.save_risk(self.conn, self.risk.snapshot())

    def process_pending(self) -> int:
        pending = self._pending(self.wall.now_ms())
        if pending is None:
            return 0
        md, funding, todo = pending
        for b in todo:
            fills = self._step_checked(md, funding, int(b))
            self._record(md, int(b), fills)
            self.pinger.maybe_ping()
            if self.stop_requested:
                break
        if len(todo):
            with transaction(self.conn):
                self._save_checkpoint(self.last_bar_t)
        return len(todo)

    # ------------------------------------------------------------------ loop
    def _reload_config(self) -> None:
        result = self.watcher.check()
        if result.error:
            self.errors += 1
            self.log.error(f"config reload failed: {result.error}")
        if result.message:
            (self.log.warning if result.restart_required else self.log.info)(result.message)
        if result.changed:
            new_wv = [int(w) for w in result.config.windows()]
            if new_wv != [int(w) for w in self.engine.wv]:
                self.log.warning("config reload changed indicator windows: restart required (keeping the running config)")
                return
            self.cfg = result.config
            self.base_params = np.ascontiguousarray(self.cfg.params_matrix(self.symbols), dtype=np.float64)
            self.engine.params = self.base_params
            self._audit("CONFIG_RELOAD", None, {"config_id": self.cfg.config_id})

    def _heartbeat(self, loop_s: float) -> None:
        st = self.risk.state() if self.risk else {"kill": "off", "kill_reason": None}
        open_pos = int(np.count_nonzero(self.engine.state.pos[:, POS_SIDE]))
        self.log.heartbeat(loops=self.loops, errors=self.errors, symbols=len(self.symbols), open_pos=open_pos,
                           loop=loop_s, ws_connected=0, kill=st["kill"], kill_reason=st["kill_reason"],
                           strategy_mode=self.strategy_mode or "none", config_id=self.cfg.config_id[:12],
                           version=VERSION)

    def _maybe_switch_mode(self) -> bool:
        if self.risk is None:
            return False
        switch = self.switcher.on_kill_state(self.risk.kill_seq, time.monotonic())
        if switch is None:
            return False
        self.strategy_mode = switch.new
        self.log.warning(f"strategy mode {switch.old} -> {switch.new} after a kill event")
        if switch.exit_requested:
            self.log.warning("interval changes with the new mode: exiting so systemd restarts the trader")
            return True
        return False

    def run(self) -> int:
        self._start()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        ready(f"trading {len(self.symbols)} symbols on {self.interval}")
        last_hb = 0.0
        try:
            while not self.stop_requested:
                started = time.monotonic()
                self._reload_config()
                processed = self.process_pending()
                self.loops += 1
                self.pinger.maybe_ping()
                if time.monotonic() - last_hb >= self.settings.heartbeat_secs or self.until_caught_up:
                    self._heartbeat(time.monotonic() - started)
                    last_hb = time.monotonic()
                status(f"last bar {self.last_bar_t} processed={processed}")
                if self._maybe_switch_mode():
                    return 3
                if self.until_caught_up:
                    break
                self._sleep_to_next_loop()
        finally:
            stopping()
            self.log.info(f"trader stopped after {self.loops} loops; last bar {self.last_bar_t}")
            self.log.close()
            self.conn.close()
            self.lock.release()
        return 0

    def _sleep_to_next_loop(self) -> None:
        period = self.settings.loop_target_secs
        deadline = (time.time() // period + 1) * period
        while not self.stop_requested and time.time() < deadline:
            time.sleep(min(0.25, max(0.0, deadline - time.time())))

    def _on_signal(self, signum, _frame) -> None:
        self.stop_requested = True


def align_symbols(md, symbols: list[str]):
    """The data on the engine's symbol list (symbols without bars in this slice are all-invalid)."""
    if list(md.symbols) == symbols:
        return md
    nbar = len(md.times)
    idx = {s: i for i, s in enumerate(md.symbols)}

    def take(arr, fill):
        out = np.full((len(symbols), nbar), fill, dtype=arr.dtype)
        for j, s in enumerate(symbols):
            if s in idx:
                out[j] = arr[idx[s]]
        return out

    return replace(md, symbols=list(symbols), open=take(md.open, np.nan), high=take(md.high, np.nan),
                   low=take(md.low, np.nan), close=take(md.close, np.nan), volume=take(md.volume, np.nan),
                   valid=take(md.valid, False))
