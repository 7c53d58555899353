"""Promotion from paper to live: the spec's gates over paper trades since the deploy, then a
25 % -> 50 % -> 100 % size ramp (one clean day each) through `global.trade.size_multiplier`, with the
ramp state in the registry. Like every deploy path, it enforces the replay release blocker itself.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from factory.deploy import (
    DeployError,
    DeployResult,
    apply_override_dict,
    check_release_gate,
    identify_config,
    install_config,
    parse_config_yaml,
    try_lifecycle,
)
from factory.registry import Registry

RAMP_FRACTIONS = (0.25, 0.5, 1.0)
RAMP_STEP_MS = 24 * 3_600_000

__all__ = ["PromotionGates", "PromotionResult", "promote_to_live", "evaluate_promotion_gates",
           "read_trading_rows", "count_kill_events"]


# --- promotion gates ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PromotionGates:
    min_trades: int = 20
    min_hours: float = 24.0
    min_profit_factor: float = 1.2
    max_drawdown_pct: float = 10.0
    stress_slippage_bps: float = 20.0
    max_kill_events: int = 0


def _ts_ms(raw: Any) -> int | None:
    """Trading DB timestamps are ISO text (naive = UTC); numeric values are epoch s or ms."""
    if raw is None:
        return None
    if isinstance(raw, (int, float)):
        return int(raw if raw > 1e11 else raw * 1000)
    text = str(raw).strip()
    if text.replace(".", "", 1).isdigit():
        return _ts_ms(float(text))
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _open_ro(db_path: str | Path):
    p = Path(db_path)
    if not p.is_file():
        raise DeployError(f"{p}: trading DB not found")
    try:
        return sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=15)
    except sqlite3.Error as exc:
        raise DeployError(f"{p}: cannot open trading DB: {exc}") from None


TRADE_FIELDS = ("timestamp", "symbol", "type", "action", "price", "size", "notional", "pnl", "fee_usd", "balance")
# what a position needs to be rebuilt as a replay init state (factory.replay_gate.state_at); an older
# DB without some of these columns reads them as None
POSITION_FIELDS = ("entry_atr", "leverage", "margin_used", "confidence", "bar_t_ms")


def read_trading_rows(db_path: str | Path, since_ms: int, until_ms: int | None = None) -> list[dict]:
    con = _open_ro(db_path)
    try:
        have = {r[1] for r in con.execute("PRAGMA table_info(trades)")}
        extra = [c for c in POSITION_FIELDS if c in have]
        cur = con.execute(f"SELECT {', '.join(TRADE_FIELDS + tuple(extra))} FROM trades ORDER BY id")
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    except sqlite3.Error as exc:
        raise DeployError(f"{db_path}: trades table unreadable: {exc}") from None
    finally:
        con.close()
    out = []
    for r in rows:
        for c in POSITION_FIELDS:
            r.setdefault(c, None)
        r["t_ms"] = _ts_ms(r["timestamp"])
        if r["t_ms"] is not None and r["t_ms"] >= since_ms and (until_ms is None or r["t_ms"] < until_ms):
            out.append(r)
    return out


def count_kill_events(db_path: str | Path, since_ms: int, until_ms: int | None = None) -> int:
    con = _open_ro(db_path)
    try:
        rows = con.execute("SELECT timestamp FROM audit_events WHERE event LIKE 'RISK_KILL%'").fetchall()
    except sqlite3.Error as exc:
        raise DeployError(f"{db_path}: audit_events table unreadable: {exc}") from None
    finally:
        con.close()
    times = [_ts_ms(r[0]) for r in rows]
    return sum(1 for t in times if t is not None and t >= since_ms and (until_ms is None or t < until_ms))


def evaluate_promotion_gates(rows: list[dict], kill_events: int, *, since_ms: int, now_ms: int,
                             config_slippage_bps: float, gates: PromotionGates = PromotionGates()) -> dict:
    """The paper -> live gates over trading-DB rows since the paper deploy.

    net pnl = Σ pnl(CLOSE, REDUCE) − Σ fee_usd(all fills); profit factor on per-fill net pnl of
    CLOSE/REDUCE; drawdown = max peak-to-trough of the `balance` column in %; PnL at the stress
    slippage = net pnl − Σ notional(OPEN, ADD, REDUCE, CLOSE) × max(0, stress_bps − config_bps) / 1e4
    (each leg already paid config_bps in paper; the stress adds the difference on every leg).
    """
    fills = [r for r in rows if str(r.get("action") or "").upper() in ("OPEN", "ADD", "REDUCE", "CLOSE")]
    exits = [r for r in fills if str(r["action"]).upper() in ("REDUCE", "CLOSE")]
    closes = sum(1 for r in fills if str(r["action"]).upper() == "CLOSE")
    exit_net = [float(r.get("pnl") or 0.0) - float(r.get("fee_usd") or 0.0) for r in exits]
    entry_fees = sum(float(r.get("fee_usd") or 0.0) for r in fills if r not in exits)
    net_pnl = sum(exit_net) - entry_fees
    wins, losses = sum(x for x in exit_net if x > 0), -sum(x for x in exit_net if x < 0)
    pf = wins / losses if losses > 0 else (float("inf") if wins > 0 else 0.0)
    peak, max_dd = None, 0.0
    for r in rows:
        bal = r.get("balance")
        if bal is None:
            continue
        peak = float(bal) if peak is None else max(peak, float(bal))
        if peak > 0:
            max_dd = max(max_dd, (peak - float(bal)) / peak * 100.0)
    extra_bps = max(0.0, gates.stress_slippage_bps - config_slippage_bps)
    stress_cost = sum(abs(float(r.get("notional") or 0.0)) for r in fills) * extra_bps / 1e4
    pnl_stress = net_pnl - stress_cost
    hours = (now_ms - since_ms) / 3_600_000
    checks = [
        {"name": "evidence", "ok": closes >= gates.min_trades or hours >= gates.min_hours,
         "value": {"close_trades": closes, "hours": round(hours, 2)},
         "threshold": f">= {gates.min_trades} closed trades or >= {gates.min_hours} h"},
        {"name": "profit_factor", "ok": pf >= gates.min_profit_factor, "value": pf, "threshold": gates.min_profit_factor},
        {"name": "max_drawdown_pct", "ok": max_dd <= gates.max_drawdown_pct, "value": max_dd,
         "threshold": gates.max_drawdown_pct},
        {"name": f"pnl_at_{gates.stress_slippage_bps:g}bps", "ok": pnl_stress > 0, "value": pnl_stress, "threshold": "> 0"},
        {"name": "kill_events", "ok": kill_events <= gates.max_kill_events, "value": kill_events,
         "threshold": gates.max_kill_events},
    ]
    return {"passed": all(c["ok"] for c in checks), "checks": checks, "since_ms": since_ms, "now_ms": now_ms,
            "net_pnl": net_pnl, "stress_cost": stress_cost, "config_slippage_bps": config_slippage_bps,
            "fills": len(fills), "close_trades": closes}


# --- promotion to live on a ramp -----------------------------------------------------------------
@dataclass
class PromotionResult:
    ok: bool
    action: str  # "gates_failed" | "would_promote" | "promoted" | "wait" | "ramp_blocked" | "complete"
    config_id: str
    message: str
    gates: dict | None = None
    step: int | None = None
    size_multiplier: float | None = None
    deploy: DeployResult | None = None
    details: dict = field(default_factory=dict)


def _trade_value(data: dict, key: str, default: float) -> float:
    v = ((data.get("global") or {}).get("trade") or {}).get(key, default)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise DeployError(f"global.trade.{key} is {v!r}, not a number") from None


def _with_size_multiplier(data: dict, value: float) -> str:
    out = apply_override_dict(data, {"global.trade.size_multiplier": value})
    return yaml.safe_dump(out, sort_keys=False, default_flow_style=False)


def _paper_since(registry: Registry, config_id: str) -> int:
    deps = [d for d in registry.deployments("paper", config_id) if d["kind"] in ("deploy", "rollback")]
    if not deps:
        raise DeployError(f"config {config_id[:12]} has no paper deployment in the registry; pass since_ms")
    return int(deps[0]["ts_ms"])


def promote_to_live(paper_db: str | Path, *, config_id: str, live_yaml_path: str | Path, registry: Registry,
                    artifacts_dir: str | Path = "artifacts", since_ms: int | None = None,
                    gates: PromotionGates = PromotionGates(), apply: bool = False, dry_run: bool = False,
                    live_db: str | Path | None = None, reason: str = "promote_to_live",
                    ignore_replay_gate: bool = False, blocker_file: str | Path | None = None,
                    max_age_minutes: float | None = None, now_ms: int | None = None) -> PromotionResult:
    """Gate a paper config into live at 25 %, then advance 50 % -> 100 % one clean day at a time.

    Without apply (or with dry_run) it only evaluates and says what it would do. The ramp state is
    the registry's `ramps` row; a step advances only after RAMP_STEP_MS with zero kill events in
    the live DB since the step began.
    """
    now = int(time.time() * 1000) if now_ms is None else int(now_ms)
    text = registry.config_yaml(config_id)
    if text is None:
        raise DeployError(f"config {config_id[:12]} not found in the registry")
    data = parse_config_yaml(text, f"registry:{config_id[:12]}")
    full_id = identify_config(data, f"registry:{config_id[:12]}")
    ramp = registry.ramp(full_id, "live")
    if ramp is None:
        return _first_promotion(paper_db, full_id, data, live_yaml_path, registry, artifacts_dir, since_ms, gates,
                                apply and not dry_run, reason, ignore_replay_gate, blocker_file, max_age_minutes, now)
    return _advance_ramp(ramp, full_id, data, live_yaml_path, registry, artifacts_dir, apply and not dry_run,
                         live_db, gates, reason, ignore_replay_gate, blocker_file, max_age_minutes, now)


def _first_promotion(paper_db, config_id, data, live_yaml_path, registry, artifacts_dir, since_ms, gates, apply,
                     reason, ignore_gate, blocker_file, max_age, now) -> PromotionResult:
    since = _paper_since(registry, config_id) if since_ms is None else int(since_ms)
    rows = read_trading_rows(paper_db, since, now)
    kills = count_kill_events(paper_db, since, now)
    report = evaluate_promotion_gates(rows, kills, since_ms=since, now_ms=now, gates=gates,
                                      config_slippage_bps=_trade_value(data, "slippage_bps", 10.0))
    target_size = _trade_value(data, "size_multiplier", 1.0)
    size = target_size * RAMP_FRACTIONS[0]
    if not report["passed"]:
        failed = ", ".join(c["name"] for c in report["checks"] if not c["ok"])
        return PromotionResult(False, "gates_failed", config_id, f"promotion gates failed: {failed}", report)
    if not apply:
        return PromotionResult(True, "would_promote", config_id,
                               f"gates pass; --apply would deploy {config_id[:12]} to live at size_multiplier {size:g}",
                               report, step=0, size_multiplier=size)
    gate_line = check_release_gate(ignore_gate, False, blocker_file, max_age, now)
    res = install_config(target="live", kind="promote", next_text=_with_size_multiplier(data, size), next_id=config_id,
                   target_yaml=Path(live_yaml_path), artifacts_dir=Path(artifacts_dir), reason=reason,
                   registry=None, dry_run=False, gate_line=gate_line, now_ms=now,
                   source={"promotion_gates": report}, extra_what={"ramp_step": 0, "ramp_fraction": RAMP_FRACTIONS[0],
                                                                  "size_multiplier": size})
    registry.record_deployment("live", config_id, res.deploy_dir, "promote", res.event, ts_ms=now)
    registry.set_ramp(config_id, "live", 0, RAMP_FRACTIONS[0], target_size, now, str(live_yaml_path))
    res.event["lifecycle"] = {"promoted": try_lifecycle(registry, config_id, "live_small", f"promoted: {reason}")}
    return PromotionResult(True, "promoted", config_id, f"promoted {config_id[:12]} to live at size_multiplier "
                           f"{size:g} (ramp step 1/3)", report, step=0, size_multiplier=size, deploy=res)


def _advance_ramp(ramp, config_id, data, live_yaml_path, registry, artifacts_dir, apply, live_db, gates, reason,
                  ignore_gate, blocker_file, max_age, now) -> PromotionResult:
    step = int(ramp["step"])
    if step >= len(RAMP_FRACTIONS) - 1:
        return PromotionResult(True, "complete", config_id, f"ramp complete: {config_id[:12]} at 100 %", step=step,
                               size_multiplier=ramp["target_size_multiplier"])
    started = int(ramp["step_started_ms"])
    if now - started < RAMP_STEP_MS:
        left_h = (RAMP_STEP_MS - (now - started)) / 3_600_000
        return PromotionResult(True, "wait", config_id, f"ramp step {step + 1}/3 at {ramp['fraction']:.0%}: "
                               f"{left_h:.1f} h left before the next step", step=step)
    if live_db is None:
        raise DeployError("advancing the live ramp needs the live DB (--live-db) to check kill events")
    kills = count_kill_events(live_db, started, now)
    if kills > gates.max_kill_events:
        return PromotionResult(False, "ramp_blocked", config_id, f"ramp held at {ramp['fraction']:.0%}: {kills} "
                               f"kill event(s) since the step began", step=step, details={"kill_events": kills})
    nxt = step + 1
    size = float(ramp["target_size_multiplier"]) * RAMP_FRACTIONS[nxt]
    if not apply:
        return PromotionResult(True, "would_promote", config_id, f"--apply would advance the ramp to "
                               f"{RAMP_FRACTIONS[nxt]:.0%} (size_multiplier {size:g})", step=nxt, size_multiplier=size)
    gate_line = check_release_gate(ignore_gate, False, blocker_file, max_age, now)
    res = install_config(target="live", kind="promote", next_text=_with_size_multiplier(data, size), next_id=config_id,
                   target_yaml=Path(live_yaml_path), artifacts_dir=Path(artifacts_dir), reason=reason, registry=None,
                   dry_run=False, gate_line=gate_line, now_ms=now,
                   extra_what={"ramp_step": nxt, "ramp_fraction": RAMP_FRACTIONS[nxt], "size_multiplier": size})
    registry.record_deployment("live", config_id, res.deploy_dir, "promote", res.event, ts_ms=now)
    registry.set_ramp(config_id, "live", nxt, RAMP_FRACTIONS[nxt], ramp["target_size_multiplier"], now,
                      str(live_yaml_path))
    if nxt == len(RAMP_FRACTIONS) - 1:
        try_lifecycle(registry, config_id, "live_full", "ramp reached 100 %")
    return PromotionResult(True, "promoted", config_id, f"ramp advanced to {RAMP_FRACTIONS[nxt]:.0%} "
                           f"(size_multiplier {size:g}, step {nxt + 1}/3)", step=nxt, size_multiplier=size, deploy=res)


