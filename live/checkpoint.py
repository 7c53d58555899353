"""The daemon's engine checkpoint: the exact engine arrays after the last processed (sub-)bar.

A checkpoint may fall between two sub-bars of a main bar: the arrays carry everything the kernel
keeps across them (strategy.layout: POS.SEEN_CLOSE, SUB_FIRED, SUB_MISSING; A.SUB_BAR_OPEN,
SUB_NEXT, BAR_OPENS), and ``sub_bar_open`` / ``sub_next`` repeat where the bar stands (the main bar
whose sub-bars are being stepped, and the index of the next one; -1 / 0 right after a main close).

Stored in the trading DB's `engine_state` table in the same transaction as the bar's trade rows,
so a kill -9 leaves either both or neither; on restart the engine resumes bit-identically.

A short history (`engine_checkpoints`, at most one per hour of bar time, HISTORY_HOURS kept) lets
the replay alignment gate start the canonical replay from the trader's exact state — streaming
indicators included — before the window it checks, so any difference it finds is a real one.
"""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import uuid

import numpy as np

from cpu_replay.engine import EngineState
from live.trading_db import load_engine_state, save_engine_state
from strategy.layout import A_SUB_BAR_OPEN, A_SUB_NEXT, NACCT, NPOS

KEY = "engine"
VERSION = 2  # 2: the sub-bar step (columns carried between sub-bars; sub_bar_open / sub_next)
HISTORY_EVERY_MS = 3_600_000
HISTORY_HOURS = 72


def encode(state: EngineState, *, last_bar_t: int | None, symbols: list[str], windows: np.ndarray,
           config_id: str, epoch: str, flatten_seen: int = 0, last_sub_t: int | None = None) -> dict:
    """`last_bar_t`: open of the last main bar whose close the engine stepped; `last_sub_t`: open of
    the last sub-bar (exit / entry interval) stepped after it, None at a main-bar boundary
    (live/substep.py: a restart continues with the next sub-bar)."""
    buf = io.BytesIO()
    np.savez(buf, states=state.states, feat=state.feat, pos=state.pos, acct=state.acct)
    return {
        "version": VERSION,
        "sub_bar_open": int(state.acct[A_SUB_BAR_OPEN]),
        "sub_next": int(state.acct[A_SUB_NEXT]),
        "epoch": epoch,
        "last_bar_t": None if last_bar_t is None else int(last_bar_t),
        "last_sub_t": None if last_sub_t is None else int(last_sub_t),
        "symbols": list(symbols),
        "windows": [int(w) for w in windows],
        "config_id": config_id,
        "flatten_seen": int(flatten_seen),
        "arrays": base64.b64encode(buf.getvalue()).decode("ascii"),
    }


def decode(data: dict) -> EngineState:
    """The engine state of a checkpoint; one of another engine layout (an older release) is refused
    with one line rather than resumed with its columns shifted."""
    arrays = np.load(io.BytesIO(base64.b64decode(data["arrays"])))
    pos, acct = arrays["pos"], arrays["acct"]
    if data.get("version") != VERSION or pos.shape[1] != NPOS or acct.shape[0] != NACCT:
        raise ValueError(f"engine checkpoint version {data.get('version')} with {pos.shape[1]} position / "
                         f"{acct.shape[0]} account columns: this engine needs version {VERSION} with {NPOS} / "
                         f"{NACCT} (start from a fresh trading DB, or replay to rebuild the state)")
    return EngineState(arrays["states"], arrays["feat"], pos, acct)


def save(conn, state: EngineState, **meta) -> None:
    data = encode(state, **meta)
    save_engine_state(conn, KEY, data)
    save_history(conn, data)


def load(conn) -> dict | None:
    return load_engine_state(conn, KEY)


def save_history(conn, data: dict) -> None:
    """Keep `data` (an encoded checkpoint) if its hour has none yet; drop the ones past retention.
    Only checkpoints at a main close are kept: the alignment gate resumes a replay after a whole bar."""
    if data.get("last_sub_t") is not None or data.get("last_bar_t") is None or int(data.get("sub_next", 0)) > 0:
        return
    t = int(data["last_bar_t"])
    hour = t // HISTORY_EVERY_MS
    newest = conn.execute("SELECT MAX(bar_t_ms) FROM engine_checkpoints").fetchone()[0]
    if newest is not None and int(newest) // HISTORY_EVERY_MS >= hour:
        return
    conn.execute("INSERT OR REPLACE INTO engine_checkpoints (bar_t_ms, value_json) VALUES (?, ?)",
                 (t, json.dumps(data, sort_keys=True)))
    conn.execute("DELETE FROM engine_checkpoints WHERE bar_t_ms < ?", (t - HISTORY_HOURS * 3_600_000,))


def load_at_or_before(conn, bar_t_ms: int) -> dict | None:
    """The newest kept checkpoint whose last processed bar opened at or before `bar_t_ms`."""
    try:
        row = conn.execute("SELECT value_json FROM engine_checkpoints WHERE bar_t_ms <= ? "
                           "ORDER BY bar_t_ms DESC LIMIT 1", (int(bar_t_ms),)).fetchone()
    except sqlite3.OperationalError:  # a trading DB from before the history existed
        return None
    return None if row is None else json.loads(row[0])


def new_epoch() -> str:
    """Identifies one engine history; fill hashes include it, so a fresh DB never collides."""
    return uuid.uuid4().hex[:16]


RISK_KEY = "risk"


def save_risk(conn, snapshot: dict) -> None:
    """Latched kills and loss baselines survive a restart (saved with the engine checkpoint)."""
    save_engine_state(conn, RISK_KEY, snapshot)


def load_risk(conn) -> dict | None:
    return load_engine_state(conn, RISK_KEY)
