"""The gates between the strategy and real money.

Three independent switches must all say yes before an order leaves the process, so that no
single mistake (a copied env file, a wrong --mode) can trade: AI_QUANT_MODE=live,
AI_QUANT_LIVE_ENABLE truthy and AI_QUANT_LIVE_CONFIRM exactly I_UNDERSTAND_THIS_CAN_LOSE_MONEY
(case-sensitive, surrounding whitespace allowed). AI_QUANT_HARD_KILL_SWITCH, when truthy, stops
every order — exits and flat_now included — and is re-read before each send so an operator can
set it in a running service's environment file and restart, or export it for a tool.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

CONFIRM_TEXT = "I_UNDERSTAND_THIS_CAN_LOSE_MONEY"
_TRUE = ("1", "true", "yes", "y", "on")


class LiveGateError(RuntimeError):
    """One line naming the missing or wrong setting."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def live_start_problem(env: Mapping[str, str] | None = None) -> str | None:
    """Why live trading may not start (one line), or None when every gate is open."""
    env = os.environ if env is None else env
    mode = (env.get("AI_QUANT_MODE") or "paper").strip().lower()
    if mode != "live":
        return f"live trading needs AI_QUANT_MODE=live (it is {mode!r})"
    if not _truthy(env.get("AI_QUANT_LIVE_ENABLE")):
        return "live trading needs AI_QUANT_LIVE_ENABLE=1 (it is unset or false)"
    if (env.get("AI_QUANT_LIVE_CONFIRM") or "").strip() != CONFIRM_TEXT:
        return f"live trading needs AI_QUANT_LIVE_CONFIRM={CONFIRM_TEXT} (missing or different)"
    return None


def check_live_start(env: Mapping[str, str] | None = None) -> None:
    problem = live_start_problem(env)
    if problem is not None:
        raise LiveGateError(problem)


def hard_kill_active(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return _truthy(env.get("AI_QUANT_HARD_KILL_SWITCH"))


@dataclass
class SendGate:
    """Asked before every exchange write. dry_live: never sends (intents become WOULD)."""

    mode: str
    env: Mapping[str, str] | None = None

    def may_send(self) -> tuple[bool, str]:
        if self.mode != "live":
            return False, "dry_live"
        if hard_kill_active(self.env) or hard_kill_active(os.environ):
            return False, "AI_QUANT_HARD_KILL_SWITCH"
        problem = live_start_problem(self.env)
        if problem is not None:
            return False, problem
        return True, "ok"
