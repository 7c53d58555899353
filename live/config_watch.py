"""Hot reload of the strategy YAML by mtime/size.

An operator editing the YAML on a running trader must never take it down: a broken file keeps
the last good config and is reported once (the daemon writes it to runtime_logs), and a change of
engine.interval (which needs new candles and indicator warm-up) is reported as "restart required"
while the running config stays in force.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ReloadResult:
    changed: bool                 # a new config is now current
    config: Any                   # the current (last good) config
    error: str | None = None      # one line, reported once per broken version of the file
    restart_required: bool = False
    message: str | None = None    # what to log ("Config reloaded ..." / the restart notice)


def _interval_of(cfg: Any) -> Any:
    return getattr(cfg, "interval", None)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if exc.__class__.__name__ == "ConfigError" or isinstance(exc, OSError):
        return text
    return f"{exc.__class__.__name__}: {text}"


class ConfigWatcher:
    """`loader(path)` is e.g. `lambda p: strategy.config.load_config(p, mode=m, live=is_live)`."""

    def __init__(self, path: str | os.PathLike, loader: Callable[[Path], Any]) -> None:
        self.path = Path(path)
        self.loader = loader
        self._signature = self._stat_signature()
        self.config = self._load()  # a broken file at start is the caller's startup error
        self._reported: tuple | None = None

    def _stat_signature(self) -> tuple | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> Any:
        st = self.path.stat()
        if st.st_mode & stat.S_IWOTH:
            raise PermissionError(f"{self.path}: world-writable config refused (chmod o-w)")
        return self.loader(self.path)

    def check(self) -> ReloadResult:
        """Cheap when nothing changed (one stat); call it every loop."""
        signature = self._stat_signature()
        if signature == self._signature:
            return ReloadResult(False, self.config)
        self._signature = signature
        if signature is None:
            return self._report(("missing",), f"{self.path}: file missing; keeping the last good config")
        try:
            new = self._load()
        except Exception as exc:  # any loader failure keeps the trader on its last good config
            return self._report(signature, f"{self.path}: {_one_line(exc)}; keeping the last good config")
        self._reported = None
        old_iv, new_iv = _interval_of(self.config), _interval_of(new)
        if old_iv != new_iv:
            return ReloadResult(False, self.config, restart_required=True,
                                message=f"{self.path}: engine.interval changed {old_iv} -> {new_iv}: "
                                        "restart required (keeping the running config)")
        old_id = getattr(self.config, "config_id", None)
        self.config = new
        new_id = getattr(new, "config_id", None)
        return ReloadResult(True, new, message=f"Config reloaded from {self.path} (config_id {old_id} -> {new_id})")

    def _report(self, key: tuple, error: str) -> ReloadResult:
        if self._reported == key:
            return ReloadResult(False, self.config)
        self._reported = key
        return ReloadResult(False, self.config, error=error)
