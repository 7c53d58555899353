"""Which trader events reach a phone: audit events mapped to alert kinds and one readable text.

The audit trail records everything; an alert is for what an operator must act on now (a kill, a
rejected order, a position the trader could not close, a poisoned candle, an unreachable exchange).
Routine events (config reloads, a recovered WebSocket) stay in the audit trail only.
"""

from __future__ import annotations

UNPROTECTED = frozenset({"EXIT_NOT_FILLED", "EXIT_INCOMPLETE"})
REJECTED = frozenset({"ORDER_REJECTED", "ORDER_BLOCKED"})
DATA = frozenset({"CANDLE_SKIPPED", "WS_STALE"})


def _kill_kind(reason: str) -> str:
    if reason.startswith("safe_mode"):
        return "safe_mode"
    if reason.startswith("daily_loss"):
        return "daily_loss"
    return "kill"


def _brief(data: dict, *keys: str) -> str:
    return ", ".join(f"{k}={data[k]}" for k in keys if data.get(k) not in (None, ""))


def alert_for(event: str, symbol: str | None, data: dict) -> tuple[str, str, str | None] | None:
    """(kind, text, dedupe_key) for an audit event worth an alert, else None."""
    where = f"{symbol}: " if symbol else ""
    if event == "RISK_KILL":
        reason = str(data.get("reason", ""))
        return (_kill_kind(reason), f"{data.get('mode')} ({reason}); effective kill {data.get('effective')}",
                f"kill:{reason}:{data.get('mode')}")
    if event == "RISK_CLEAR":
        return "clear", f"cleared {', '.join(map(str, data.get('cleared', []))) or 'nothing'} by {data.get('by')}", None
    if event in REJECTED:
        return "order_rejected", where + _brief(data, "action", "side", "size", "error"), None
    if event in UNPROTECTED:
        detail = _brief(data, "action", "remaining_szi", "error")
        return "unprotected_position", f"{where}exit not done ({event}): {detail}", f"unprotected:{symbol}:{event}"
    if event == "PROTECTION_REFUSED":
        detail = _brief(data, "role", "trigger_px", "size", "error")
        return "unprotected_position", f"{where}the exchange refused its protective order: {detail}", \
            f"unprotected:{symbol}:{event}"
    if event == "PROTECTIVE_STOP_FILLED":
        # the exchange closed what the engine had not sent: the trader was down or late, or the price
        # jumped through the strategy stop; the engine has booked it (reason protective_stop)
        detail = _brief(data, "role", "size", "px", "pnl", "engine")
        return "protective_stop", f"{where}its resting protective order filled: {detail}", \
            f"protective:{symbol}:{data.get('intent_id')}"
    if event in DATA:
        return "data_lag", where + f"{event}: " + _brief(data, "problem", "t", "stale_loops", "max_age_s"), \
            f"data:{event}:{symbol}"
    if event in ("EXCHANGE_UNREACHABLE", "ENTRIES_SKIPPED"):
        return "engine_stale", f"{event}: " + _brief(data, "error", "why", "then", "bar_t_ms"), f"exchange:{event}"
    return None
