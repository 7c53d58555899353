"""Filesystem paths kept out of what the monitor serves to a client that showed no token.

An absolute DB path names the host's user, home and layout, which an unauthenticated desk (no
AIQ_MONITOR_TOKEN) should not hand to whoever reaches the port. Paths are cut to their last
component ("/home/u/ai/trading_engine.db" -> "trading_engine.db"), which still tells the operator
which file a status or warning is about. With a token set, every API request carries it (else 401),
so full paths are served.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Any

# An absolute (or ~/) path with at least one directory. The look-behind skips the host part of a
# URL ("http://host/x": its slashes follow ':' + '/' or a host character) and words like "a/b".
ABS_PATH = re.compile(r"(?<![\w/.~-])~?/(?:[^\s/'\"]+/)+([^\s/'\"]+)")


def known_paths(paths: Iterable[str | Path]) -> tuple[str, ...]:
    """Each configured DB as written and as resolved, longest first; exact matches are replaced
    before the generic pattern, so a path with spaces in it is hidden whole."""
    forms = {str(p) for p in paths} | {str(Path(p).resolve()) for p in paths}
    return tuple(sorted((f for f in forms if PurePath(f).name != f), key=len, reverse=True))


def hide_text(text: str, known: tuple[str, ...] = ()) -> str:
    for full in known:
        text = text.replace(full, PurePath(full).name)
    return ABS_PATH.sub(lambda m: m.group(1), text)


def hide_paths(value: Any, known: tuple[str, ...] = ()) -> Any:
    """A copy of a JSON-ready value with every string's paths cut to file names (keys kept as is)."""
    if isinstance(value, str):
        return hide_text(value, known)
    if isinstance(value, dict):
        return {k: hide_paths(v, known) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [hide_paths(v, known) for v in value]
    return value
