"""RiskManager: the last gate before any order, in every mode (paper included).

Why one object: the kill switch, the rate limits and the loss stops must agree on a single answer
per order, and every refusal must leave an audit trail the operator can read after an incident.
The rules in plain words are in docs/RISK.md; keep the two in step.

Contract with the daemon: call `allow_order()` before sending, `note_order_sent()` after a send
(this is what consumes rate-limit capacity), `note_fill()` after a fill is committed,
`update_equity()` after each mark-to-market (act on the returned "flatten"), and `poll()` once per
loop (kill file, UTC-day resets). No method raises on market data; programmer errors (an unknown
action) do.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from live.clock import Clock, SystemClock
from live.env import RiskLimits
from live.kill_switch import CLEAR, CLOSE_ONLY, HALT_ALL, OFF, SEVERITY, KillFileReading, read_kill_file

ENTRY_ACTIONS = frozenset({"OPEN", "ADD"})
EXIT_ACTIONS = frozenset({"REDUCE", "CLOSE"})
LATCHED_KEYS = ("drawdown", "safe_mode", "daily_loss", "manual")
EPS = 1e-9

AuditFn = Callable[[str, str | None, dict], None]


@dataclass(frozen=True)
class RiskDecision:
    allowed: bool
    reason: str = "ok"
    kill_mode: str = OFF


@dataclass(frozen=True)
class Kill:
    mode: str
    reason: str
    since_ms: int


class TokenBucket:
    """Capacity `per_min`, refilled continuously at per_min/60 tokens per second."""

    def __init__(self, per_min: int, now: float) -> None:
        self.capacity = float(per_min)
        self.rate = per_min / 60.0
        self.tokens = float(per_min)
        self.last = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now

    def has_token(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= 1.0 - EPS

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens = max(0.0, self.tokens - 1.0)


def _copy_order_state(state: tuple) -> tuple:
    import copy

    entry, exits, cancel, per_symbol, notional, last = state
    return (copy.copy(entry), copy.copy(exits), copy.copy(cancel), {k: deque(v) for k, v in per_symbol.items()},
            deque(notional), last)


def utc_day(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000.0, tz=dt.UTC).strftime("%Y-%m-%d")


class RiskManager:
    def __init__(self, limits: RiskLimits, clock: Clock | None = None, on_audit: AuditFn | None = None,
                 persisted: dict | None = None, on_persist: Callable[[dict], None] | None = None) -> None:
        self.limits = limits
        self.clock = clock or SystemClock()
        self._on_audit = on_audit
        self._on_persist = on_persist
        now = self.clock.monotonic()
        self._entry_bucket = TokenBucket(limits.max_entry_orders_per_min, now)
        self._exit_bucket = TokenBucket(limits.max_exit_orders_per_min, now)
        self._cancel_bucket = TokenBucket(limits.max_cancels_per_min, now)
        self._symbol_entries: dict[str, deque[float]] = {}
        self._notional: deque[tuple[float, float]] = deque()
        self._last_order_mono: float | None = None
        self._kills: dict[str, Kill] = {}
        self.kill_seq = 0
        self.blocks = 0
        self._file_reading: KillFileReading | None = None
        self._file_polled = False
        self._next_file_poll = now
        self._hwm: float | None = None
        self._last_equity: float | None = None
        self._day: str | None = None
        self._day_start_equity: float | None = None
        self._day_realized = 0.0
        if persisted:
            self._restore(persisted)
        self._apply_env_kill()
        self.poll(force=True)

    # ----------------------------------------------------------------- kill state
    def _emit(self, event: str, symbol: str | None, data: dict) -> None:
        if self._on_audit is not None:
            self._on_audit(event, symbol, data)

    def _apply_env_kill(self) -> None:
        env_kill = self.limits.kill_switch
        if env_kill == CLEAR:
            self.clear(by="env")
        elif env_kill in (CLOSE_ONLY, HALT_ALL):
            self._set_kill("env", env_kill, "env")

    def _set_kill(self, key: str, mode: str, reason: str) -> None:
        old = self._kills.get(key)
        if old is not None and old.mode == mode and old.reason == reason:
            return  # idempotent: the kill keeps its original since
        is_new = old is None or old.reason != reason
        since = self.clock.now_ms() if is_new else old.since_ms
        self._kills[key] = Kill(mode, reason, since)
        if is_new:
            self.kill_seq += 1
        self._emit("RISK_KILL", None, {"mode": mode, "reason": reason, "source": key, "since_ms": since,
                                       "effective": self.kill_mode})
        if key in LATCHED_KEYS:
            self._persist()

    def _remove_kill(self, key: str, by: str) -> None:
        old = self._kills.pop(key, None)
        if old is None:
            return
        self._emit("RISK_CLEAR", None, {"cleared": [old.reason], "by": by, "effective": self.kill_mode})
        if key in LATCHED_KEYS:
            self._persist()

    def kill(self, mode: str = CLOSE_ONLY, reason: str = "manual") -> None:
        """Operator/health kill; latched like the risk kills."""
        if mode not in (CLOSE_ONLY, HALT_ALL):
            raise ValueError(f"kill mode must be close_only or halt_all, not {mode!r}")
        self._set_kill("manual", mode, reason)

    def clear(self, by: str = "manual") -> None:
        """Explicit clear: ends every kill and restarts the drawdown and daily-loss baselines."""
        cleared = [k.reason for k in self._kills.values()]
        self._kills.clear()
        if self._last_equity is not None:
            self._hwm = self._last_equity
            self._day_start_equity = self._last_equity
        self._day_realized = 0.0
        self._emit("RISK_CLEAR", None, {"cleared": cleared, "by": by, "effective": OFF})
        self._persist()

    def _top_kill(self) -> Kill | None:
        if not self._kills:
            return None
        return min(self._kills.values(), key=lambda k: (-SEVERITY[k.mode], k.since_ms))

    @property
    def kill_mode(self) -> str:
        top = self._top_kill()
        return OFF if top is None else top.mode

    # ----------------------------------------------------------------- polling
    def poll(self, force: bool = False) -> None:
        """Kill-file poll (every kill_switch_poll_s) and the UTC-midnight daily reset."""
        self._roll_day(self.clock.now_ms())
        now = self.clock.monotonic()
        if force or now >= self._next_file_poll:
            self._next_file_poll = now + self.limits.kill_switch_poll_s
            self._poll_file()

    def _poll_file(self) -> None:
        path = self.limits.kill_switch_file
        if path is None:
            return
        reading = read_kill_file(path, self._file_reading)
        first, self._file_polled = not self._file_polled, True
        changed = reading.signature != (self._file_reading.signature if self._file_reading else None)
        self._file_reading = reading
        if not reading.exists:
            self._remove_kill("file", by="file_removed")
        elif reading.verdict == CLEAR:
            self._remove_kill("file", by=f"file:{path}")
            if changed and not first:  # a clear left over from before the start is not a new order
                self.clear(by=f"file:{path}")
        else:
            reason = f"file:{path}" if reading.problem is None else f"file:{path} ({reading.problem})"
            self._set_kill("file", reading.verdict, reason)

    def _roll_day(self, ts_ms: int) -> None:
        day = utc_day(ts_ms)
        if self._day is not None and day <= self._day:
            return
        had_day = self._day is not None
        self._day = day
        self._day_realized = 0.0
        self._day_start_equity = self._last_equity
        if had_day:
            self._remove_kill("daily_loss", by="utc_midnight")
        self._persist()

    # ----------------------------------------------------------------- orders
    def allow_order(self, symbol: str, action: str, side: str, notional_usd: float, equity_usd: float,
                    positions_notional_usd: float) -> RiskDecision:
        action = action.upper()
        if action not in ENTRY_ACTIONS and action not in EXIT_ACTIONS:
            raise ValueError(f"allow_order: action must be OPEN/ADD/REDUCE/CLOSE, not {action!r}")
        self.poll()
        reason = self._block_reason(symbol, action, notional_usd, equity_usd, positions_notional_usd)
        mode = self.kill_mode
        if reason is None:
            return RiskDecision(True, "ok", mode)
        self.blocks += 1
        self._emit("RISK_BLOCK", symbol, {"action": action, "side": side, "notional_usd": notional_usd,
                                          "reason": reason, "kill": mode})
        return RiskDecision(False, reason, mode)

    def _block_reason(self, symbol: str, action: str, notional: float, equity: float,
                      positions_notional: float) -> str | None:
        mode = self.kill_mode
        if mode == HALT_ALL:
            return f"kill:{HALT_ALL}"
        is_entry = action in ENTRY_ACTIONS
        if is_entry and mode == CLOSE_ONLY:
            return f"kill:{CLOSE_ONLY}"
        now = self.clock.monotonic()
        gap_ms = self.limits.min_order_gap_ms
        if gap_ms > 0 and self._last_order_mono is not None and (now - self._last_order_mono) * 1000 < gap_ms:
            return "min_order_gap"
        if not is_entry:
            return None if self._exit_bucket.has_token(now) else "exit_rate"
        return self._entry_block_reason(symbol, notional, equity, positions_notional, now)

    def _entry_block_reason(self, symbol: str, notional: float, equity: float, positions_notional: float,
                            now: float) -> str | None:
        cap = self.limits.max_leverage_exposure
        if cap > 0:
            if not equity or equity <= 0:
                return "exposure:no_equity"
            if (abs(positions_notional) + abs(notional)) / equity > cap + EPS:
                return "exposure"
        if not self._entry_bucket.has_token(now):
            return "entry_rate"
        window = self._prune_symbol(symbol, now)
        if len(window) >= self.limits.max_entry_orders_per_min_per_symbol:
            return "entry_rate_symbol"
        max_notional = self.limits.max_notional_per_window_usd
        if max_notional > 0:
            self._prune_notional(now)
            if sum(n for _, n in self._notional) + abs(notional) > max_notional + EPS:
                return "notional_window"
        return None

    def _prune_symbol(self, symbol: str, now: float) -> deque[float]:
        window = self._symbol_entries.setdefault(symbol, deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        return window

    def _prune_notional(self, now: float) -> None:
        while self._notional and self._notional[0][0] <= now - self.limits.notional_window_s:
            self._notional.popleft()

    def note_order_sent(self, symbol: str, action: str, notional: float) -> None:
        """Consumes the rate-limit capacity that allow_order() checked."""
        now = self.clock.monotonic()
        self._last_order_mono = now
        if action.upper() in ENTRY_ACTIONS:
            self._entry_bucket.take(now)
            self._prune_symbol(symbol, now).append(now)
            self._notional.append((now, abs(notional)))
        else:
            self._exit_bucket.take(now)

    def order_state(self) -> tuple:
        """The rate-limit state (buckets, windows, last order time), so a caller that reserves
        capacity for orders it may still withdraw (the daemon re-running a bar) can roll back.
        Taken once per (sub-)bar step, so it copies the structure (buckets hold floats only, the
        windows are deques of floats/tuples) rather than deepcopy, which cost ~0.5 ms a step."""
        return _copy_order_state((self._entry_bucket, self._exit_bucket, self._cancel_bucket, self._symbol_entries,
                                  self._notional, self._last_order_mono))

    def restore_order_state(self, state: tuple) -> None:
        (self._entry_bucket, self._exit_bucket, self._cancel_bucket, self._symbol_entries, self._notional,
         self._last_order_mono) = _copy_order_state(state)

    def allow_cancel(self, symbol: str | None = None) -> RiskDecision:
        """Cancels reduce risk, so no kill blocks them; only the cancel rate does."""
        if self._cancel_bucket.has_token(self.clock.monotonic()):
            return RiskDecision(True, "ok", self.kill_mode)
        self.blocks += 1
        self._emit("RISK_BLOCK", symbol, {"action": "CANCEL", "reason": "cancel_rate"})
        return RiskDecision(False, "cancel_rate", self.kill_mode)

    def note_cancel_sent(self) -> None:
        self._cancel_bucket.take(self.clock.monotonic())

    # ----------------------------------------------------------------- pnl and equity
    def note_fill(self, pnl_usd: float, is_close: bool, ts_ms: int) -> None:
        """Realised pnl (net of fees) of a CLOSE/REDUCE fill counts toward the UTC-day loss."""
        self._roll_day(max(ts_ms, self.clock.now_ms()))
        if not is_close or utc_day(ts_ms) != self._day:
            return
        self._day_realized += float(pnl_usd)
        self._persist()
        pct, base = self.limits.max_daily_loss_pct, self._day_start_equity
        if pct > 0 and base and base > 0 and self._day_realized <= -pct / 100.0 * base + EPS:
            self._set_kill("daily_loss", CLOSE_ONLY, f"daily_loss:{self._day}")

    def update_equity(self, equity_usd: float, ts_ms: int) -> list[str]:
        """Mark-to-market: drawdown kills; returns ["flatten"] once when safe mode trips."""
        self._roll_day(ts_ms)
        equity = float(equity_usd)
        self._last_equity = equity
        if self._day_start_equity is None:
            self._day_start_equity = equity
        if self._hwm is None or equity > self._hwm:
            self._hwm = equity
            self._persist()
        if self._hwm <= 0:
            return []
        dd_pct = (self._hwm - equity) / self._hwm * 100.0
        actions: list[str] = []
        if self.limits.max_drawdown_pct > 0 and dd_pct >= self.limits.max_drawdown_pct - EPS:
            self._set_kill("drawdown", CLOSE_ONLY, "drawdown")
        safe = self.limits.safe_mode_drawdown_pct
        if safe > 0 and dd_pct >= safe - EPS and "safe_mode" not in self._kills:
            self._set_kill("safe_mode", CLOSE_ONLY, "safe_mode")
            actions.append("flatten")
        return actions

    # ----------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        top = self._top_kill()
        return {
            "kill": OFF if top is None else top.mode,
            "kill_reason": None if top is None else top.reason,
            "kill_since_ms": None if top is None else top.since_ms,
            "kill_seq": self.kill_seq,
            "kills": [{"source": k, "mode": v.mode, "reason": v.reason, "since_ms": v.since_ms}
                      for k, v in self._kills.items()],
            "blocks": self.blocks,
            "hwm": self._hwm,
            "equity": self._last_equity,
            "day": self._day,
            "day_start_equity": self._day_start_equity,
            "day_realized_pnl": self._day_realized,
        }

    def snapshot(self) -> dict[str, Any]:
        """What must survive a restart: latched kills and the loss baselines."""
        return {
            "latched": {k: {"mode": v.mode, "reason": v.reason, "since_ms": v.since_ms}
                        for k, v in self._kills.items() if k in LATCHED_KEYS},
            "hwm": self._hwm, "day": self._day, "day_start_equity": self._day_start_equity,
            "day_realized": self._day_realized, "last_equity": self._last_equity,
        }

    def _persist(self) -> None:
        if self._on_persist is not None:
            self._on_persist(self.snapshot())

    def _restore(self, snap: dict) -> None:
        for key, kill in (snap.get("latched") or {}).items():
            if key in LATCHED_KEYS and kill.get("mode") in (CLOSE_ONLY, HALT_ALL):
                self._kills[key] = Kill(kill["mode"], str(kill.get("reason", key)), int(kill.get("since_ms", 0)))
        self.kill_seq = len(self._kills)
        self._hwm = snap.get("hwm")
        self._day = snap.get("day")
        self._day_start_equity = snap.get("day_start_equity")
        self._day_realized = float(snap.get("day_realized") or 0.0)
        self._last_equity = snap.get("last_equity")
