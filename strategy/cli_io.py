"""The command-line contract every tool keeps: a refusal is one line on stderr and a documented exit
code, never a traceback, and a failed write leaves no half-written output behind.

Operators grep these lines and cron mails them, so a multi-line chain hides the cause. It lives in
`strategy/` because that package imports nothing of ours, so cpu_replay, gpu, factory and tools
can all share it (gpu must not import cpu_replay, where the first `fail()` lived).
"""

from __future__ import annotations

import difflib
import os
import sqlite3
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from strategy.files import write_text_atomic


class OutputError(ValueError):
    """An output path that cannot be written (a directory, under a file, disk full); one line."""


class ReadError(ValueError):
    """An input SQLite file the loaders could not query (a wrong schema, not a database); one line."""


@contextmanager
def reading(what: str) -> Iterator[None]:
    """Turn a SQLite error raised while reading `what` (a candle DB without an `interval` column, a
    funding table without `time`) into a ReadError naming the source, instead of a traceback from
    deep inside a loader."""
    try:
        yield
    except sqlite3.Error as exc:
        raise ReadError(f"cannot read {what}: {exc}") from None


def one_line(message: object) -> str:
    """`message` as a single line: a newline inside an exception text would break the contract."""
    return " ".join(str(message).split())


def print_error(message: object) -> None:
    """Write `message` to stderr as exactly one line and flush (the process may exit next)."""
    sys.stderr.write(one_line(message) + "\n")
    sys.stderr.flush()


def die(message: object, code: int) -> NoReturn:
    """Print one line and exit with `code`: the shared ending of every refusal."""
    print_error(message)
    raise SystemExit(code)


def os_error_text(exc: OSError) -> str:
    """'No space left on device' rather than '[Errno 28] No space left on device: /x/.tmp123'."""
    return exc.strerror or type(exc).__name__


def check_output_path(path: str | os.PathLike, flag: str = "--output") -> None:
    """Refuse an output that can never be written before the (possibly long) run starts: a directory,
    or a path below a regular file. A missing parent directory is fine: it is created on write."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{flag} {target}: is a directory")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{flag} {target}: {parent} is not a directory")
            return


def write_output(path: str | os.PathLike, text: str, flag: str = "--output") -> None:
    """Write `text` to `path`: atomically for a file (old or new, never half), directly for a device
    or FIFO (/dev/null, /dev/stdout), which an atomic rename would replace with a regular file when
    run as root. Any OSError becomes one OutputError line; the temp file is removed by the writer."""
    target = Path(path)
    check_output_path(target, flag)
    try:
        if _is_special(target):
            with open(target, "w", encoding="utf-8") as fh:
                fh.write(text)
        else:
            write_text_atomic(target, text)
    except OSError as exc:
        raise OutputError(f"{flag} {target}: cannot write: {os_error_text(exc)}") from None


def _is_special(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def did_you_mean(word: str, choices: list[str] | set[str]) -> str:
    """' (did you mean BTC?)' for a near miss such as 'btc' or 'BTCC', else a short list of what
    there is: an error that names the fix, not only the mistake."""
    names = sorted(choices)
    upper = {c.upper(): c for c in names}
    if word.upper() in upper:
        return f" (did you mean {upper[word.upper()]}?)"
    close = difflib.get_close_matches(word.upper(), list(upper), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {upper[close[0]]}?)"
    shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
    return f" (it has {shown})" if names else ""
