"""Which trading DB an operator tool reads, resolved the way the daemon resolves it, and checked.

A tool that guesses its own default reads a stale or empty file while the daemon writes another
one (AI_QUANT_DB_PATH=/srv/paper.db), and answers "balance: null" with exit 0. So the path comes
from `live.env.load_settings`, the daemon's own parser (AI_QUANT_MODE picks the default file,
AI_QUANT_DB_PATH overrides it, relative paths are anchored at the repo root), and the file is
opened read-only and refused in one line unless it really is a trading DB.

Precedence for a tool that reads the `paper` or `live` DB: AI_QUANT_PAPER_DB_PATH /
AI_QUANT_LIVE_DB_PATH (a tool-only override), else the DB of a daemon of that family started with
this environment: AI_QUANT_DB_PATH counts only when AI_QUANT_MODE is of the same family (the live
env file's AI_QUANT_DB_PATH is never the paper DB), else the mode's default file.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from live.env import MODES, EnvError, env_path, load_settings

SOURCES = ("paper", "live")
SOURCE_ENV = {"paper": "AI_QUANT_PAPER_DB_PATH", "live": "AI_QUANT_LIVE_DB_PATH"}


class TradingDbUnavailable(Exception):
    """The trading DB cannot be read (missing, a directory, not SQLite, no trades table); one line."""


def source_of_mode(mode: str) -> str:
    """paper -> paper; dry_live and live share the live DB."""
    return "paper" if mode == "paper" else "live"


def daemon_db_path(source: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The DB a `source` daemon (None: the environment's own mode) would open with this environment.
    Raises TradingDbUnavailable when the environment is one the daemon itself would refuse."""
    env = os.environ if env is None else env
    mode = (env.get("AI_QUANT_MODE") or "").strip().lower() or "paper"
    if mode not in MODES:
        raise TradingDbUnavailable(f"AI_QUANT_MODE={mode!r} must be one of {', '.join(MODES)}")
    source = source or source_of_mode(mode)
    explicit = env_path(env, SOURCE_ENV[source], None)
    if explicit is not None:
        return explicit
    run_env = dict(env)
    if source_of_mode(mode) != source:  # another daemon's AI_QUANT_DB_PATH is not this one's
        run_env.update(AI_QUANT_MODE=source, AI_QUANT_DB_PATH="")
    try:
        return load_settings(run_env).db_path
    except EnvError as exc:
        raise TradingDbUnavailable(f"environment refused as the daemon would refuse it: {exc} "
                                   "(fix it or pass --db)") from None


def open_trading_db_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection (sqlite3.Row rows) to an existing trading DB; never creates a file."""
    if not path.exists():
        raise TradingDbUnavailable(f"{path}: no such trading DB")
    if not path.is_file():
        raise TradingDbUnavailable(f"{path}: not a file, not a trading DB")
    if path.stat().st_size == 0:
        raise TradingDbUnavailable(f"{path}: empty file, not a trading DB")
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise TradingDbUnavailable(f"{path}: unreadable ({exc})") from None
    conn.row_factory = sqlite3.Row
    try:
        has_trades = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='trades'").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        raise TradingDbUnavailable(f"{path}: unreadable ({exc})") from None
    if not has_trades:
        conn.close()
        raise TradingDbUnavailable(f"{path}: not a trading DB (no trades table)")
    return conn
