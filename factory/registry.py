"""The factory registry: which runs produced which configs, what was deployed where, and in what
lifecycle state each config is.

It is the single place the promotion tools read history from (paper deploy time for the promote
gates, the live ramp step, the last good deploy for rollback), so the state machine lives here and
refuses impossible moves instead of trusting each tool to remember the rules.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STATES = ("candidate", "validated", "paper", "live_small", "live_full", "paused", "retired")

# candidate -> paper is the operator's manual deploy of a config the factory never validated.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "candidate": ("validated", "paper", "paused", "retired"),
    "validated": ("paper", "paused", "retired"),
    "paper": ("live_small", "validated", "paused", "retired"),
    "live_small": ("live_full", "paper", "paused", "retired"),
    "live_full": ("live_small", "paper", "paused", "retired"),
    "paused": ("validated", "paper", "live_small", "retired"),
    "retired": (),
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, generated_at_ms INTEGER, run_date_utc TEXT,
  run_dir TEXT, git_head TEXT, profile TEXT, status TEXT, args_json TEXT);
CREATE TABLE IF NOT EXISTS configs (config_id TEXT PRIMARY KEY, yaml_text TEXT NOT NULL,
  first_seen_run_id TEXT, lifecycle_state TEXT NOT NULL DEFAULT 'candidate', updated_at_ms INTEGER);
CREATE TABLE IF NOT EXISTS run_configs (run_id TEXT NOT NULL, config_id TEXT NOT NULL, config_path TEXT,
  metrics_json TEXT, verdict TEXT, deployable INTEGER NOT NULL DEFAULT 0, reject_reason TEXT,
  PRIMARY KEY (run_id, config_id));
CREATE TABLE IF NOT EXISTS deployments (id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms INTEGER NOT NULL,
  target TEXT NOT NULL, config_id TEXT NOT NULL, deploy_dir TEXT, kind TEXT NOT NULL, event_json TEXT);
CREATE INDEX IF NOT EXISTS deployments_target ON deployments (target, id);
CREATE TABLE IF NOT EXISTS lifecycle_events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms INTEGER NOT NULL,
  config_id TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL, reason TEXT);
CREATE TABLE IF NOT EXISTS ramps (config_id TEXT NOT NULL, target TEXT NOT NULL, step INTEGER NOT NULL,
  fraction REAL NOT NULL, target_size_multiplier REAL NOT NULL, step_started_ms INTEGER NOT NULL,
  yaml_path TEXT, PRIMARY KEY (config_id, target));
"""

METRIC_KEYS = ("total_pnl", "total_trades", "win_rate", "profit_factor", "max_drawdown_pct", "total_fees",
               "sharpe", "final_balance", "initial_balance", "score_v1", "replay_equivalence_status",
               "replay_equivalence_count", "canonical_cpu_verified")


class LifecycleError(ValueError):
    """An impossible lifecycle move (e.g. retired -> paper); str() is one line."""


class RegistryError(ValueError):
    """The registry file cannot be used (random bytes, another program's DB, a directory, disk
    full); str() is one line naming the file, so every deploy tool refuses instead of crashing."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def default_registry_path(artifacts_dir: str | Path = "artifacts") -> Path:
    return Path(artifacts_dir) / "registry" / "registry.sqlite"


def is_deployable(item: dict) -> bool:
    """The spec's deployable predicate over a report/selection item (proof paths must exist)."""
    stages = ("pipeline_stage", "sweep_stage", "replay_stage", "validation_gate")
    count = item.get("replay_equivalence_count")
    proofs = [item.get("replay_report_path") or item.get("path"), item.get("replay_equivalence_report_path")]
    return (not item.get("rejected") and item.get("candidate_mode") is True and item.get("schema_version") == 1
            and all(isinstance(item.get(k), str) and item.get(k) for k in stages)
            and item.get("canonical_cpu_verified") is True and item.get("replay_equivalence_status") == "pass"
            and isinstance(count, int) and not isinstance(count, bool) and count >= 0
            and all(isinstance(p, str) and Path(p).is_file() for p in proofs))


class Registry:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._conn() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=15)
        except sqlite3.Error as exc:
            raise RegistryError(f"registry {self.path} cannot be opened: {exc}") from None
        con.row_factory = sqlite3.Row
        try:
            con.execute("PRAGMA busy_timeout=15000")
            yield con
            con.commit()
        except sqlite3.Error as exc:
            raise RegistryError(f"registry {self.path} unusable: {exc} (restore it from a backup or move "
                                "it aside)") from None
        finally:
            con.close()

    # --- runs and configs -------------------------------------------------------------------
    def record_run(self, meta: dict) -> None:
        gen = int(meta.get("generated_at_ms") or _now_ms())
        run_date = meta.get("run_date_utc") or time.strftime("%Y-%m-%d", time.gmtime(gen / 1000))
        with self._conn() as con:
            con.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?)",
                        (meta["run_id"], gen, run_date, meta.get("run_dir"), meta.get("git_head"),
                         meta.get("profile"), meta.get("status"),
                         json.dumps(meta.get("args"), sort_keys=True, default=str)))

    def record_config(self, config_id: str, yaml_text: str, run_id: str | None) -> bool:
        """Insert once (configs are content-addressed); returns True when the config is new."""
        with self._conn() as con:
            cur = con.execute("INSERT OR IGNORE INTO configs (config_id, yaml_text, first_seen_run_id, "
                              "lifecycle_state, updated_at_ms) VALUES (?,?,?,'candidate',?)",
                              (config_id, yaml_text, run_id, _now_ms()))
            return cur.rowcount == 1

    def config_yaml(self, config_id: str) -> str | None:
        """Exact or unique-prefix (>= 8 chars) lookup, so operators can paste the short id."""
        with self._conn() as con:
            rows = con.execute("SELECT yaml_text FROM configs WHERE config_id LIKE ? LIMIT 2",
                               (config_id + "%",)).fetchall() if len(config_id) >= 8 else []
        return rows[0]["yaml_text"] if len(rows) == 1 else None

    def record_verdict(self, run_id: str, config_id: str, item: dict) -> None:
        deployable = bool(item["deployable"]) if "deployable" in item else is_deployable(item)
        verdict = item.get("verdict") or ("rejected" if item.get("rejected") else
                                          "deployable" if deployable else "not_deployable")
        metrics = {k: item[k] for k in METRIC_KEYS if k in item}
        with self._conn() as con:
            con.execute("INSERT OR REPLACE INTO run_configs VALUES (?,?,?,?,?,?,?)",
                        (run_id, config_id, item.get("config_path") or item.get("path"),
                         json.dumps(metrics, sort_keys=True), verdict, int(deployable), item.get("reject_reason")))
        if deployable and self.lifecycle(config_id) == "candidate":
            self.set_lifecycle(config_id, "validated", f"deployable in run {run_id}")

    def verdicts(self, config_id: str) -> list[dict]:
        with self._conn() as con:
            return [dict(r) for r in con.execute("SELECT * FROM run_configs WHERE config_id=? ORDER BY run_id",
                                                 (config_id,))]

    # --- lifecycle ---------------------------------------------------------------------------
    def lifecycle(self, config_id: str) -> str | None:
        with self._conn() as con:
            row = con.execute("SELECT lifecycle_state FROM configs WHERE config_id=?", (config_id,)).fetchone()
        return row["lifecycle_state"] if row else None

    def set_lifecycle(self, config_id: str, state: str, reason: str) -> bool:
        """Move a config to `state`; False when already there, LifecycleError when not allowed."""
        if state not in STATES:
            raise LifecycleError(f"unknown lifecycle state {state!r}; expected one of {', '.join(STATES)}")
        current = self.lifecycle(config_id)
        if current is None:
            raise LifecycleError(f"config {config_id[:12]} is not in the registry")
        if current == state:
            return False
        if state not in TRANSITIONS[current]:
            raise LifecycleError(f"config {config_id[:12]}: lifecycle {current} -> {state} is not allowed")
        now = _now_ms()
        with self._conn() as con:
            con.execute("UPDATE configs SET lifecycle_state=?, updated_at_ms=? WHERE config_id=?", (state, now, config_id))
            con.execute("INSERT INTO lifecycle_events (ts_ms, config_id, from_state, to_state, reason) VALUES (?,?,?,?,?)",
                        (now, config_id, current, state, reason))
        return True

    def lifecycle_events(self, config_id: str) -> list[dict]:
        with self._conn() as con:
            return [dict(r) for r in con.execute("SELECT * FROM lifecycle_events WHERE config_id=? ORDER BY id",
                                                 (config_id,))]

    # --- deployments and ramps ---------------------------------------------------------------
    def record_deployment(self, target: str, config_id: str, deploy_dir: str | None, kind: str,
                          event: dict | None = None, ts_ms: int | None = None) -> int:
        if kind not in ("deploy", "rollback", "promote"):
            raise ValueError(f"deployment kind {kind!r} must be deploy, rollback or promote")
        with self._conn() as con:
            cur = con.execute("INSERT INTO deployments (ts_ms, target, config_id, deploy_dir, kind, event_json) "
                              "VALUES (?,?,?,?,?,?)", (ts_ms or _now_ms(), target, config_id, deploy_dir, kind,
                                                       json.dumps(event or {}, sort_keys=True, default=str)))
            return int(cur.lastrowid)

    def deployments(self, target: str | None = None, config_id: str | None = None) -> list[dict]:
        """Newest first."""
        sql, args = "SELECT * FROM deployments WHERE 1=1", []
        if target:
            sql, args = sql + " AND target=?", [*args, target]
        if config_id:
            sql, args = sql + " AND config_id=?", [*args, config_id]
        with self._conn() as con:
            return [dict(r) for r in con.execute(sql + " ORDER BY id DESC", args)]

    def ramp(self, config_id: str, target: str = "live") -> dict[str, Any] | None:
        with self._conn() as con:
            row = con.execute("SELECT * FROM ramps WHERE config_id=? AND target=?", (config_id, target)).fetchone()
        return dict(row) if row else None

    def set_ramp(self, config_id: str, target: str, step: int, fraction: float, target_size_multiplier: float,
                 step_started_ms: int, yaml_path: str | None) -> None:
        with self._conn() as con:
            con.execute("INSERT OR REPLACE INTO ramps VALUES (?,?,?,?,?,?,?)",
                        (config_id, target, step, fraction, target_size_multiplier, step_started_ms, yaml_path))
