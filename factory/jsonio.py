"""Atomic JSON/text writers shared by the factory and the deploy tools.

Operators and the stage-gate script read these files while a run may still be writing them, and a
crash must never leave a half-written proof behind: every write goes to a temp file in the same
directory, is fsynced, then renamed over the target. Keys are sorted so two runs that produce the
same facts produce byte-identical files (diffable evidence).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from strategy.files import write_text_atomic  # re-exported: the factory's writers all go through it


def _jsonable(obj: Any) -> Any:
    """numpy scalars/arrays and Paths appear in reports; JSON has no NaN/inf, so those become null."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes, int, float, bool)):
        return _jsonable(obj.item())
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(_jsonable(obj), sort_keys=True, ensure_ascii=False, indent=2, allow_nan=False)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, dumps(obj) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    lines = [json.dumps(_jsonable(r), sort_keys=True, ensure_ascii=False, allow_nan=False) for r in rows]
    return write_text_atomic(path, "".join(line + "\n" for line in lines))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
