"""Where numba keeps compiled kernels: a directory keyed by a hash of every compiled source file.

numba invalidates a cached function only when its own source file changes, yet our compiled
functions inline callees from other files (the engine loop inlines the kernel and the indicators).
After an upgrade a stale cache would silently run the old kernel; keying the cache directory on
the hash of all compiled sources makes any change start from a clean cache instead.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPILED_SOURCES = ("strategy", "cpu_replay", "gpu")


def sources_digest() -> str:
    h = hashlib.sha256()
    for pkg in COMPILED_SOURCES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            h.update(str(path.relative_to(ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def configure_numba_cache() -> None:
    """Point numba's cache at <cache>/openclaw-ai-quant/numba/<digest> unless the user chose one."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "openclaw-ai-quant" / "numba"
    cache_dir = str(base / sources_digest())
    os.environ["NUMBA_CACHE_DIR"] = cache_dir
    if "numba" in sys.modules:  # imported before us: numba reads the setting lazily from its config
        from numba.core import config

        config.CACHE_DIR = cache_dir
