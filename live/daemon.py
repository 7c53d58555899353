"""The trading daemon: the canonical engine on closed bars, behind the RiskManager.

Each new closed bar of the entry interval (read from the candle DBs the market-data service keeps
fresh, after a grace window) goes through `cpu_replay.engine.Engine.step` — the code path of
`backtester replay` — and the fills it produces pass the RiskManager before they are recorded by
the broker (paper: the trading DB; dry_live: audit events only). A fill the RiskManager refuses is
undone by restoring the engine from its pre-bar snapshot and re-running the bar with that
symbol's entries blocked (or, for a refused exit, with no orders at all on that bar), so the
engine's state always equals what was actually done.

Live mode (docs/LIVE.md): the accepted fills are ORDER INTENTS. Each is written to the OMS and
committed, then sent through the HyperliquidBroker; an entry the exchange refuses is handled like
a risk refusal (snapshot restored, that symbol's entries blocked, bar re-run — intents already
executed on this bar are found by their dedupe key and not sent again), and the real fills then
replace the simulated ones in the engine state (live/fill_adjust.py) and in `trades`. Only bars
that closed less than AI_QUANT_LIVE_MAX_BAR_AGE_S ago (default: one interval) trade; older bars
(a first start, a restart after downtime) only warm the indicators.

Risk limits run on the bar clock (the bar's close time): rate limits count orders per minute of
market time, and the daily loss stop resets at the UTC midnight of the bars, which makes a
catch-up over old bars behave exactly like running through them live.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from cpu_replay.engine import Engine
from cpu_replay.subbars import build_sub_bars
from live import checkpoint
from live.alert_rules import alert_for
from live.alerts import Alerter
from live.clock import ManualClock, SystemClock
from live.config_watch import ConfigWatcher
from live.env import Settings
from live.exchange_errors import describe, is_transient
from live.fill_adjust import LiveTradeRecorder, _mirror, apply_real_fills
from live.fill_intake import FillIntake, IngestResult
from live.kill_switch import ensure_private_dir
from live.live_gates import SendGate, live_start_problem
from live.lock import InstanceLock, db_lock
from live.market_ws import MarketWs, WsConfig, ws_url
from live.oms import UNREACHABLE, Oms, OrderExecutor, OrderRequest
from live.paper_broker import DryLiveBroker, PaperBroker
from live.protection import Protection
from live.reconcile import Reconciler
from live.risk import HALT_ALL, RiskManager, utc_day
from live.runtime_log import RuntimeLogger
from live.sdnotify import WatchdogPinger, ready, status, stopping
from live.strategy_modes import ModeSwitcher, read_mode_file
from live.trade_log import CatchUpSummary, DailyTally, fill_line
from live.trading_db import (
    audit,
    delete_position_state,
    iso_utc,
    load_engine_state,
    open_trading_db,
    transaction,
)
from marketdata.candles import MarketData, align_to_symbols, load_market_data
from marketdata.funding import funding_matrix
from marketdata.intervals import MarketDataError, interval_ms, normalize_interval
from marketdata.sanity import BadCandle
from strategy.cli_io import did_you_mean
from strategy.config import apply_overrides, load_config
from strategy.kernel import KERNEL_CPU
from strategy.layout import (
    A_EQUITY,
    FL_ACTION,
    FL_FEE,
    FL_NOTIONAL,
    FL_PNL,
    FL_SYM,
    POS_ENTRY,
    POS_LAST_CLOSE,
    POS_LEVERAGE,
    POS_SIDE,
    POS_SIZE,
)
from strategy.params import P_ENABLE_PYRAMIDING, P_MAX_OPEN_POSITIONS
from strategy.records import action_name, fill_dict, order_side

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
        self.hl = None               # HyperliquidBroker in dry_live / live
        self.executor = None
        self.reconciler = None
        self.intake = None           # FillIntake in dry_live / live (WS userFills + REST backfill)
        self.intake_failures = 0     # consecutive failed intakes (health guard)
        self.pending_flatten = False  # safe mode tripped while halt_all blocked the closes
        self.market_ws = None        # MarketWs in dry_live / live: mids for pricing, userFills
        self.ws_stale_strikes = 0
        self.ws_entries_blocked = False
        self.day_tally = DailyTally()
        self.before_send = None      # test seam: called after an intent is committed, before it is sent
        self.protection = None       # live: resting protective trigger orders (live/protection.py)

    # ------------------------------------------------------------------ startup
    def _load_config(self, path):
        """The effective config; an AI_QUANT_INTERVAL other than the file's is folded in as
        engine.interval, as `backtester replay --interval` does, so one effective config has one
        config_id whichever command ran it."""
        cfg = load_config(path, mode=self.strategy_mode, live=not self.settings.is_paper)
        wanted = self.settings.interval
        if wanted and cfg.interval != normalize_interval(wanted):
            cfg = apply_overrides(cfg, {"engine.interval": normalize_interval(wanted)})
        return cfg

    def _start(self) -> None:
        """Check everything that needs no file of ours first, then claim the DB (both locks) and
        open it; a start that fails after that removes what it created (no empty DB, no lock left)."""
        s = self.settings
        if s.mode == "live":
            problem = live_start_problem(s.live.gate_env("live"))
            if problem is not None:
                raise DaemonError(problem)
        if not s.strategy_yaml.exists():
            raise DaemonError(f"strategy YAML not found: {s.strategy_yaml} (AI_QUANT_STRATEGY_YAML)")
        secrets = self._secrets()
        self.strategy_mode = s.strategy_mode or read_mode_file(s.strategy_mode_file)  # env wins, then the file
        self.watcher = ConfigWatcher(s.strategy_yaml, self._load_config)
        self.cfg = self.watcher.config
        self.interval = normalize_interval(s.interval or self.cfg.interval)
        self.iv_ms = interval_ms(self.interval)
        self.candles_db = str(s.candles_db_dir / f"candles_{self.interval}.db")
        self.exit_interval, self.exit_db = self._exit_interval()
        self.sub = None
        self.symbols = self._symbols()
        self.bar_clock = None
        self.risk = None
        self.log = None
        created = self._claim_db()
        try:
            self._open_runtime(secrets)
        except BaseException:
            self._abandon_start(created)
            raise

    def _claim_db(self) -> list[Path]:
        """Take the configured lock and the DB's own lock, open the DB; returns the paths this start
        created (removed again if the start fails)."""
        s = self.settings
        self.lock = InstanceLock(s.lock_path)
        self.db_lock = db_lock(s.db_path)
        self.conn = None
        wanted = [s.lock_path, self.db_lock.path, s.db_path]
        created = [p for p in wanted if not os.path.lexists(p)]
        try:
            self.lock.acquire()
            self.db_lock.acquire()
            self.conn = open_trading_db(s.db_path)
        except BaseException:
            self._abandon_start(created)
            raise
        return created

    def _abandon_start(self, created: list[Path]) -> None:
        """Undo a failed start: close, then delete the files this start created (never older ones,
        and a lock file only while this process holds it)."""
        if getattr(self, "alerter", None) is not None:
            self.alerter.close(1.0)
        if getattr(self, "log", None) is not None:
            self.log.close()
        if self.conn is not None:
            self.conn.close()
        for lock in (self.db_lock, self.lock):
            if lock.held and lock.path in created:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock.path)
            lock.release()
        if self.settings.db_path in created:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.settings.db_path}{suffix}")

    def _open_runtime(self, secrets) -> None:
        s = self.settings
        self.log = RuntimeLogger(s.db_path, s.mode)
        self.alerter = Alerter(s.alerts, log=self.log)
        if self.alerter.enabled:
            self.log.info(s.alerts.describe())
        if secrets is not None:
            self._connect_exchange(secrets)
        self._restore_engine()
        self._refuse_unseen_bad_rows()
        if s.risk.kill_switch_file is not None:
            ensure_private_dir(s.risk.kill_switch_file)  # where the operator writes it (0700 when new)
        self._ensure_risk(self._risk_anchor_ms())  # kill file, env and latched kills known before any bar
        if s.mode == "live":
            self.broker = LiveTradeRecorder(self.conn, self.symbols)
        elif s.is_paper:
            self.broker = PaperBroker(self.conn, s.mode, self.symbols)
        else:
            self.broker = DryLiveBroker(self.conn, self.symbols)
        self.switcher = ModeSwitcher(self.strategy_mode, s.strategy_mode_file, enabled=s.mode_switch_enable,
                                     interval_of=self._interval_of_mode,
                                     exit_on_restart_required=s.mode_switch_exit_on_restart_required,
                                     cooldown_s=s.mode_switch_cooldown_s, on_audit=self._audit)
        self.pinger = WatchdogPinger()
        self.log.info(f"trader starting: mode={s.mode} interval={self.interval} symbols={','.join(self.symbols)} "
                      f"config={s.strategy_yaml} config_id={self.cfg.config_id[:12]} db={s.db_path}")
        self.alerter.send("start", f"{s.mode} trader on {len(self.symbols)} symbols, {self.interval}, "
                                   f"config {self.cfg.config_id[:12]}, kill={self.risk.kill_mode}")
        if self.reconciler is not None and s.mode == "live":
            counts = self.reconciler.on_start()
            self.log.info(f"reconciler on start: {counts}")
            self.protection.on_start()

    def _risk_anchor_ms(self) -> int:
        """The bar clock at start: the close of the last processed bar, else of the first bar the
        candle DB holds (the catch-up starts there, so daily baselines stay on the bar clock)."""
        if self.last_bar_t is not None:
            return self.last_bar_t + self.iv_ms
        return self.first_bar_t + self.iv_ms

    # ------------------------------------------------------------------ exchange (dry_live / live)
    def _secrets(self):
        from live.secrets import SecretsError, load_secrets

        s = self.settings
        if s.is_paper:
            return None
        if s.mode == "dry_live" and not s.secrets_path.exists():
            return None  # dry_live without an account: intents are audit events only (as before)
        try:
            return load_secrets(s.secrets_path)
        except SecretsError as exc:
            raise DaemonError(str(exc)) from None

    def _connect_exchange(self, secrets) -> None:
        from live.hl_broker import HyperliquidBroker

        s, lv = self.settings, self.settings.live
        try:
            self.hl = HyperliquidBroker(lv.hl_base_url, secrets, timeout_s=lv.hl_timeout_s,
                                        slippage_pct=lv.slippage_pct, expires_s=lv.order_expires_s,
                                        bump_to_min=lv.bump_to_min_notional, read_only=s.mode != "live",
                                        read_attempts=lv.hl_read_attempts, retry_base_s=lv.hl_retry_base_s)
            missing = [x for x in self.symbols if not self.hl.has_symbol(x)]
            self.account_value = self.hl.account_value()
        except DaemonError:
            raise
        except Exception as exc:
            raise DaemonError(f"AI_QUANT_HL_BASE_URL={lv.hl_base_url}: cannot read the account "
                              f"({secrets.redact(type(exc).__name__ + ': ' + str(exc))[:300]})") from None
        if missing:
            raise DaemonError(f"AI_QUANT_SYMBOLS: {','.join(missing)} not listed on {lv.hl_base_url}")
        # OMS timestamps are real time (they bound how long an order may still appear on the
        # exchange); only the bar validity of an intent follows the daemon's clock.
        self.oms = Oms(self.conn, cloid_prefix=lv.cloid_prefix, strategy_version=VERSION,
                       strategy_sha1=self.cfg.config_id)
        self.executor = OrderExecutor(self.oms, self.hl, SendGate(s.mode, lv.gate_env(s.mode)), audit=self._audit,
                                      still_valid=lambda intent: self._bar_tradeable(intent.decision_ts_ms + self.iv_ms),
                                      before_send=lambda intent: self.before_send and self.before_send(intent))
        self.reconciler = Reconciler(self.oms, self.hl, self.executor, risk=lambda: self._risk_now(), audit=self._audit,
                                     engine_positions=self._engine_positions, align=self._align_position,
                                     symbols=self.symbols, every_s=lv.reconcile_secs, stale_ms=lv.stale_order_ms,
                                     unknown_stale_ms=lv.unknown_stale_order_ms, cancel_stale=s.mode == "live")
        self.intake = FillIntake(self.oms, self.hl.fills_by_time, now_ms=self.wall.now_ms, mode=s.mode,
                                 rest_every_s=lv.rest_fills_sync_secs, backfill_ms=lv.backfill_ms,
                                 match_ttl_ms=lv.match_ttl_ms, log=self.log.warning)
        self.protection = Protection.wire(self)
        if lv.ws_enable:
            self._start_market_ws(secrets.main_address)

    def _start_market_ws(self, address: str) -> None:
        """Mids for order prices and the account's fills, on one reconnecting socket."""
        lv = self.settings.live
        cfg = WsConfig(url=ws_url(lv.hl_base_url), symbols=tuple(self.symbols), bbo=True, user=address,
                       user_channels=("userFills",), stale_s=lv.ws_stale_mids_s,
                       silent_reconnect_s=max(90.0, 3 * lv.ws_stale_mids_s))
        self.market_ws = MarketWs(cfg, on_user_fills=self.intake.offer_ws).start()
        self.hl.set_mids_source(lambda: self.market_ws.mids(max_age_s=lv.ws_stale_mids_s),
                                on_fallback=self._on_mid_fallback)

    def _on_mid_fallback(self, symbol: str) -> None:
        self.log.warning(f"WS mid for {symbol} stale or missing (> {self.settings.live.ws_stale_mids_s:g}s): "
                         "priced from REST allMids")

    def _risk_now(self) -> RiskManager:
        if self.risk is None:
            self._ensure_risk(self.wall.now_ms())
        return self.risk

    def _bar_tradeable(self, bar_close_ms: int) -> bool:
        age_s = self.settings.live.max_bar_age_s
        max_age_ms = self.iv_ms if age_s is None else int(age_s * 1000)
        return self.wall.now_ms() - bar_close_ms <= max_age_ms

    def _engine_positions(self) -> dict[str, float]:
        pos = self.engine.state.pos
        return {sym: float(pos[i, POS_SIDE] * pos[i, POS_SIZE]) for i, sym in enumerate(self.symbols)
                if pos[i, POS_SIDE] != 0}

    def _align_position(self, symbol: str, exchange_szi: float) -> str:
        """The reconciler's position alignment (rule in live/reconcile.py); checkpointed at once."""
        i = self.symbols.index(symbol)
        pos, acct = self.engine.state.pos, self.engine.state.acct
        p = pos[i]
        if exchange_szi == 0:
            KERNEL_CPU.drop_position(pos, acct, i)
            result = "engine position dropped (flat on the exchange)"
        else:
            KERNEL_CPU.resize_position(pos, acct, i, abs(exchange_szi), p[POS_ENTRY], False)
            result = f"engine size set to {abs(exchange_szi):g}"
        with transaction(self.conn):
            if p[POS_SIDE] == 0:
                delete_position_state(self.conn, symbol)
            else:
                _mirror(self.conn, symbol, p, None)
            if self.last_bar_t is not None:
                self._save_checkpoint(self.last_bar_t)
        return result

    def _symbols(self) -> list[str]:
        self.start_bad_rows: list[BadCandle] = []
        if not Path(self.candles_db).exists():
            raise DaemonError(f"no {self.interval} candle DB at {self.candles_db} (AI_QUANT_CANDLES_DB_DIR holds "
                              f"candles_<interval>.db; `trader market-data` fills it, AI_QUANT_INTERVAL picks another)")
        try:
            md = load_market_data(self.candles_db, self.interval, end_ms=None, skipped=self.start_bad_rows)
        except MarketDataError as exc:
            raise DaemonError(str(exc)) from None
        available = set(md.symbols)
        self.first_bar_t = int(md.times[0])
        wanted = list(self.settings.symbols) or sorted(available)
        missing = [x for x in wanted if x not in available]
        if missing:
            hint = did_you_mean(missing[0], sorted(available))
            raise DaemonError(f"AI_QUANT_SYMBOLS: {','.join(missing)} not in {self.candles_db}{hint}")
        excluded = {x.upper() for x in self.cfg.watchlist_exclude}
        return sorted(x for x in wanted if x not in excluded)

    def _exit_interval(self) -> tuple[str | None, str | None]:
        """The finer exit interval of the config (None when exits use the main bar), as the replay does."""
        entry = self.cfg.entry_interval
        if entry and normalize_interval(entry) != self.interval:
            raise DaemonError(f"global.engine.entry_interval={entry}: entries on a finer interval than "
                              f"{self.interval} are not supported yet; set it to null")
        exit_iv = self.cfg.exit_interval
        if not exit_iv or normalize_interval(exit_iv) == self.interval:
            return None, None
        exit_iv = normalize_interval(exit_iv)
        db = self.settings.candles_db_dir / f"candles_{exit_iv}.db"
        if not db.exists():
            raise DaemonError(f"global.engine.exit_interval={exit_iv} needs {db} (the market-data service "
                              "must keep that interval too)")
        return exit_iv, str(db)

    def _sub_at(self, b: int):
        """The exit-interval bars inside main bar b, as Engine.step wants them (None: main bar)."""
        if self.sub is None:
            return None
        sb = self.sub
        return sb.open[:, b], sb.high[:, b], sb.low[:, b], sb.close[:, b], sb.valid[:, b], sb.close_ms[b]

    def _load_sub_bars(self, md, closed: np.ndarray) -> np.ndarray:
        """Exit-interval bars under each main bar; a main bar waits until its last exit bar is in."""
        if self.exit_interval is None:
            self.sub = None
            return closed
        exit_md = self._load_checked(self.exit_db, self.exit_interval, start_ms=int(md.times[0]),
                                     end_ms=int(md.times[-1] + self.iv_ms - 1))
        self.sub = build_sub_bars(md, exit_md)
        last_exit_open = int(exit_md.times[-1])
        return closed & (md.times + self.iv_ms - interval_ms(self.exit_interval) <= last_exit_open)

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
        current = (load_engine_state(self.conn, "flatten_seq") or {}).get("seq", 0)
        self.flatten_seen = int(saved.get("flatten_seen", current)) if saved is not None else int(current)
        balance = self.settings.paper_balance  # a fresh engine's cash; dry_live / live use the account
        if state is None and self.hl is not None and getattr(self, "account_value", 0.0) > 0:
            balance = float(self.account_value)  # dry_live / live size from the real account
        self.engine = Engine(params, wv, self.symbols, self.iv_ms, balance, state=state)
        self.base_params = self.engine.params.copy()

    def _audit(self, event: str, symbol: str | None, data: dict) -> None:
        with transaction(self.conn):
            audit(self.conn, event, symbol, "warning" if "KILL" in event or "BLOCK" in event else "info", data)
        self.log.info(f"audit {event} {symbol or ''} {data}")
        alert = alert_for(event, symbol, data)
        if alert is not None:
            kind, text, key = alert
            self.alerter.send(kind, f"{self.settings.mode}: {text}", dedupe_key=key)

    def _persist_risk(self, snapshot: dict) -> None:
        """Latched kills and loss baselines hit the DB when they change, not only with the next bar."""
        if self.conn.in_transaction:
            checkpoint.save_risk(self.conn, snapshot)
        else:
            with transaction(self.conn):
                checkpoint.save_risk(self.conn, snapshot)

    def _ensure_risk(self, bar_close_ms: int) -> None:
        if self.risk is None:
            self.bar_clock = ManualClock(now_ms=bar_close_ms, monotonic=bar_close_ms / 1000.0)
            persisted = checkpoint.load_risk(self.conn)
            self.risk = RiskManager(self.settings.risk, clock=self.bar_clock, on_audit=self._audit,
                                    persisted=persisted, on_persist=self._persist_risk)
        elif bar_close_ms > self.bar_clock.now_ms():
            self.bar_clock.set_wall_ms(bar_close_ms)

    # ------------------------------------------------------------------ bars
    # ------------------------------------------------------------------ poisoned candles
    def _known_bad_rows(self) -> set[tuple[str, int]]:
        """(symbol, t) of the candle rows this DB's trader already skipped (CANDLE_SKIPPED events)."""
        rows = self.conn.execute("SELECT symbol, data_json FROM audit_events WHERE event = 'CANDLE_SKIPPED'")
        return {(sym, int(json.loads(data)["t"])) for sym, data in rows}

    def _refuse_unseen_bad_rows(self) -> None:
        """A fresh trader (no checkpoint) refuses a candle DB with a poisoned row, naming it: nothing
        is at stake yet and the operator fixes the data first. A trader that has been running skips
        such rows (audited once) instead: refusing to restart would leave its positions unwatched."""
        self.skipped_rows = self._known_bad_rows()
        unseen = [b for b in self.start_bad_rows if (b.symbol, int(b.t)) not in self.skipped_rows]
        if unseen and self.last_bar_t is None:
            more = f" (and {len(unseen) - 1} more; tools/check_candle_dbs.py lists them)" if len(unseen) > 1 else ""
            raise DaemonError(unseen[0].line() + more)
        self._skip_bad_rows(unseen)

    def _skip_bad_rows(self, bad: list[BadCandle]) -> None:
        """A poisoned bar that arrives while running is a gap for that symbol (never traded on),
        reported once as a CANDLE_SKIPPED audit event."""
        for row in bad:
            key = (row.symbol, int(row.t))
            if key in self.skipped_rows:
                continue
            self.skipped_rows.add(key)
            self._audit("CANDLE_SKIPPED", row.symbol, {"t": int(row.t), "db": row.path, "problem": row.problem})
            self.log.warning(f"{row.line()}: bar skipped for {row.symbol}")

    def _load_checked(self, db: str, interval: str, **window) -> MarketData:
        bad: list[BadCandle] = []
        md = load_market_data(db, interval, skipped=bad, **window)
        self._skip_bad_rows(bad)
        return md

    def _pending(self, now_ms: int):
        """Closed bars after the last processed one, aligned to the engine's symbols."""
        grace = self.settings.candle_close_grace_ms
        start = None if self.last_bar_t is None else self.last_bar_t - self.iv_ms
        try:
            md = self._load_checked(self.candles_db, self.interval, start_ms=start)
        except MarketDataError as exc:
            if str(exc).startswith("no ") and self.last_bar_t is not None:
                return None
            raise
        self._check_data_lag(md)
        md = align_to_symbols(md, self.symbols)
        funding = funding_matrix(str(self.settings.funding_db) if self.settings.funding_db else None, md)
        closed = self._load_sub_bars(md, md.times + self.iv_ms + grace <= now_ms)
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

    def _step_checked(self, md, funding, b: int, blocked: set[int] | None = None, order_snap=None) -> np.ndarray:
        """Run bar b; re-run from the snapshot while the RiskManager refuses one of its fills.
        Rate limits are reserved as each fill is accepted and rolled back with the engine on a re-run."""
        t = int(md.times[b])
        self._ensure_risk(t + self.iv_ms)
        self.risk.poll(force=True)
        snapshot = self.engine.state.copy()
        order_snap = self.risk.order_state() if order_snap is None else order_snap
        blocked = set(blocked or ())
        trade = self.risk.kill_mode != HALT_ALL
        entries_off = self.risk.kill_mode != "off" or self.ws_entries_blocked
        prev = md.valid[:, b - 1] if b > 0 else np.zeros(len(self.symbols), bool)
        for _ in range(len(self.symbols) + 2):
            self.risk.restore_order_state(order_snap)
            self.engine.params = self._bar_params(blocked, entries_off)
            fills = self.engine.step(t, md.open[:, b], md.high[:, b], md.low[:, b], md.close[:, b],
                                     md.volume[:, b], md.valid[:, b], prev, funding[:, b], trade=trade,
                                     sub=self._sub_at(b))
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

    # ------------------------------------------------------------------ live bars
    def _warm_only(self, md, funding, b: int) -> np.ndarray:
        """A bar too old to trade (or the hard kill is on): indicators only, no orders."""
        t = int(md.times[b])
        self._ensure_risk(t + self.iv_ms)
        prev = md.valid[:, b - 1] if b > 0 else np.zeros(len(self.symbols), bool)
        return self.engine.step(t, md.open[:, b], md.high[:, b], md.low[:, b], md.close[:, b], md.volume[:, b],
                                md.valid[:, b], prev, funding[:, b], trade=False, sub=self._sub_at(b))

    def _step_live(self, md, funding, b: int) -> np.ndarray:
        t = int(md.times[b])
        no_new_orders = not self._bar_tradeable(t + self.iv_ms) or self.settings.live.hard_kill
        if no_new_orders and not self.oms.has_intents_for_bar(t):
            return self._warm_only(md, funding, b)
        # A bar with intents from before a crash is re-run even when too old to trade: the executor
        # finds them by dedupe key (fills applied, nothing re-sent) and expires what was never sent.
        snapshot = self.engine.state.copy()
        order_snap = self.risk.order_state() if self.risk is not None else None
        refused: set[int] = set()
        for _ in range(len(self.symbols) + 2):
            fills = self._step_checked(md, funding, b, refused, order_snap)
            pairs, refused_sym, unreachable = self._execute_bar(fills, t)
            if refused_sym is None:
                break
            if unreachable:  # reads kept failing: no entry this bar (exits still go out, retried)
                refused.update(range(len(self.symbols)))
                self._audit("ENTRIES_SKIPPED", None, {"bar_t_ms": t, "why": UNREACHABLE})
            refused.add(refused_sym)
            self.engine.state = snapshot.copy()
        adjusted = apply_real_fills(snapshot, self.engine.state, pairs)
        self.broker.pairs = list(zip(adjusted, [ex for _, ex in pairs], strict=True))
        return adjusted

    def _order_request(self, row: np.ndarray, t: int, seq) -> OrderRequest:
        s, f = int(row[FL_SYM]), fill_dict(row, self.symbols)
        return OrderRequest(symbol=f["symbol"], action=f["action"], side=order_side(row), size=f["size"],
                            notional=f["notional"], decision_ts_ms=t, seq=seq,
                            leverage=float(self.engine.state.pos[s, POS_LEVERAGE]) or None,
                            entry_atr=f["atr"], reason=f["reason"], confidence=f["confidence"])

    def _execute_bar(self, fills: np.ndarray, t: int):
        """Execute the bar's fills in order; stops at the first entry the exchange refused
        (-> pairs, that symbol, whether it was refused because the exchange was unreachable)."""
        pairs, seen = [], {}
        for row in fills:
            key = (int(row[FL_SYM]), int(row[FL_ACTION]))
            seq, seen[key] = seen.get(key, 0), seen.get(key, 0) + 1
            req = self._order_request(row, t, seq)
            ex = self.executor.execute(req)
            if ex.refused and req.is_entry:
                return pairs, int(row[FL_SYM]), str(ex.error or "").startswith(UNREACHABLE)
            if req.action == "CLOSE":
                ex = self._finish_close(req, ex)
            elif ex.refused:
                self._audit("EXIT_NOT_FILLED", req.symbol, {"action": req.action, "error": ex.error})
            pairs.append((row, ex))
        return pairs, None, False

    def _finish_close(self, req: OrderRequest, ex):
        """Retry the remainder of a partially filled close (new intents r1, r2, ...)."""
        from live.oms import Execution

        fills = list(ex.fills)
        for attempt in range(1, self.settings.live.exit_retries + 1):
            held = self.hl.positions().get(req.symbol, 0.0)
            if held == 0.0 or (held > 0) == (req.side == "BUY"):
                break
            retry = self.executor.execute(replace(req, seq=f"{req.seq}r{attempt}"))
            fills += retry.fills
        else:
            held = self.hl.positions().get(req.symbol, 0.0)
            if held != 0.0 and (held > 0) != (req.side == "BUY"):
                self._audit("EXIT_INCOMPLETE", req.symbol, {"remaining_szi": held, "intent_id": ex.intent.intent_id})
        if not fills and ex.refused:
            self._audit("EXIT_NOT_FILLED", req.symbol, {"action": req.action, "error": ex.error})
        return Execution(ex.intent, fills, ex.error)

    def _dry_live_intents(self, fills: np.ndarray, t: int) -> None:
        seen: dict = {}
        for row in fills:
            key = (int(row[FL_SYM]), int(row[FL_ACTION]))
            seq, seen[key] = seen.get(key, 0), seen.get(key, 0) + 1
            self.executor.execute(self._order_request(row, t, seq))

    def _first_refused(self, fills: np.ndarray, snapshot) -> tuple[int, str] | None:
        equity = float(snapshot.acct[A_EQUITY])
        exposure = float(np.nansum(np.abs(snapshot.pos[:, POS_SIZE] * snapshot.pos[:, POS_LAST_CLOSE])
                                   * (snapshot.pos[:, POS_SIDE] != 0)))
        for row in fills:
            s, action, side = int(row[FL_SYM]), action_name(row[FL_ACTION]), order_side(row)
            decision = self.risk.allow_order(self.symbols[s], action, side, float(row[FL_NOTIONAL]), equity, exposure)
            if not decision.allowed:
                return s, action
            self.risk.note_order_sent(self.symbols[s], action, float(row[FL_NOTIONAL]))
            if action in ("OPEN", "ADD"):
                exposure += float(row[FL_NOTIONAL])
        return None

    def _record(self, md, b: int, fills: np.ndarray) -> None:
        t = int(md.times[b])
        with transaction(self.conn):
            self.broker.record(fills, bar_t_ms=t, epoch=self.epoch, config_id=self.cfg.config_id,
                               pos=self.engine.state.pos)
            if len(fills) or (b % CHECKPOINT_EVERY_BARS == 0):
                self._save_checkpoint(t)
        for row in fills:
            action = action_name(row[FL_ACTION])
            if action in ("REDUCE", "CLOSE"):
                self.risk.note_fill(float(row[FL_PNL]) - float(row[FL_FEE]), True, t + self.iv_ms)
            if action != "FUNDING":
                self.log.info(fill_line(self.symbols, row, t))
        self._tally_day(t, fills)
        self.last_bar_t = t
        if "flatten" in self.risk.update_equity(float(self.engine.state.acct[A_EQUITY]), t + self.iv_ms):
            self.pending_flatten = True
        if self.pending_flatten:
            if self.risk.kill_mode == HALT_ALL:  # halt_all blocks every order, exits included
                self.log.warning("safe mode flatten pending: halt_all blocks it until the halt is lifted")
            else:
                self.pending_flatten = False
                self.log.warning("safe mode: drawdown from the high-water mark reached the limit; flattening")
                self._flatten(t)

    def _tally_day(self, t: int, fills: np.ndarray) -> None:
        """At the first bar of a new UTC day, alert the finished day's summary (only for bars still
        live: a catch-up over history does not send one alert per old day)."""
        day = utc_day(t + self.iv_ms)
        ended = self.day_tally.roll(day, float(self.engine.state.acct[A_EQUITY]))
        self.day_tally.add(fills)
        if ended is not None and self._bar_tradeable(t + self.iv_ms):
            self.alerter.send("daily_summary", f"{self.settings.mode}: {ended}")

    def _check_data_lag(self, md) -> None:
        """Alert (once per cooldown) when the newest candle is older than two intervals past its close:
        the market-data service is behind and the trader is trading on old prices or not at all."""
        if self.until_caught_up:
            return
        lag_ms = self.wall.now_ms() - int(md.times[-1] + self.iv_ms)
        if lag_ms > 2 * self.iv_ms + self.settings.candle_close_grace_ms:
            self.alerter.send("data_lag", f"{self.settings.mode}: newest {self.interval} candle in {self.candles_db} "
                                          f"closed {lag_ms / 60_000:.0f} min ago", dedupe_key=f"lag:{self.candles_db}")

    def _flatten(self, t: int) -> None:
        before = self.engine.state.copy()
        fills = self.engine.flatten(t + self.iv_ms)
        if self.settings.mode == "live":
            pairs = [(row, self._finish_close(req, self.executor.execute(req)))
                     for row in fills for req in [self._order_request(row, t, "flatten")]]
            fills = apply_real_fills(before, self.engine.state, pairs)
            self.broker.pairs = list(zip(fills, [ex for _, ex in pairs], strict=True))
        with transaction(self.conn):
            self.broker.record(fills, bar_t_ms=t, epoch=self.epoch + ":flatten", config_id=self.cfg.config_id,
                               pos=self.engine.state.pos)
            self._save_checkpoint(t)

    def _save_checkpoint(self, t: int) -> None:
        checkpoint.save(self.conn, self.engine.state, last_bar_t=t, symbols=self.symbols,
                        windows=self.engine.wv, config_id=self.cfg.config_id, epoch=self.epoch,
                        flatten_seen=self.flatten_seen)
        if self.risk is not None:
            checkpoint.save_risk(self.conn, self.risk.snapshot())

    def _absorb_external_flatten(self) -> None:
        """tools/flat_now.py closed paper positions behind our back (SYSTEM CLOSE rows + flatten_seq):
        close them in the engine at the recorded prices so the next checkpoint does not revive them."""
        info = load_engine_state(self.conn, "flatten_seq") or {}
        seq = int(info.get("seq", 0))
        if seq == self.flatten_seen:
            return
        t = self.last_bar_t + self.iv_ms if self.last_bar_t is not None else self.wall.now_ms()
        for symbol in info.get("symbols", []):
            if symbol not in self.symbols:
                continue
            s = self.symbols.index(symbol)
            row = self.conn.execute("SELECT price FROM trades WHERE symbol = ? AND type = 'SYSTEM' AND "
                                    "action = 'CLOSE' ORDER BY id DESC LIMIT 1", (symbol,)).fetchone()
            if self.engine.state.pos[s, POS_SIDE] != 0 and row is not None:
                self.engine.close_external(s, float(row[0]), t)
        self.flatten_seen = seq
        self.log.warning(f"flat_now closed {info.get('symbols')} outside the engine; engine positions updated")
        if self.last_bar_t is not None:
            with transaction(self.conn):
                self._save_checkpoint(self.last_bar_t)

    def process_pending(self) -> int:
        self._absorb_external_flatten()
        pending = self._pending(self.wall.now_ms())
        if pending is None:
            return 0
        md, funding, todo = pending
        summary = CatchUpSummary(start_equity=float(self.engine.state.acct[A_EQUITY]))
        for b in todo:
            if self.settings.mode == "live":
                fills = self._step_live(md, funding, int(b))
            else:
                fills = self._step_checked(md, funding, int(b))
                if self.executor is not None:
                    self._dry_live_intents(fills, int(md.times[b]))
            self._record(md, int(b), fills)
            summary.add_bar(int(md.times[b]), fills)
            self.pinger.maybe_ping()
            if self.stop_requested:
                break
        if len(todo):
            with transaction(self.conn):
                self._save_checkpoint(self.last_bar_t)
        if summary.bars > 1 or (summary.bars and self.until_caught_up):
            self.log.info(summary.line(self.engine.state.acct, self.engine.state.pos, self.symbols,
                                       self.risk.kill_mode))
        return summary.bars

    # ------------------------------------------------------------------ loop
    def _reload_config(self) -> None:
        result = self.watcher.check()
        if result.error:
            self.errors += 1
            self.log.error(f"config reload failed: {result.error}")
        if result.message:
            (self.log.warning if result.restart_required else self.log.info)(result.message)
        if result.changed:
            self._adopt_config(result.config, "config reload")

    def _adopt_config(self, new, why: str) -> bool:
        """Run on `new` from the next bar, unless it changes what only a restart can change."""
        if [int(w) for w in new.windows()] != [int(w) for w in self.engine.wv]:
            self.log.warning(f"{why} changed indicator windows: restart required (keeping the running config)")
            return False
        if (new.interval, new.exit_interval, new.entry_interval) != (self.cfg.interval, self.cfg.exit_interval,
                                                                     self.cfg.entry_interval):
            self.log.warning(f"{why} changed engine intervals: restart required (keeping the running config)")
            return False
        self.cfg = new
        self.base_params = np.ascontiguousarray(self.cfg.params_matrix(self.symbols), dtype=np.float64)
        self.engine.params = self.base_params
        self._audit("CONFIG_RELOAD", None, {"config_id": self.cfg.config_id, "why": why,
                                            "strategy_mode": self.strategy_mode})
        return True

    def _heartbeat(self, loop_s: float) -> None:
        st = self.risk.state()
        open_pos = int(np.count_nonzero(self.engine.state.pos[:, POS_SIDE]))
        self.log.heartbeat(loops=self.loops, errors=self.errors, symbols=len(self.symbols), open_pos=open_pos,
                           loop=loop_s, ws_connected=self._ws_connected(), kill=st["kill"], kill_reason=st["kill_reason"],
                           strategy_mode=self.strategy_mode or "none", config_id=self.cfg.config_id[:12],
                           version=VERSION, **(self.protection.heartbeat() if self.protection else {}))

    def _ws_connected(self) -> int:
        return int(bool(self.market_ws is not None and self.market_ws.health()["connected"]))

    def check_ws(self) -> None:
        """Per loop: mids older than AI_QUANT_WS_STALE_MIDS_S for AI_QUANT_WS_STALE_STRIKES loops in
        a row block entries (WS_STALE audit event); exits still go out, priced from REST mids. The
        client reconnects by itself; fresh mids lift the block (WS_RECOVERED)."""
        if self.market_ws is None:
            return
        lv = self.settings.live
        fresh = all(self.market_ws.mid(sym, lv.ws_stale_mids_s) is not None for sym in self.symbols)
        if fresh:
            if self.ws_entries_blocked:
                self._audit("WS_RECOVERED", None, {"after_stale_loops": self.ws_stale_strikes})
            self.ws_stale_strikes, self.ws_entries_blocked = 0, False
            return
        self.ws_stale_strikes += 1
        if self.ws_stale_strikes == lv.ws_stale_strikes:
            h = self.market_ws.health()
            self.ws_entries_blocked = True
            self._audit("WS_STALE", None, {"stale_loops": self.ws_stale_strikes, "max_age_s": lv.ws_stale_mids_s,
                                           "mids_age_s": h["mids_age_s"], "connected": h["connected"],
                                           "reconnects": h["reconnects"], "entries": "blocked"})

    def sync_exchange(self) -> IngestResult | None:
        """After the bars: exchange fills in (WS buffer, REST on its timer), then the reconciler on
        its timer, at once when a fill arrived that the order path did not bring."""
        if self.intake is None:
            return None
        result = IngestResult()
        try:
            result.add(self.intake.drain_ws())
            rest = self.intake.maybe_backfill()
            if rest is not None:
                result.add(rest)
        except Exception as exc:  # the buffer is kept; the next loop retries
            self.errors += 1
            self.intake_failures += 1
            self.log.error(f"fill intake failed ({type(exc).__name__}: {str(exc)[:300]}); buffered fills kept")
        else:
            self.intake_failures = 0
        self._fill_intake_guard()
        if result.new:
            self.log.info(f"fill intake: {result.new} new exchange fill(s) {dict(result.matched_via)}, "
                          f"{result.duplicate} already stored")
        if self.reconciler is not None and self.settings.mode == "live":
            if result.new:
                self.reconciler.run()
            else:
                self.reconciler.maybe_run()
        return result

    def _fill_intake_guard(self) -> None:
        """Trading blind to our own fills is how positions double: after N failed intakes in a row
        (an exception, or the REST backfill failing) stop entries until an operator clears it."""
        streak = max(self.intake_failures, self.intake.rest_failures)
        if streak == self.settings.live.fill_ingest_fails_to_kill:
            self._risk_now().kill("close_only", "health:fill_ingest")

    def loop_once(self) -> int:
        """One pass of the main loop without the sleep (tests drive the daemon with it)."""
        if self.risk is not None:
            self.risk.poll(force=True)  # the kill file, every loop: the heartbeat and audit see it at once
        self._reload_config()
        self.check_ws()
        processed = self.process_pending()
        self.sync_exchange()
        if self.protection is not None:
            self.protection.sync()
        self.loops += 1
        return processed

    def _loop_riding_out_exchange_errors(self) -> int:
        """loop_once; a transient exchange error that escaped the retries (a 5xx, 429, timeout or
        dropped reply on a read) does not end the trader: the engine goes back to its last
        checkpoint, as after a restart, and the next loop re-runs the bar (intents already
        written are found by their dedupe key, nothing is sent twice)."""
        try:
            return self.loop_once()
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.errors += 1
            self._audit("EXCHANGE_UNREACHABLE", None, {"error": describe(exc), "then": "re-run from checkpoint"})
            self.log.warning(f"exchange unreachable ({describe(exc)}); engine back to its last checkpoint, "
                             "the bar is re-run on the next loop")
            self._restore_engine()
            self.risk = None
            self._ensure_risk(self._risk_anchor_ms())
            return 0

    def close(self) -> None:
        self.alerter.close(2.0)
        if self.market_ws is not None:
            self.market_ws.stop()
            self.market_ws = None
        self.log.close()
        self.conn.close()
        self.db_lock.release()
        self.lock.release()

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
        try:
            self.watcher.config = self._load_config(self.settings.strategy_yaml)
        except Exception as exc:  # the YAML may be mid-edit: keep trading on the running config
            self.errors += 1
            self.log.error(f"mode {switch.new}: cannot load its overlay ({exc}); keeping the running config")
            return False
        self._adopt_config(self.watcher.config, f"strategy mode {switch.new}")
        return False

    def run(self) -> int:
        self._start()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        ready(f"trading {len(self.symbols)} symbols on {self.interval}")
        self._heartbeat(0.0)  # the persisted kill state is visible before the first (maybe long) catch-up
        last_hb = time.monotonic()
        try:
            while not self.stop_requested:
                started = time.monotonic()
                processed = self._loop_riding_out_exchange_errors()
                self.pinger.maybe_ping()
                if time.monotonic() - last_hb >= self.settings.heartbeat_secs or self.until_caught_up:
                    self._heartbeat(time.monotonic() - started)
                    last_hb = time.monotonic()
                status(f"last bar {self._bar_text()} processed={processed}")
                if self._maybe_switch_mode():
                    return 3
                if self.until_caught_up:
                    break
                self._sleep_to_next_loop()
        finally:
            stopping()
            self.log.info(f"trader stopped after {self.loops} loops; last bar {self._bar_text()}")
            self.close()
        return 0

    def _bar_text(self) -> str:
        """The last processed bar for a person: ISO UTC, with the epoch ms the DB rows carry."""
        if self.last_bar_t is None:
            return "none"
        return f"{iso_utc(self.last_bar_t)} (t={self.last_bar_t})"

    def _sleep_to_next_loop(self) -> None:
        period = self.settings.loop_target_secs
        deadline = (time.time() // period + 1) * period
        while not self.stop_requested and time.time() < deadline:
            time.sleep(min(0.25, max(0.0, deadline - time.time())))

    def _on_signal(self, signum, _frame) -> None:
        self.stop_requested = True
