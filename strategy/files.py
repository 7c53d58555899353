"""The one way this project writes a file a reader may be watching: temp file beside the target,
fsync, rename, fsync the directory. A reader (a trader hot-reloading its YAML, the stage gate
reading selection.json, systemd reading a mode file) sees the old file or the new one, never half.

It lives in `strategy/` because that package imports nothing of ours, so every layer may use it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str, *, mode: int | None = None) -> Path:
    """Replace `path` with `text` (UTF-8) atomically; `mode` chmods the file before it appears."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target
