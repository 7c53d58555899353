"""Strategy modes (primary -> fallback -> conservative -> flat) and the step-down on kill events.

A mode is a YAML overlay (`modes.<name>` in strategy_overrides.yaml) chosen by
AI_QUANT_STRATEGY_MODE. With AI_QUANT_MODE_SWITCH_ENABLE=1 each *new* kill event makes the trader
more cautious by one step, and the choice is written to AI_QUANT_STRATEGY_MODE_FILE so a restart
keeps it. It never steps back up by itself: an operator decides that.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from strategy.files import write_text_atomic

MODES = ("primary", "fallback", "conservative", "flat")
ALIASES = {
    "primary": "primary", "m1": "primary", "mode1": "primary",
    "fallback": "fallback", "m2": "fallback", "mode2": "fallback",
    "conservative": "conservative", "m3": "conservative", "mode3": "conservative", "safe": "conservative",
    "safety": "conservative",
    "flat": "flat", "halt": "flat", "pause": "flat",
}


def normalize_mode(value: str) -> str:
    mode = ALIASES.get(value.strip().lower())
    if mode is None:
        raise ValueError(f"AI_QUANT_STRATEGY_MODE={value!r} is not a strategy mode "
                         f"(use {', '.join(MODES)}; aliases m1/m2/m3, safe, halt/pause)")
    return mode


def step_down(mode: str | None) -> str:
    """One step more cautious; no mode set counts as primary; flat stays flat."""
    index = MODES.index(mode) if mode in MODES else 0
    return MODES[min(index + 1, len(MODES) - 1)]


def write_mode_file(path: str | os.PathLike, mode: str) -> None:
    """Atomic (strategy.files): systemd may restart the trader at any moment and read it."""
    write_text_atomic(path, mode + "\n")


def read_mode_file(path: str | os.PathLike) -> str | None:
    """The persisted mode, or None if absent or unreadable (a bad file must not stop the trader)."""
    try:
        return normalize_mode(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def resolve_start_mode(env: Mapping[str, str], mode_file: str | os.PathLike) -> tuple[str | None, str]:
    """(mode, source): the env var wins; else the persisted file; else no mode ("none")."""
    raw = (env.get("AI_QUANT_STRATEGY_MODE") or "").strip()
    if raw:
        return normalize_mode(raw), "env"
    persisted = read_mode_file(mode_file)
    if persisted is not None:
        return persisted, "file"
    return None, "none"


def restart_required(old: str | None, new: str | None, interval_of: Callable[[str | None], str]) -> bool:
    """True when the two modes run on different engine intervals (not hot-reloadable)."""
    return interval_of(old) != interval_of(new)


@dataclass(frozen=True)
class ModeSwitch:
    old: str | None
    new: str
    restart_required: bool
    exit_requested: bool


class ModeSwitcher:
    """Watches the RiskManager's kill_seq and steps down once per new kill event."""

    def __init__(self, mode: str | None, mode_file: str | os.PathLike, *, enabled: bool,
                 interval_of: Callable[[str | None], str], exit_on_restart_required: bool = False,
                 cooldown_s: float = 0.0, kill_seq: int = 0,
                 on_audit: Callable[[str, str | None, dict], None] | None = None) -> None:
        self.mode = mode
        self.mode_file = Path(mode_file)
        self.enabled = enabled
        self.interval_of = interval_of
        self.exit_on_restart_required = exit_on_restart_required
        self.cooldown_s = cooldown_s
        self._seen_seq = kill_seq
        self._last_switch_mono: float | None = None
        self._on_audit = on_audit

    def on_kill_state(self, kill_seq: int, monotonic: float) -> ModeSwitch | None:
        """Call once per loop with RiskManager.kill_seq; returns the switch made, if any."""
        if kill_seq <= self._seen_seq:
            return None
        self._seen_seq = kill_seq
        if not self.enabled or self.mode == "flat":
            return None
        if self._last_switch_mono is not None and monotonic - self._last_switch_mono < self.cooldown_s:
            return None
        old, new = self.mode, step_down(self.mode)
        write_mode_file(self.mode_file, new)
        self.mode = new
        self._last_switch_mono = monotonic
        needs_restart = restart_required(old, new, self.interval_of)
        switch = ModeSwitch(old, new, needs_restart, needs_restart and self.exit_on_restart_required)
        if self._on_audit is not None:
            self._on_audit("MODE_SWITCH", None, {"from": old, "to": new, "kill_seq": kill_seq,
                                                 "restart_required": needs_restart,
                                                 "exit_requested": switch.exit_requested})
        return switch
