"""The replay alignment gate's release blocker: one JSON file every deploy path must obey.

Fail-closed by design: a missing, unreadable, red or stale file blocks deploys, because the gate
not having run recently is as bad as it having failed. The reason is one line an operator can act
on ("release blocker stale: generated 7.2 h ago > 6.0 h (path)").
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.jsonio import write_json_atomic

DEFAULT_BLOCKER_PATH = Path("/tmp/openclaw-ai-quant/replay_gate/release_blocker.json")
DEFAULT_MAX_AGE_MINUTES = 360.0
SCHEMA_VERSION = 1
FUTURE_SKEW_MS = 5 * 60_000   # clock skew tolerated before a generated_at_ms counts as "in the future"


class ReplayGateBlocked(RuntimeError):
    """Raised by deploy functions when the blocker is not green; str() is the one-line reason."""


@dataclass(frozen=True)
class BlockerStatus:
    ok: bool
    blocked: bool
    stale: bool
    age_ms: int | None
    reasons: list[str] = field(default_factory=list)
    reason_line: str = ""
    path: str = ""
    generated_at_ms: int | None = None
    payload: dict[str, Any] | None = None


def blocker_path(explicit: str | os.PathLike | None = None) -> Path:
    """explicit -> AI_QUANT_REPLAY_GATE_BLOCKER_FILE -> $BUNDLE_ROOT/release_blocker.json -> /tmp default."""
    if explicit:
        return Path(explicit)
    env_file = os.environ.get("AI_QUANT_REPLAY_GATE_BLOCKER_FILE", "").strip()
    if env_file:
        return Path(env_file)
    root = os.environ.get("AI_QUANT_REPLAY_GATE_BUNDLE_ROOT", "").strip()
    if root:
        return Path(root) / "release_blocker.json"
    return DEFAULT_BLOCKER_PATH


def resolve_max_age_minutes(explicit: float | None = None) -> float:
    """The staleness limit; NaN when the env value is not a number (read_blocker then fails closed)."""
    if explicit is not None:
        return float(explicit)
    raw = os.environ.get("AI_QUANT_REPLAY_GATE_MAX_AGE_MINUTES", "").strip()
    try:
        return float(raw) if raw else DEFAULT_MAX_AGE_MINUTES
    except ValueError:
        return float("nan")


def _max_age_problem(explicit: float | None, limit_min: float) -> str | None:
    """Staleness cannot be switched off: a limit that is not a finite number > 0 is invalid."""
    if math.isfinite(limit_min) and limit_min > 0:
        return None
    origin = "max age" if explicit is not None else "AI_QUANT_REPLAY_GATE_MAX_AGE_MINUTES"
    shown = os.environ.get("AI_QUANT_REPLAY_GATE_MAX_AGE_MINUTES", "").strip() if explicit is None else limit_min
    return (f"release blocker check invalid: {origin}={shown!s} (must be a number of minutes > 0; "
            "staleness cannot be disabled)")


def _refuse_constant(name: str) -> float:
    """json.loads accepts NaN/Infinity, which are not JSON: such a file was not written by the gate
    (it writes with allow_nan=False), so it is unreadable, i.e. blocking, not a crash in int()."""
    raise ValueError(f"non-finite number {name} is not JSON")


def _red(path: Path, reason: str, *, stale: bool = False, age_ms: int | None = None, gen: int | None = None,
         payload: dict | None = None, reasons: list[str] | None = None) -> BlockerStatus:
    return BlockerStatus(ok=False, blocked=True, stale=stale, age_ms=age_ms, reasons=reasons or [reason],
                         reason_line=f"{reason} ({path})", path=str(path), generated_at_ms=gen, payload=payload)


def read_blocker(path: str | os.PathLike | None = None, max_age_minutes: float | None = None,
                 now_ms: int | None = None) -> BlockerStatus:
    """Green iff the file parses, schema_version is 1, blocked is the bool false, generated_at_ms > 0,
    not more than 5 min in the future and fresh (max age: a number of minutes > 0, never disabled)."""
    p = blocker_path(path)
    limit_min = resolve_max_age_minutes(max_age_minutes)
    now = int(time.time() * 1000) if now_ms is None else int(now_ms)
    problem = _max_age_problem(max_age_minutes, limit_min)
    if problem:
        return _red(p, problem)
    try:
        payload = json.loads(p.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except FileNotFoundError:
        return _red(p, "release blocker missing: the replay alignment gate has not written it")
    except (OSError, ValueError) as exc:
        return _red(p, f"release blocker unreadable: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
    if not isinstance(payload, dict):
        return _red(p, "release blocker invalid: top level is not a JSON object")
    blocked, gen = payload.get("blocked"), payload.get("generated_at_ms")
    if not isinstance(blocked, bool):
        return _red(p, f"release blocker invalid: blocked is {blocked!r}, not a bool", payload=payload)
    if not isinstance(gen, (int, float)) or isinstance(gen, bool) or not math.isfinite(gen) or gen <= 0:
        return _red(p, f"release blocker invalid: generated_at_ms is {gen!r}", payload=payload)
    schema = payload.get("schema_version")
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        return _red(p, f"release blocker invalid: schema_version is {schema!r}, expected {SCHEMA_VERSION}",
                    payload=payload)
    gen = int(gen)
    age = now - gen
    if age < -FUTURE_SKEW_MS:
        return _red(p, f"release blocker invalid: timestamp in the future (generated_at_ms {gen} is "
                       f"{-age / 60_000:.1f} min ahead of now)", age_ms=age, gen=gen, payload=payload)
    if blocked:
        codes = [str(c) for c in payload.get("reason_codes") or []] or ["unspecified"]
        return _red(p, f"release blocker red: {', '.join(codes)}", age_ms=age, gen=gen, payload=payload,
                    reasons=codes)
    if age > limit_min * 60_000:
        return _red(p, f"release blocker stale: generated {age / 3_600_000:.1f} h ago > {limit_min / 60:.1f} h",
                    stale=True, age_ms=age, gen=gen, payload=payload)
    return BlockerStatus(ok=True, blocked=False, stale=False, age_ms=age, reasons=[],
                         reason_line=f"release blocker green: generated {age / 60_000:.0f} min ago ({p})",
                         path=str(p), generated_at_ms=gen, payload=payload)


def enforce(path: str | os.PathLike | None = None, max_age_minutes: float | None = None,
            now_ms: int | None = None) -> BlockerStatus:
    """Raise ReplayGateBlocked unless green: the single check every deploy function calls."""
    status = read_blocker(path, max_age_minutes, now_ms)
    if not status.ok:
        raise ReplayGateBlocked(status.reason_line)
    return status


def write_blocker(path: str | os.PathLike | None, blocked: bool, reason_codes: list[str], report_path: str | None,
                  window: dict | None, last_passed_at_ms: int | None, *, bundle_dir: str | None = None,
                  generated_at_ms: int | None = None, detail: str = "", exit_alignment: dict | None = None) -> Path:
    """exit_alignment: the gate's per-exit delay/price summary (factory.exit_alignment), added to the
    contract's keys when the gate got that far; readers that do not know it ignore it."""
    payload = {
        "schema_version": SCHEMA_VERSION,
        "generated_at_ms": int(time.time() * 1000) if generated_at_ms is None else int(generated_at_ms),
        "blocked": bool(blocked),
        "reason_codes": list(reason_codes),
        "report_path": report_path,
        "bundle_dir": bundle_dir,
        "window": window or {},
        "last_passed_at_ms": last_passed_at_ms,
        "detail": detail,
    }
    if exit_alignment is not None:
        payload["exit_alignment"] = exit_alignment
    return write_json_atomic(blocker_path(path), payload)
