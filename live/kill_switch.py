"""Kill-switch vocabulary: what the env variable and the kill file may say.

Operators type these values in an emergency, so several spellings are accepted (the reference
system's aliases). The env value is validated strictly (a typo refuses to start rather than being
silently ignored); the kill file is parsed leniently because *the existence of the file* is the
operator's intent: anything that is not a clear word or a halt word means close_only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

OFF = "off"
CLOSE_ONLY = "close_only"
HALT_ALL = "halt_all"
CLEAR = "clear"

SEVERITY = {OFF: 0, CLOSE_ONLY: 1, HALT_ALL: 2}

CLEAR_WORDS = frozenset({"clear", "resume", "off", "unpause"})
CLOSE_WORDS = frozenset({"1", "true", "yes", "y", "on", "close", "close_only", "closeonly"})
HALT_WORDS = frozenset({"halt", "halt_all", "haltall", "2", "stop", "full"})
UNSET_WORDS = frozenset({"", "0", "false", "no", "n", "none"})


class KillSwitchValueError(ValueError):
    pass


def parse_env_kill(value: str | None, default_mode: str = CLOSE_ONLY) -> str | None:
    """AI_QUANT_KILL_SWITCH -> close_only | halt_all | clear | None (not set)."""
    text = (value or "").strip().lower()
    if text in UNSET_WORDS:
        return None
    if text in CLEAR_WORDS:
        return CLEAR
    if text in HALT_WORDS:
        return HALT_ALL
    if text in CLOSE_WORDS:
        return default_mode
    raise KillSwitchValueError(
        f"AI_QUANT_KILL_SWITCH={value!r} is not a kill-switch value "
        "(use close_only, halt_all or clear; aliases: 1/true/on/close, halt/2/stop/full, resume/off/unpause)"
    )


def parse_file_kill(text: str) -> str:
    """Kill-file text -> close_only | halt_all | clear. An empty file means close_only."""
    tokens = set(re.split(r"[^a-z0-9_]+", text.strip().lower())) - {""}
    if tokens & CLEAR_WORDS:
        return CLEAR
    if tokens & HALT_WORDS:
        return HALT_ALL
    return CLOSE_ONLY


@dataclass(frozen=True)
class KillFileReading:
    """What the kill file said at one poll: exists?, its verdict and a change signature."""

    exists: bool
    verdict: str | None
    signature: tuple | None


def read_kill_file(path: str | os.PathLike | None) -> KillFileReading:
    """Read the kill file; an unreadable file counts as close_only (fail closed)."""
    if not path:
        return KillFileReading(False, None, None)
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return KillFileReading(False, None, None)
    except OSError:
        return KillFileReading(True, CLOSE_ONLY, ("stat-error",))
    try:
        text = p.read_text(encoding="utf-8", errors="replace")[:4096]
    except OSError:
        return KillFileReading(True, CLOSE_ONLY, (st.st_mtime_ns, st.st_size, "read-error"))
    return KillFileReading(True, parse_file_kill(text), (st.st_mtime_ns, st.st_size, text))
