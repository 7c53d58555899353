"""Single-instance lock: two traders on one account would double every order.

flock(2) is released by the kernel when the process dies, even on kill -9, so a stale lock file
never blocks a restart; the file itself is left in place (deleting it would race a new holder).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class LockError(RuntimeError):
    """The lock cannot be taken (not a file, no permission); one line for the operator."""


class LockHeldError(LockError):
    """Another live process holds the lock; the message is one line for the operator."""


class InstanceLock:
    def __init__(self, path: str | os.PathLike, what: str = "trader") -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> InstanceLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise LockError(f"cannot use {self.path} as a lock file: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise LockHeldError(f"another {self.what} holds {self.path} (pid {holder}); refusing to start") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> InstanceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"


def db_lock_path(db_path: str | os.PathLike) -> Path:
    """The lock that names a trading DB itself: beside the DB's real path (symlinks resolved), so two
    traders with different AI_QUANT_LOCK_PATHs still cannot both write one DB."""
    real = Path(os.path.realpath(db_path))
    return real.with_name(real.name + ".lock")


def db_lock(db_path: str | os.PathLike) -> InstanceLock:
    return InstanceLock(db_lock_path(db_path), what=f"trader on {os.path.realpath(db_path)}")
