"""Kill-switch vocabulary: what the env variable and the kill file may say, and how it is read.

An operator writes the kill file in an emergency, often with a note ("HALT. Do NOT resume until
reviewed"). A note must never lift a kill, so the grammar is asymmetric and fails closed:

- only the whole content `clear` (any case, surrounding whitespace allowed) clears;
- otherwise any word naming a halt (halt, halt_all, haltall, stop, full) means halt_all;
- otherwise any word naming close-only (close, close_only, closeonly) means close_only;
- an empty file means close_only (its existence is the intent: `touch` pauses entries);
- anything else, and anything that cannot be read safely (not a regular file, too large, not
  UTF-8 text, owned by another user, a read error), means halt_all.

The env value follows the same words; an env value that names nothing refuses to start instead
(an operator's typo is reported, not guessed at).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

OFF = "off"
CLOSE_ONLY = "close_only"
HALT_ALL = "halt_all"
CLEAR = "clear"

SEVERITY = {OFF: 0, CLOSE_ONLY: 1, HALT_ALL: 2}

CLEAR_TEXT = "clear"
HALT_WORDS = frozenset({"halt", "halt_all", "haltall", "stop", "full"})
CLOSE_WORDS = frozenset({"close", "close_only", "closeonly"})
ENV_HALT_ALIASES = frozenset({"2"})
ENV_CLOSE_ALIASES = frozenset({"1", "true", "yes", "y", "on"})
UNSET_WORDS = frozenset({"", "0", "false", "no", "n", "none", "off"})

MAX_KILL_FILE_BYTES = 4096
APP_DIR_NAME = "openclaw-ai-quant"


class KillSwitchValueError(ValueError):
    pass


def _words(text: str) -> set[str]:
    return set(re.split(r"[^a-z0-9_]+", text.lower())) - {""}


def _named_mode(text: str) -> str | None:
    """halt_all if any word names a halt, else close_only if any names close-only, else None."""
    words = _words(text)
    if words & HALT_WORDS:
        return HALT_ALL
    if words & CLOSE_WORDS:
        return CLOSE_ONLY
    return None


def parse_env_kill(value: str | None, default_mode: str = CLOSE_ONLY) -> str | None:
    """AI_QUANT_KILL_SWITCH -> close_only | halt_all | clear | None (not set)."""
    text = (value or "").strip().lower()
    if text in UNSET_WORDS:
        return None
    if text == CLEAR_TEXT:
        return CLEAR
    if text in ENV_HALT_ALIASES:
        return HALT_ALL
    if text in ENV_CLOSE_ALIASES:
        return default_mode
    named = _named_mode(text)
    if named is not None:
        return named
    raise KillSwitchValueError(
        f"AI_QUANT_KILL_SWITCH={value!r} is not a kill-switch value "
        "(use close_only, halt_all or clear; aliases: 1/true/on/close, halt/2/stop/full; unset: 0/off/none)"
    )


def parse_file_kill(text: str) -> str:
    """Kill-file text -> close_only | halt_all | clear (see the module docstring for the grammar)."""
    stripped = text.strip()
    if stripped.lower() == CLEAR_TEXT:
        return CLEAR
    if not stripped:
        return CLOSE_ONLY
    return _named_mode(stripped) or HALT_ALL


@dataclass(frozen=True)
class KillFileReading:
    """What the kill file said at one poll: exists?, its verdict, why (when not its words) and a
    change signature (stat fields: the file is re-read only when they change)."""

    exists: bool
    verdict: str | None
    signature: tuple | None
    problem: str | None = None


def _unsafe(st: os.stat_result) -> str | None:
    """Why a kill file must not be trusted as text, or None."""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size > MAX_KILL_FILE_BYTES:
        return f"larger than {MAX_KILL_FILE_BYTES} bytes"
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}, not this user or root"
    return None


def _read_small(path: Path) -> bytes:
    """Read at most MAX_KILL_FILE_BYTES + 1 bytes without blocking (a FIFO must not hang us) and
    without following a final symlink into something endless (the caller checked it is regular)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between stat and open
            raise OSError(errno.EINVAL, "not a regular file")
        return os.read(fd, MAX_KILL_FILE_BYTES + 1)
    finally:
        os.close(fd)


def read_kill_file(path: str | os.PathLike | None, previous: KillFileReading | None = None) -> KillFileReading:
    """Poll the kill file. Unchanged stat fields reuse `previous` (no re-read every bar); anything
    unsafe or unreadable fails closed to halt_all with the reason in `problem`."""
    if not path:
        return KillFileReading(False, None, None)
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return KillFileReading(False, None, None)
    except OSError as exc:
        return KillFileReading(True, HALT_ALL, ("stat-error", exc.errno), f"cannot stat: {exc.strerror}")
    sig = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_mode, st.st_uid)
    if previous is not None and previous.signature == sig:
        return previous
    problem = _unsafe(st)
    if problem is None:
        try:
            raw = _read_small(p)
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problem = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"cannot read: {exc.strerror}"
        else:
            if len(raw) > MAX_KILL_FILE_BYTES:
                problem = f"larger than {MAX_KILL_FILE_BYTES} bytes"
            else:
                return KillFileReading(True, parse_file_kill(text), sig)
    return KillFileReading(True, HALT_ALL, sig, problem)


def default_kill_file(env: dict | None = None) -> Path:
    """The kill file when AI_QUANT_KILL_SWITCH_FILE is unset: in the user's state directory, which
    only the user can write (a file in world-writable /tmp can be planted by anyone)."""
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / APP_DIR_NAME / "kill"


def ensure_private_dir(path: Path) -> None:
    """Create the kill file's directory as 0700 when it does not exist (never loosen an existing one)."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, mode=0o700, exist_ok=True)
