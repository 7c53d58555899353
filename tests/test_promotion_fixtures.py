"""Builders for promotion tests, and a stand-in `factory` command for the stage-gate script.

The stage-gate script's contract is orchestration (run, validate, stop, write the manifest), so its
test drives a tiny factory that writes a real run directory with the exact selection.json /
run_metadata.json contract, optionally tampered. Run as a script it mimics
`factory run --profile P --run-id R [--no-deploy] --artifacts-dir A ...`; the env var
FAKE_FACTORY_TAMPER="<profile-or-run-id-substring>:<tamper>" breaks one stage.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from factory.jsonio import write_json_atomic  # noqa: E402

CONFIG_ID = "ab" * 32

TAMPERS = ("missing_proof", "status_fail", "proof_outside", "not_verified", "pending", "bad_count", "unknown_config")


def make_run_dir(artifacts: Path, run_id: str, *, no_deploy: bool = True, tamper: str | None = None,
                 outside_dir: Path | None = None) -> Path:
    """Write a run dir that passes the hard gate, then apply one named tamper; returns selection.json."""
    run_dir = artifacts / datetime.now(UTC).strftime("%Y-%m-%d") / f"run_{run_id}"
    for sub in ("reports", "replays", "configs"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    cfg = run_dir / "configs" / "candidate_1.yaml"
    cfg.write_text("global:\n  trade:\n    sl_atr_mult: 1.5\n", encoding="utf-8")
    replay = run_dir / "replays" / "candidate_1.replay.json"
    equiv = run_dir / "replays" / "candidate_1.replay_equivalence.json"
    write_json_atomic(replay, {"total_trades": 42, "total_pnl": 123.5})
    write_json_atomic(equiv, {"status": "pass", "count": 42})
    selected = {
        "config_id": CONFIG_ID, "config_path": str(cfg), "score_v1": 0.01, "total_pnl": 123.5,
        "max_drawdown_pct": 0.05, "total_trades": 42, "profit_factor": 1.6,
        "pipeline_stage": "candidate_validation", "sweep_stage": "cpu", "replay_stage": "cpu_replay",
        "validation_gate": "score_v1+walk_forward+overfitting+slippage", "canonical_cpu_verified": True,
        "candidate_mode": True, "schema_version": 1, "replay_report_path": str(replay),
        "replay_equivalence_report_path": str(equiv), "replay_equivalence_status": "pass",
        "replay_equivalence_count": 42,
    }
    row = {"path": str(cfg), "config_id": CONFIG_ID, "rank": 1,
           "replay_equivalence_report_path": str(equiv), "replay_equivalence_status": "pass"}
    sel_path = run_dir / "reports" / "selection.json"
    sel = {
        "version": "factory_selection_v1", "run_id": run_id, "selection_stage": "selected",
        "deploy_stage": "no_deploy" if no_deploy else "deployed",
        "promotion_stage": "skipped" if no_deploy else "promoted",
        "evidence_bundle_paths": {
            "run_dir": str(run_dir), "run_metadata_json": str(run_dir / "run_metadata.json"),
            "report_json": str(run_dir / "reports" / "report.json"),
            "report_md": str(run_dir / "reports" / "report.md"),
            "selection_json": str(sel_path), "selection_md": str(run_dir / "reports" / "selection.md"),
        },
        "selected": selected, "selected_candidates": [selected],
        "walk_forward": {"folds": 3, "scheme": "anchored", "passed": True, "reason": None, "efficiency": 0.6,
                         "wf_median_oos_daily_return": 0.001},
        "overfitting": {"pbo": 0.2, "deflated_sharpe": 0.97, "max_pbo": 0.5, "min_deflated_sharpe": 0.95,
                        "n_trials": 1000},
        "data": {"synthetic": False, "label": "market data"},
    }
    if tamper == "missing_proof":
        equiv.unlink()
    elif tamper == "status_fail":
        selected["replay_equivalence_status"] = "fail"
    elif tamper == "not_verified":
        selected["canonical_cpu_verified"] = False
    elif tamper == "bad_count":
        selected["replay_equivalence_count"] = -1
    elif tamper == "no_walk_forward":
        del sel["walk_forward"]
    elif tamper == "wf_failed":
        sel["walk_forward"].update(passed=False, reason="median out-of-sample daily return -0.001 is not above 0")
    elif tamper == "overfit":
        sel["overfitting"].update(pbo=0.8, deflated_sharpe=0.4)
    elif tamper == "synthetic":
        sel["data"] = {"synthetic": True, "label": "SYNTHETIC DEMO DATA"}
    elif tamper == "advisory_best":
        sel.update(selection_stage="best_candidate_not_deployable", selected=None,
                   best_candidate={**selected, "gate_mode": "advisory", "gate_failures": ["slippage: x"]})
    elif tamper == "pending":
        sel["deploy_stage"] = "pending"
    elif tamper == "unknown_config":
        row["config_id"] = "cd" * 32
    elif tamper == "proof_outside":
        outside = outside_dir or run_dir.parent.parent / "elsewhere"
        outside.mkdir(parents=True, exist_ok=True)
        moved = outside / "candidate_1.replay.json"
        write_json_atomic(moved, {"total_trades": 42})
        selected["replay_report_path"] = str(moved)
    write_json_atomic(run_dir / "run_metadata.json", {
        "run_id": run_id, "status": "ok", "generated_at_ms": int(time.time() * 1000),
        "run_dir": str(run_dir), "candidate_configs": [row]})
    write_json_atomic(run_dir / "reports" / "report.json", {"items": [selected]})
    (run_dir / "reports" / "report.md").write_text("# report\n", encoding="utf-8")
    (run_dir / "reports" / "selection.md").write_text("# selection\n", encoding="utf-8")
    write_json_atomic(sel_path, sel)
    return sel_path


def make_trading_db(path: Path, rows: list[tuple], kills: list[str] = ()) -> Path:
    """A paper/live trading DB with the runtime's `trades` and `audit_events` columns.

    rows: (iso_timestamp, symbol, type, action, price, size, notional, pnl, fee_usd, balance).
    kills: ISO timestamps of RISK_KILL_DRAWDOWN audit events.
    """
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE IF NOT EXISTS trades (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT, symbol TEXT,
          type TEXT, action TEXT, price REAL, size REAL, notional REAL, reason TEXT, confidence TEXT,
          pnl REAL, fee_usd REAL, fee_token TEXT, fee_rate REAL, balance REAL, entry_atr REAL,
          leverage REAL, margin_used REAL, meta_json TEXT, fill_hash TEXT, fill_tid INTEGER);
        CREATE TABLE IF NOT EXISTS audit_events (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT,
          symbol TEXT, event TEXT, level TEXT, data_json TEXT);
    """)
    con.executemany("INSERT INTO trades (timestamp, symbol, type, action, price, size, notional, pnl, fee_usd, balance)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    con.executemany("INSERT INTO audit_events (timestamp, symbol, event, level) VALUES (?, 'BTC', 'RISK_KILL_DRAWDOWN', 'warn')",
                    [(k,) for k in kills])
    con.commit()
    con.close()
    return path


def _fake_factory(argv: list[str]) -> int:
    """Stand-in for `factory run`: parses the flags the stage-gate script passes and writes a run dir."""
    if not argv or argv[0] != "run":
        print("fake factory: expected 'run'", file=sys.stderr)
        return 2
    args = {"--no-deploy": False}
    i = 1
    while i < len(argv):
        if argv[i] == "--no-deploy":
            args["--no-deploy"] = True
            i += 1
        elif argv[i].startswith("--") and i + 1 < len(argv):
            args[argv[i]] = argv[i + 1]
            i += 2
        else:
            i += 1
    run_id, artifacts = args["--run-id"], Path(args.get("--artifacts-dir", "artifacts"))
    log = artifacts / "fake_factory_calls.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"argv": argv}) + "\n")
    if args.get("--profile") != "smoke" and "--candles-db" not in args:  # as the real factory refuses
        print(f"factory: --candles-db is required for profile {args.get('--profile')!r} "
              "(only smoke uses the demo data)", file=sys.stderr)
        return 2
    tamper = None
    spec = __import__("os").environ.get("FAKE_FACTORY_TAMPER", "")
    if ":" in spec:
        where, what = spec.split(":", 1)
        if where in run_id:
            tamper = what
    if tamper == "crash":
        print("fake factory: simulated crash", file=sys.stderr)
        return 3
    make_run_dir(artifacts, run_id, no_deploy=args["--no-deploy"], tamper=tamper)
    return 0


if __name__ == "__main__":
    sys.exit(_fake_factory(sys.argv[1:]))
