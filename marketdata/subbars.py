"""Finer sub-bars arranged under the main bars they fall in (shared by replay and sweep).

With `global.engine.exit_interval` finer than `interval` (e.g. signals on 1h, exits on 5m), exits
are decided on each 5m bar inside the hour as it closes; with `entry_interval` finer, entries too
(on the last closed main bar's indicators with the sub-bar's OHLC). Both use ONE grid of sub-bars
(``sub_bar_plan``). The kernel reads them as sub_*[symbol, j] for one main bar; this module builds
the [symbol, main bar, j] arrays from two MarketData sets on the same symbols.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class SubBarError(ValueError):
    """The exit interval cannot be nested in the main interval (one line)."""


def sub_bar_plan(interval: str, entry_interval: str | None, exit_interval: str | None) -> tuple[str | None, bool, bool]:
    """(the sub-bar interval or None, exits on sub-bars, entries on sub-bars) of a config. One grid:
    an entry and an exit interval both finer than ``interval`` must be the same (the reference's
    30m/3m/3m); otherwise one of them is the main interval (or unset)."""
    entry = entry_interval if entry_interval and entry_interval != interval else None
    exit_iv = exit_interval if exit_interval and exit_interval != interval else None
    if entry and exit_iv and entry != exit_iv:
        raise SubBarError(f"global.engine.entry_interval={entry} and exit_interval={exit_iv}: sub-bars are one grid; "
                          f"set both to the same interval, or one of them to {interval}")
    return entry or exit_iv, exit_iv is not None, entry is not None


@dataclass
class SubBars:
    open: np.ndarray       # [nsym, nbar, k]
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    valid: np.ndarray      # uint8 [nsym, nbar, k]
    close_ms: np.ndarray   # float64 [nbar, k]: close time of each sub-bar
    k: int                 # sub-bars per main bar (0 = exits on the main bar)
    # main bars [0, covered) lie inside the exit data; a later one is not decided yet (its last exit
    # bar is not in), as the trading daemon waits for it
    covered: int = -1
    exits: bool = True     # exits are decided on the sub-bars ([engine.exit_interval])
    entries: bool = False  # entries too ([engine.entry_interval])

    @classmethod
    def none(cls, nsym: int, nbar: int) -> SubBars:
        z = np.zeros((nsym, nbar, 0))
        return cls(z, z, z, z, np.zeros((nsym, nbar, 0), np.uint8), np.zeros((nbar, 0)), 0, nbar)


def build_sub_bars(main, exit_md) -> SubBars:
    """Place each exit-interval bar under the main bar containing its open time."""
    if exit_md.interval_ms >= main.interval_ms or main.interval_ms % exit_md.interval_ms:
        raise SubBarError(f"exit interval {exit_md.interval} must divide the main interval {main.interval}")
    k = main.interval_ms // exit_md.interval_ms
    nsym, nbar = len(main.symbols), len(main.times)
    shape = (nsym, nbar, k)
    o, h, lo, c = (np.full(shape, np.nan) for _ in range(4))
    valid = np.zeros(shape, np.uint8)
    close_ms = (main.times[:, None] + exit_md.interval_ms * (np.arange(k)[None, :] + 1)).astype(np.float64)
    rel = exit_md.times - main.times[0]
    b = rel // main.interval_ms
    j = (rel % main.interval_ms) // exit_md.interval_ms
    inside = (rel >= 0) & (b < nbar)
    index = {sym: i for i, sym in enumerate(exit_md.symbols)}
    for s, sym in enumerate(main.symbols):
        if sym not in index:
            continue
        e = index[sym]
        cols = np.flatnonzero(inside & exit_md.valid[e])
        o[s, b[cols], j[cols]] = exit_md.open[e, cols]
        h[s, b[cols], j[cols]] = exit_md.high[e, cols]
        lo[s, b[cols], j[cols]] = exit_md.low[e, cols]
        c[s, b[cols], j[cols]] = exit_md.close[e, cols]
        valid[s, b[cols], j[cols]] = 1
    last_open = int(exit_md.times[-1]) if len(exit_md.times) else None
    covered = 0 if last_open is None else int(np.searchsorted(
        main.times + main.interval_ms - exit_md.interval_ms, last_open, side="right"))
    return SubBars(o, h, lo, c, valid, close_ms, int(k), covered)
