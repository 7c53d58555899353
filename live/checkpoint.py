"""The daemon's engine checkpoint: the exact engine arrays after the last processed bar.

Stored in the trading DB's `engine_state` table in the same transaction as the bar's trade rows,
so a kill -9 leaves either both or neither; on restart the engine resumes bit-identically.
"""

from __future__ import annotations

import base64
import io
import uuid

import numpy as np

from cpu_replay.engine import EngineState
from live.trading_db import load_engine_state, save_engine_state

KEY = "engine"


def encode(state: EngineState, *, last_bar_t: int, symbols: list[str], windows: np.ndarray,
           config_id: str, epoch: str, flatten_seen: int = 0) -> dict:
    buf = io.BytesIO()
    np.savez(buf, states=state.states, feat=state.feat, pos=state.pos, acct=state.acct)
    return {
        "version": 1,
        "epoch": epoch,
        "last_bar_t": int(last_bar_t),
        "symbols": list(symbols),
        "windows": [int(w) for w in windows],
        "config_id": config_id,
        "flatten_seen": int(flatten_seen),
        "arrays": base64.b64encode(buf.getvalue()).decode("ascii"),
    }


def decode(data: dict) -> EngineState:
    arrays = np.load(io.BytesIO(base64.b64decode(data["arrays"])))
    return EngineState(arrays["states"], arrays["feat"], arrays["pos"], arrays["acct"])


def save(conn, state: EngineState, **meta) -> None:
    save_engine_state(conn, KEY, encode(state, **meta))


def load(conn) -> dict | None:
    return load_engine_state(conn, KEY)


def new_epoch() -> str:
    """Identifies one engine history; fill hashes include it, so a fresh DB never collides."""
    return uuid.uuid4().hex[:16]


RISK_KEY = "risk"


def save_risk(conn, snapshot: dict) -> None:
    """Latched kills and loss baselines survive a restart (saved with the engine checkpoint)."""
    save_engine_state(conn, RISK_KEY, snapshot)


def load_risk(conn) -> dict | None:
    return load_engine_state(conn, RISK_KEY)
