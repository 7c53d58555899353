"""Which (sub-)bars the trader steps next, and stepping them through the Engine.

The replay (`backtester replay`) steps each main bar as a run of kernel steps: every bar of the
finest interval the config uses inside it (the exit / entry sub-bars, e.g. the twelve 5m bars of a
1h bar), in time order, then the main bar's close. The trader takes the very same steps, each as
soon as its own bar has closed: a stop touched at 10:05 on a 5m sub-bar is sent after 10:05 (plus
the candle grace), not after 11:00 with the other eleven. Catch-up and paper trading take the same
steps too, so paper == replay holds fill for fill.

Order for main bar b (open t_b, k sub-bars of s ms): sub(b, 0) .. sub(b, k-1), close(b).
  sub(b, j) is due once t_b + (j+1)*s + grace has passed and the sub-interval candle DB holds a bar
            at or after its open (the market-data service wrote it);
  close(b)  is due once t_b + interval + grace has passed and the main candle DB holds bar b.
A step is taken only after every step before it: a late 1h candle holds back the next hour's
sub-bars, so the engine never sees time out of order.

The cursor (in the engine checkpoint, saved in the transaction of the step's trade rows) is
`last_bar_t` (open of the last main bar whose close was stepped, as before) and `last_sub_t` (open
of the last sub-bar stepped after it, None when none): a restart mid-hour continues with the next
sub-bar, none redone, none skipped.

The engine stays the one kernel: a step is `Engine.step_sub` or `Engine.step_close`, the functions
the replay loop calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marketdata.candles import MarketData, align_to_symbols
from marketdata.intervals import MarketDataError, interval_ms, normalize_interval
from marketdata.subbars import SubBarError, sub_bar_plan
from strategy.layout import NFILL


class SubStepError(ValueError):
    """An interval setup the trader cannot step (one line for the operator)."""


@dataclass(frozen=True)
class Step:
    """One kernel step: sub-bar j of the main bar opening at `bar_t`, or (j == CLOSE) its close."""

    bar_t: int      # open of the main bar the step belongs to (trades.bar_t_ms, the OMS candle time)
    j: int          # sub-bar index inside the main bar; CLOSE for the main close
    open_ms: int    # open of the step's own bar
    close_ms: int   # close of the step's own bar: the step is due after it (+ grace)

    @property
    def is_close(self) -> bool:
        return self.j == CLOSE

    @property
    def tag(self) -> str:
        """'' for a main close (ids as before sub-stepping), 's<j>' for a sub-bar: the OMS dedupe
        key and the fill hash of a sub-bar's orders carry it, so no two steps share an id."""
        return "" if self.is_close else f"s{self.j}"

    def label(self) -> str:
        return "close" if self.is_close else f"sub {self.j}"


CLOSE = -1


@dataclass(frozen=True)
class Cursor:
    """The last step taken (checkpointed)."""

    last_bar_t: int | None = None   # open of the last main bar whose close was stepped
    last_sub_t: int | None = None   # open of the last sub-bar stepped after that close

    def done(self, step: Step) -> bool:
        if self.last_bar_t is not None and step.bar_t <= self.last_bar_t:
            return True
        return not step.is_close and self.last_sub_t is not None and step.open_ms <= self.last_sub_t

    def after(self, step: Step) -> Cursor:
        if step.is_close:
            return Cursor(step.bar_t, None)
        return Cursor(self.last_bar_t, step.open_ms)

    def last_close_ms(self, iv_ms: int, sub_ms: int) -> int | None:
        """When the last stepped bar closed (the bar clock after it)."""
        if self.last_sub_t is not None:
            return self.last_sub_t + sub_ms
        return None if self.last_bar_t is None else self.last_bar_t + iv_ms

    def meta(self) -> dict:
        return {"last_bar_t": self.last_bar_t, "last_sub_t": self.last_sub_t}

    @classmethod
    def from_checkpoint(cls, saved: dict | None) -> Cursor:
        if saved is None:
            return cls()
        bar, sub = saved.get("last_bar_t"), saved.get("last_sub_t")
        return cls(None if bar is None else int(bar), None if sub is None else int(sub))

    def text(self) -> str:
        from live.trading_db import iso_utc

        if self.last_bar_t is None and self.last_sub_t is None:
            return "none"
        bar = "none" if self.last_bar_t is None else f"{iso_utc(self.last_bar_t)} (t={self.last_bar_t})"
        if self.last_sub_t is None:
            return bar
        return f"{bar}, sub-bar {iso_utc(self.last_sub_t)} (t={self.last_sub_t})"


def sub_interval(interval: str, exit_interval: str | None, entry_interval: str | None) -> tuple[str | None, bool, bool]:
    """(the sub-bar interval the engine steps below the main one or None, exits on it, entries on
    it): marketdata.subbars.sub_bar_plan, as the replay reads the config (one grid: an exit and an
    entry interval both finer than the main one must be the same), and it must divide the main one."""
    norm = [normalize_interval(iv) if iv else None for iv in (interval, entry_interval, exit_interval)]
    try:
        sub, exit_sub, entry_sub = sub_bar_plan(*norm)
    except SubBarError as exc:
        raise SubStepError(str(exc)) from None
    if sub is not None and (interval_ms(sub) > interval_ms(interval) or interval_ms(interval) % interval_ms(sub)):
        key = "exit_interval" if exit_sub else "entry_interval"
        raise SubStepError(f"global.engine.{key}={sub} must divide the main interval {interval}")
    return sub, exit_sub, entry_sub


def due_steps(cursor: Cursor, *, now_ms: int, grace_ms: int, iv_ms: int, sub_ms: int, first_bar_t: int,
              main_last_open: int | None, sub_last_open: int | None, limit: int = 1_000_000) -> list[Step]:
    """The steps to take now, in order: from the one after `cursor` up to the first that is not due.

    `first_bar_t`: where a trader without a checkpoint starts (the oldest main bar it reads).
    `main_last_open` / `sub_last_open`: open of the newest bar in the main / sub candle DB (None:
    none yet). `sub_ms` 0: no sub-bars (one close step per main bar, as before)."""
    out: list[Step] = []
    b = first_bar_t if cursor.last_bar_t is None else cursor.last_bar_t + iv_ms
    k = iv_ms // sub_ms if sub_ms else 0
    while len(out) < limit:
        for j in range(k):
            step = Step(b, j, b + j * sub_ms, b + (j + 1) * sub_ms)
            if cursor.done(step):
                continue
            if step.close_ms + grace_ms > now_ms or sub_last_open is None or sub_last_open < step.open_ms:
                return out
            out.append(step)
        close = Step(b, CLOSE, b, b + iv_ms)
        if close.close_ms + grace_ms > now_ms or main_last_open is None or main_last_open < b:
            return out
        out.append(close)
        b += iv_ms
    return out


def row_at(md: MarketData | None, t: int, nsym: int):
    """(o, h, l, c, v, valid) [nsym] of the bar opening at t in `md` (all invalid when absent)."""
    if md is not None and len(md.times):
        i = (t - int(md.times[0])) // md.interval_ms
        if 0 <= i < len(md.times) and int(md.times[i]) == t:
            return md.open[:, i], md.high[:, i], md.low[:, i], md.close[:, i], md.volume[:, i], md.valid[:, i]
    nan = np.full(nsym, np.nan)
    return nan, nan, nan, nan, nan, np.zeros(nsym, bool)


@dataclass
class Batch:
    """The candles the due steps read, and the steps."""

    md: MarketData | None            # main bars from one before the first due close (prev_valid)
    funding: np.ndarray | None       # [nsym, nbar] of md
    sub_md: MarketData | None        # sub-interval bars from the first due sub-bar
    steps: list[Step]
    nsym: int

    def main_index(self, step: Step) -> int:
        return self.main_index_at(step.bar_t)

    def main_index_at(self, bar_t: int) -> int:
        return int((bar_t - int(self.md.times[0])) // self.md.interval_ms)

    def valid_at(self, bar_t: int) -> np.ndarray:
        """The valid row of main bar bar_t (all False when it is not loaded): a sub-bar entry needs
        the previous main bar, as at a main close."""
        if self.md is not None and self.md.times[0] <= bar_t <= self.md.times[-1]:
            return self.md.valid[:, self.main_index_at(bar_t)]
        return np.zeros(self.nsym, bool)


class SubStepper:
    """The step schedule of one trader: candle DBs, intervals, cursor; runs a step on the Engine."""

    def __init__(self, *, interval: str, plan: tuple[str | None, bool, bool], candles_dir: Path, symbols: list[str],
                 grace_ms: int, load, funding_of, first_bar_t: int):
        self.interval, self.iv_ms = interval, interval_ms(interval)
        sub_iv, self.exit_sub, self.entry_sub = plan   # sub_interval(): what the Engine decides on sub-bars
        self.sub_iv = sub_iv
        self.sub_ms = interval_ms(sub_iv) if sub_iv else 0
        self.main_db = str(candles_dir / f"candles_{interval}.db")
        self.sub_db = str(candles_dir / f"candles_{sub_iv}.db") if sub_iv else None
        self.symbols = list(symbols)
        self.grace_ms = int(grace_ms)
        self.load = load                # (db, interval, start_ms=...) -> MarketData (bad rows audited)
        self.funding_of = funding_of    # MarketData -> funding [nsym, nbar]
        self.first_bar_t = int(first_bar_t)
        self.cursor = Cursor()
        self.newest: dict[str, int] = {}  # interval -> open of its newest bar seen (data-lag check)

    @classmethod
    def check_dbs(cls, interval: str, sub_iv: str | None, candles_dir: Path) -> None:
        if sub_iv and not (candles_dir / f"candles_{sub_iv}.db").exists():
            raise SubStepError(f"the engine steps {sub_iv} sub-bars (global.engine exit/entry interval) and needs "
                               f"{candles_dir / f'candles_{sub_iv}.db'} (the market-data service must keep {sub_iv} "
                               f"too: AI_QUANT_SIDECAR_INTERVALS={interval},{sub_iv})")

    def _load(self, db: str, interval: str, start_ms: int | None) -> MarketData | None:
        try:
            md = self.load(db, interval, start_ms=start_ms)
        except MarketDataError as exc:
            if str(exc).startswith("no "):
                return None   # nothing at or after start yet
            raise
        self.newest[interval] = int(md.times[-1])
        return align_to_symbols(md, self.symbols)

    def pending(self, now_ms: int) -> Batch | None:
        """The due steps and their candles; None when no step is due."""
        c = self.cursor
        start = None if c.last_bar_t is None else c.last_bar_t - self.iv_ms
        md = self._load(self.main_db, self.interval, start)
        if md is None and c.last_bar_t is None:
            return None
        sub_md = None
        if self.sub_ms:
            sub_from = c.last_sub_t + self.sub_ms if c.last_sub_t is not None else (
                self.first_bar_t if c.last_bar_t is None else c.last_bar_t + self.iv_ms)
            sub_md = self._load(self.sub_db, self.sub_iv, sub_from)
        steps = due_steps(c, now_ms=now_ms, grace_ms=self.grace_ms, iv_ms=self.iv_ms, sub_ms=self.sub_ms,
                          first_bar_t=self.first_bar_t if md is None else min(self.first_bar_t, int(md.times[0])),
                          main_last_open=None if md is None else int(md.times[-1]),
                          sub_last_open=None if sub_md is None else int(sub_md.times[-1]))
        if not steps:
            return None
        funding = self.funding_of(md) if md is not None else None
        return Batch(md, funding, sub_md, steps, len(self.symbols))

    def run(self, engine, batch: Batch, step: Step, trade: bool) -> np.ndarray:
        """Take `step` on the engine (the functions the replay loop runs); returns its fill rows.

        `trade` False (warm-up on bars too old to trade, halt_all, a refused exit's re-run): no
        decision. A main close then only feeds the indicators, as the replay's warm-up does; a
        sub-bar is skipped, unless the engine is already inside this main bar, when it is stepped
        with no symbol's bar in it so that the engine keeps its sub-bar order. A traded sub-bar after
        skipped ones first steps those the same empty way (funding owed at the hour's open is still
        charged, at the last close)."""
        nsym = len(self.symbols)
        if step.is_close:
            md, b = batch.md, batch.main_index(step)
            prev = md.valid[:, b - 1] if b > 0 else np.zeros(nsym, bool)
            return engine.step_close(step.bar_t, md.open[:, b], md.high[:, b], md.low[:, b], md.close[:, b],
                                     md.volume[:, b], md.valid[:, b], prev, batch.funding[:, b], trade=trade)
        bar, done = engine.sub_position
        inside = done > 0 and bar == step.bar_t
        if not trade and not inside:
            return np.zeros((0, NFILL))
        funding = self.bar_funding(batch, step.bar_t)
        prev = batch.valid_at(step.bar_t - self.iv_ms)
        nan, none = np.full(nsym, np.nan), np.zeros(nsym, bool)
        rows = [engine.step_sub(step.bar_t, j, nan, nan, nan, nan, none, step.bar_t + (j + 1) * self.sub_ms,
                                funding=funding, prev_valid=prev)       # sub-bars passed over while not trading
                for j in range(done if inside else 0, step.j)]
        o, h, lo, c, _v, valid = row_at(batch.sub_md, step.open_ms, nsym)
        rows.append(engine.step_sub(step.bar_t, step.j, o, h, lo, c, valid if trade else none, step.close_ms,
                                    funding=funding, prev_valid=prev))
        return rows[0] if len(rows) == 1 else np.concatenate(rows)

    def bar_funding(self, batch: Batch, bar_t: int) -> np.ndarray:
        """The funding rates of the main bar opening at bar_t (charged at its first sub-bar, before the
        main candle exists: read from the funding DB for that hour)."""
        if batch.md is not None and batch.md.times[0] <= bar_t <= batch.md.times[-1]:
            return batch.funding[:, batch.main_index_at(bar_t)]
        one = MarketData(self.interval, self.iv_ms, self.symbols, np.array([bar_t], np.int64),
                         *(np.zeros((len(self.symbols), 1)) for _ in range(5)), np.zeros((len(self.symbols), 1), bool))
        return self.funding_of(one)[:, 0]

    def check_engine(self, engine) -> str | None:
        """A problem line when the engine's own sub-bar position disagrees with the cursor (the two are
        saved in one checkpoint, so this means a checkpoint from another build or a hand-edited DB)."""
        c = self.cursor
        bar = self.first_bar_t if c.last_bar_t is None else c.last_bar_t + self.iv_ms   # the bar being stepped
        want = (None, 0) if c.last_sub_t is None else (bar, (c.last_sub_t - bar) // self.sub_ms + 1)
        bar, done = engine.sub_position
        got = (bar if done else None, done)
        if got != want:
            return (f"engine checkpoint: the engine is at sub-bar {got} but the trader's cursor at {want} "
                    f"({c.text()}); use a new AI_QUANT_DB_PATH")
        return None

    def lag(self, now_ms: int) -> tuple[str, int] | None:
        """(candle DB, ms since its newest bar closed) when a DB the steps need is > 2 of its bars
        plus the grace behind: the market-data service is not keeping it fresh."""
        for iv, db in ((self.interval, self.main_db), (self.sub_iv, self.sub_db)):
            if iv is None or iv not in self.newest:
                continue
            step = interval_ms(iv)
            lag_ms = now_ms - (self.newest[iv] + step)
            if lag_ms > 2 * step + self.grace_ms:
                return db, lag_ms
        return None
