"""Run-level evidence: what the data is, which candidates behave alike, how much of the winner is
luck (PBO), and how the selection procedure does out of sample (walk-forward).

Why a module of its own: these steps judge the *run* (the sweep and its selection rule), not one
candidate, and every candidate's gates then read the same result. The pipeline calls the
``step_*`` functions as steps of the run directory; each writes its JSON beside the others.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from factory.jsonio import write_json_atomic, write_jsonl_atomic

SYNTHETIC_LABEL = "SYNTHETIC DEMO DATA"
TRACE_CHUNK = 512


# ----- data label -------------------------------------------------------------------------------
def _db_is_synthetic(db: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT value FROM demo_meta WHERE key = 'synthetic'").fetchone()
    except sqlite3.Error:  # no demo_meta table: real data
        return False
    return bool(row) and str(row[0]).lower() == "true"


def data_label(db_files: list[Path]) -> dict[str, Any]:
    """Whether any candle DB is marketdata.demo's synthetic set (its demo_meta table says so)."""
    synthetic = [str(p) for p in db_files if _db_is_synthetic(p)]
    return {"synthetic": bool(synthetic), "synthetic_dbs": synthetic,
            "label": SYNTHETIC_LABEL if synthetic else "market data",
            "warning": (f"{SYNTHETIC_LABEL}: generated prices, not a market; these results say nothing about "
                        "real trading") if synthetic else None}


# ----- behaviours (trace) -----------------------------------------------------------------------
def trade_checksum(trades: list[dict[str, Any]]) -> str:
    """sha256 of the trade list (symbol, side, entry/exit time, size, pnl, reasons): two configs with
    the same checksum traded identically on this data."""
    keys = ("symbol", "side", "entry_time_ms", "exit_time_ms", "size", "pnl", "entry_reason", "exit_reason")
    text = json.dumps([[t.get(k) for k in keys] for t in trades], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def trace_pool(rows: list[dict[str, Any]], modes: list[str], shortlist: int, pbo_candidates: int) -> list[dict[str, Any]]:
    """Rows worth a trace: each sort mode's top candidates for the shortlist (2x deep, so collapsing
    duplicates still fills it) and the first mode's top ``pbo_candidates`` for PBO."""
    from factory.shortlist import rank_rows

    pool: dict[str, dict[str, Any]] = {}
    for row in rank_rows(rows, modes[0], pbo_candidates):
        pool.setdefault(str(row["config_id"]), row)
    for mode in modes:
        for row in rank_rows(rows, mode, shortlist * 2):
            pool.setdefault(str(row["config_id"]), row)
    return list(pool.values())


def trace_rows(inp, pool: list[dict[str, Any]], sweep: dict[str, Any], initial_balance: float) -> list[list[dict]]:
    """Trade lists of the pool's configs, in chunks sized by their sweep trade counts."""
    from gpu.api import trace_candidates

    out: list[list[dict]] = []
    for lo in range(0, len(pool), TRACE_CHUNK):
        chunk = pool[lo:lo + TRACE_CHUNK]
        most = max(int(r.get("total_trades") or 0) for r in chunk)
        out += trace_candidates(inp.base_cfg, [r.get("overrides") or {} for r in chunk], inp.md, inp.funding,
                                initial_balance=initial_balance, backend=sweep["backend"],
                                precision=sweep["precision"], lookback=inp.spec.lookback, exit_md=inp.exit_md,
                                max_trades=most + 8)
    return out


def step_behaviours(run_path: Path, inp, sweep: dict[str, Any], rows: list[dict[str, Any]], initial_balance: float,
                    log) -> dict[str, Any]:
    """Trace the candidate pool once: trade-list checksums (shortlist collapse) and the PBO input."""
    from factory import overfitting

    p = inp.profile
    pool = trace_pool(rows, p.sort_modes, p.shortlist, p.overfitting.candidates)
    trades = trace_rows(inp, pool, sweep, initial_balance)
    checks = {str(r["config_id"]): trade_checksum(t) for r, t in zip(pool, trades, strict=True)}
    write_jsonl_atomic(run_path / "sweeps" / "behaviours.jsonl",
                       [{"config_id": cid, "trade_checksum": c} for cid, c in checks.items()])
    log.write(f"traced {len(pool)} candidates: {len(set(checks.values()))} distinct behaviours\n")
    ranked = [str(r["config_id"]) for r in pool][: p.overfitting.candidates]
    pbo, pbo_error = _pbo(inp, pool, trades, ranked, p.overfitting.blocks, initial_balance)
    n_trials = int(sweep.get("candidates_evaluated") or len(rows))
    out = {"checksums": checks, "pbo": pbo, "pbo_error": pbo_error, "n_trials": n_trials,
           "sharpe_variance": overfitting.sweep_sharpe_variance(rows), "max_pbo": p.overfitting.max_pbo,
           "min_deflated_sharpe": p.overfitting.min_deflated_sharpe,
           "distinct_behaviours": len(set(checks.values())), "traced": len(pool)}
    write_json_atomic(run_path / "overfitting" / "overfitting.json", {k: v for k, v in out.items() if k != "checksums"})
    return out


def _pbo(inp, pool, trades, ranked: list[str], blocks: int, initial_balance: float):
    """CSCV over the first-mode top candidates, one distinct behaviour each (duplicates would only
    tie with themselves); four periods per block over the tradable span."""
    from factory import overfitting

    first: dict[str, list[dict]] = {}
    by_id = {str(r["config_id"]): t for r, t in zip(pool, trades, strict=True)}
    for cid in ranked:
        first.setdefault(trade_checksum(by_id[cid]), by_id[cid])
    lists = list(first.values())
    start = int(inp.md.times[inp.spec.lookback])
    end = int(inp.md.times[-1]) + int(inp.md.interval_ms)
    try:
        matrix = overfitting.period_returns(lists, start, end, blocks * 4, initial_balance)
        return overfitting.cscv_pbo(matrix, blocks), None
    except ValueError as exc:
        return None, str(exc)


# ----- walk-forward -----------------------------------------------------------------------------
def fold_budget(p) -> int | None:
    """TPE candidates per fold: the profile's fold_trials, never more than the run's own trials."""
    if not p.tpe:
        return None
    return min(p.walk_forward.fold_trials or p.trials, p.trials)


def step_walk_forward(run_path: Path, inp, sweep: dict[str, Any], initial_balance: float, log,
                      on_fold=None) -> dict[str, Any]:
    """Walk-forward optimisation with the run's spec, backend and sort rule (factory/walk_forward.py)."""
    from cpu_replay.api import run_replay
    from factory.pipeline import shortlist_keep_scores
    from factory.shortlist import rank_rows
    from factory.walk_forward import make_folds, run_walk_forward
    from gpu.api import run_sweep
    from strategy.config import apply_overrides

    p, wf = inp.profile, inp.profile.walk_forward
    mode = p.sort_modes[0]
    trials = fold_budget(p)

    def sweep_fn(md_is, f_is, ex_is):
        return run_sweep(inp.base_cfg, inp.spec, md_is, f_is, backend=sweep["backend"], precision=p.precision,
                         tpe=p.tpe, trials=trials, batch=p.batch, seed=42, top_n=10 if p.tpe else None,
                         progress=False, exit_md=ex_is, neighborhood=p.neighborhood if p.tpe else 1,
                         keep_scores=shortlist_keep_scores([mode]) if p.tpe else None)

    def pick_fn(rows):
        best = rank_rows(rows, mode, 1)
        return best[0] if best else None

    def replay_fn(overrides, md_w, f_w, ex_w, start_ms):
        cfg = apply_overrides(inp.base_cfg, overrides)
        return run_replay(cfg, md_w, funding=f_w, initial_balance=initial_balance, exit_md=ex_w,
                          start_ms=start_ms, with_trades=False)

    try:
        make_folds(inp.md.nbar, inp.spec.lookback, wf.folds, wf.scheme, wf.embargo_bars)
    except ValueError as exc:  # too little data for the folds: the gate fails and says why
        result = {"gate": "walk_forward", "scheme": wf.scheme, "folds": [], "stitched_oos_equity": [],
                  "efficiency": None, "passed": False, "error": str(exc), "reason": f"not run: {exc}",
                  "wf_median_oos_daily_return": None, "wf_max_oos_drawdown": None}
    else:
        result = run_walk_forward(inp.md, inp.funding, inp.exit_md, lookback=inp.spec.lookback, folds=wf.folds,
                                  scheme=wf.scheme, embargo_bars=wf.embargo_bars, sweep_fn=sweep_fn,
                                  pick_fn=pick_fn, replay_fn=replay_fn, initial_balance=initial_balance,
                                  min_efficiency=wf.min_efficiency, on_fold=on_fold)
    result.update({"sort_by": mode, "fold_trials": trials, "embargo_bars": wf.embargo_bars})
    write_json_atomic(run_path / "walk_forward" / "walk_forward.json", result)
    for f in result["folds"]:
        log.write(f"fold {f['fold']}: winner {str(f['winner_config_id'])[:12]} IS {f['in_sample']['return']:+.4f} "
                  f"OOS {f['out_of_sample']['return']:+.4f}\n")
    return result
