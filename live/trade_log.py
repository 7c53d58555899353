"""What the trader tells a person: one readable line per fill, and a summary after each catch-up.

An operator reading `journalctl` must see every OPEN and CLOSE as it happens, and after a catch-up
of a thousand bars one line that says where the account stands, without opening the DB.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from live.trading_db import iso_utc
from strategy.layout import A_BALANCE, A_EQUITY, FL_ACTION, POS_SIDE, POS_SIZE
from strategy.records import action_name, fill_dict, side_name


def sig(x: float, digits: int = 6) -> str:
    """A price or size in significant digits (a sub-cent perp must not print as 0.0000)."""
    return f"{x:.{digits}g}"


def fill_line(symbols: list[str], row: np.ndarray, bar_t_ms: int) -> str:
    """`fill ETH OPEN LONG 1.2 @ 2345.6 ($2814.72) reason=signal conf=high pnl=+0.00 fee=1.41 bar 2018-...`."""
    f = fill_dict(row, symbols)
    return (f"fill {f['symbol']} {f['action']} {f['side']} {sig(f['size'])} @ {sig(f['price'])} "
            f"(${f['notional']:,.2f}) reason={f['reason']} conf={f['confidence']} pnl={f['pnl']:+,.2f} "
            f"fee={f['fee']:,.2f} bar {iso_utc(bar_t_ms)}")


@dataclass
class CatchUpSummary:
    """Bars and fills of one catch-up (one loop that processed closed bars)."""

    start_equity: float
    bars: int = 0
    first_bar_t: int | None = None
    last_bar_t: int | None = None
    actions: Counter = field(default_factory=Counter)

    subs: int = 0                    # sub-bar steps (exit / entry interval) taken
    first_sub_t: int | None = None   # open of the first one: a restart shows where it went on

    def add_bar(self, bar_t_ms: int, fills: np.ndarray) -> None:
        self.bars += 1
        self.first_bar_t = bar_t_ms if self.first_bar_t is None else self.first_bar_t
        self.last_bar_t = bar_t_ms
        self.actions.update(action_name(r[FL_ACTION]) for r in fills)

    def add_step(self, step, fills: np.ndarray) -> None:
        """One step of live/substep.py: a main close counts as a bar, a sub-bar as a sub-bar."""
        if step.is_close:
            self.add_bar(step.bar_t, fills)
            return
        self.subs += 1
        self.first_sub_t = step.open_ms if self.first_sub_t is None else self.first_sub_t
        self.actions.update(action_name(r[FL_ACTION]) for r in fills)

    def line(self, acct: np.ndarray, pos: np.ndarray, symbols: list[str], kill: str) -> str:
        equity, balance = float(acct[A_EQUITY]), float(acct[A_BALANCE])
        pnl = equity - self.start_equity
        pct = 100.0 * pnl / self.start_equity if self.start_equity else 0.0
        fills = sum(n for a, n in self.actions.items() if a != "FUNDING")
        by_action = ", ".join(f"{a} {self.actions[a]}" for a in ("OPEN", "ADD", "REDUCE", "CLOSE") if self.actions[a])
        held = [f"{symbols[i]} {side_name(pos[i, POS_SIDE])} {sig(float(pos[i, POS_SIZE]))}"
                for i in np.flatnonzero(pos[:, POS_SIDE])]
        span = (f"{iso_utc(self.first_bar_t)} .. {iso_utc(self.last_bar_t)}" if self.first_bar_t is not None
                else "none")
        subs = f"{self.subs} sub-bar(s) from {iso_utc(self.first_sub_t)}; " if self.subs else ""
        return (f"caught up: {self.bars} bar(s) {span}; {subs}{fills} fill(s){f' ({by_action})' if by_action else ''}; "
                f"equity {equity:,.2f} (balance {balance:,.2f}, PnL {pnl:+,.2f}, {pct:+.2f}%); "
                f"open positions {len(held)}{': ' + ', '.join(held) if held else ''}; kill={kill}; "
                f"last bar {iso_utc(self.last_bar_t) if self.last_bar_t is not None else 'none'}")


@dataclass
class DailyTally:
    """The UTC day of the bars being processed, its opening equity and its fills: the daily summary."""

    day: str | None = None
    start_equity: float = 0.0
    actions: Counter = field(default_factory=Counter)

    def roll(self, day: str, equity: float) -> str | None:
        """Start `day`; returns the finished day's summary text when a day ended."""
        if day == self.day:
            return None
        ended = self.text(equity) if self.day is not None else None
        self.day, self.start_equity, self.actions = day, equity, Counter()
        return ended

    def add(self, fills: np.ndarray) -> None:
        self.actions.update(action_name(r[FL_ACTION]) for r in fills)

    def text(self, equity: float) -> str:
        pnl = equity - self.start_equity
        trades = ", ".join(f"{a} {n}" for a, n in sorted(self.actions.items()) if a != "FUNDING") or "no fills"
        return f"{self.day} UTC: equity {equity:,.2f}, day PnL {pnl:+,.2f}; {trades}"
