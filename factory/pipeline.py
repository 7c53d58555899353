"""The factory run: data checks -> sweep -> shortlist -> configs -> replay -> equivalence -> gates
-> report -> selection -> deploy.

Each arrow is a step of the run directory's step log (factory.run_dir), so a killed run shows what
finished and ``--resume`` continues after it. Objects that cannot be stored (config, sweep spec,
market data) are rebuilt by ``prepare_inputs`` on every start, which is also where bad input is
caught before any heavy work.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from factory import equivalence, gates, scoring
from factory.evidence import data_label, step_behaviours, step_walk_forward
from factory.jsonio import read_json, read_jsonl, write_json_atomic, write_jsonl_atomic
from factory.profiles import REPO_ROOT, Profile, resolve_profile
from factory.report import write_report
from factory.run_dir import (
    RunDir,
    RunDirError,
    RunDirWriteError,
    RunInterrupted,
    StepFailed,
    check_run_id,
    default_run_id,
)
from factory.selection import best_candidate, build_selection, is_deployable, rank_candidates, write_selection

GUARDED_ARGS = ("profile", "config", "candles_db", "exit_candles_db", "funding_db", "interval", "sweep_spec", "backend",
                "precision", "tpe", "trials", "batch", "neighborhood", "shortlist", "replay", "gates", "initial_balance",
                "start_ms", "end_ms", "symbols", "trace", "min_trades", "gate_mode", "wf_folds", "wf_scheme",
                "wf_embargo_bars")
STAGE_BASE = {"candidate_mode": True, "schema_version": 1}


class InputError(ValueError):
    """Bad user input found before or during the run (one line, shown as is)."""


@dataclass
class RunOptions:
    profile: str = "smoke"
    config: str | None = None
    candles_db: str | None = None
    exit_candles_db: str | None = None
    funding_db: str | None = None
    interval: str | None = None
    sweep_spec: str | None = None
    backend: str | None = None
    precision: str | None = None
    tpe: bool | None = None
    trials: int | None = None
    batch: int | None = None
    neighborhood: int | None = None
    shortlist: int | None = None
    replay: int | None = None
    gates: list[str] | None = None
    trace: bool | None = None
    min_trades: int | None = None
    gate_mode: str | None = None
    wf_folds: int | None = None
    wf_scheme: str | None = None
    wf_embargo_bars: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    symbols: list[str] | None = None
    artifacts_dir: str = "artifacts"
    run_id: str | None = None
    resume: bool = False
    no_deploy: bool = False
    initial_balance: float = 10_000.0
    deploy_target: str | None = None
    progress: bool = True
    plot: bool = False  # replays/<stem>.replay.html for each replayed candidate (plotly, a few MB each)
    profiles_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def profile_overrides(self) -> dict[str, Any]:
        keys = ("interval", "sweep_spec", "backend", "precision", "tpe", "trials", "batch", "neighborhood", "shortlist",
                "replay", "gates", "trace", "min_trades", "gate_mode")
        out = {k: getattr(self, k) for k in keys}
        wf = {"folds": self.wf_folds, "scheme": self.wf_scheme, "embargo_bars": self.wf_embargo_bars}
        out["walk_forward"] = {k: v for k, v in wf.items() if v is not None} or None
        return out


@dataclass
class Inputs:
    """Everything the steps share, rebuilt on each (re)start."""

    profile: Profile
    config_path: Path
    base_cfg: Any
    spec_path: Path
    spec: Any
    candle_sources: list[Path]
    funding_db: Path | None
    exit_sources: list[Path] = field(default_factory=list)  # candles of the config's exit_interval
    md: Any = None
    funding: Any = None
    exit_md: Any = None    # None: stops/targets on the main bar
    trade_start_ms: int | None = None

    @property
    def exit_interval(self) -> str | None:
        """The interval of the base config's sub-bars (its exit and/or entry interval finer than the
        run's interval; one grid), else None. A config with two different ones is refused later, in
        one line, by the sweep's check (gpu.api.check_engine_settings)."""
        from marketdata.subbars import SubBarError, sub_bar_plan

        try:
            return sub_bar_plan(self.profile.interval, self.base_cfg.entry_interval, self.base_cfg.exit_interval)[0]
        except SubBarError:
            iv = self.base_cfg.exit_interval
            return iv if iv and iv != self.profile.interval else None


# ----------------------------------------------------------------------------------- inputs
def _existing(path: str | Path, what: str) -> Path:
    """Relative paths are tried from the cwd, then from the repo (profiles name repo files)."""
    p = Path(path)
    for cand in (p, REPO_ROOT / p) if not p.is_absolute() else (p,):
        if cand.exists():
            return cand
    raise InputError(f"{what}: {path}: file not found")


def resolve_config_path(config: str | None) -> Path:
    if config:
        return _existing(config, "--config")
    for name in ("config/strategy_overrides.yaml", "config/strategy_overrides.yaml.example"):
        for base in (Path.cwd(), REPO_ROOT):
            if (base / name).is_file():
                return base / name
    raise InputError("--config: no config/strategy_overrides.yaml (or .example) found; pass --config")


def resolve_candles(opts: RunOptions, profile: Profile) -> tuple[list[Path], Path | None]:
    if opts.candles_db:
        sources = [_existing(s.strip(), "--candles-db") for s in opts.candles_db.split(",") if s.strip()]
        funding = _existing(opts.funding_db, "--funding-db") if opts.funding_db else None
        return sources, funding
    if profile.name != "smoke":
        raise InputError(f"--candles-db is required for profile {profile.name!r} (only smoke uses the demo data)")
    demo = _demo_data(opts)
    key = f"candles_{profile.interval}"
    if key not in demo:
        raise InputError(f"--interval {profile.interval}: the demo data has only 1h and 5m candles")
    funding = _existing(opts.funding_db, "--funding-db") if opts.funding_db else demo["funding"]
    return [Path(demo[key])], Path(funding)


def _demo_data(opts: RunOptions) -> dict[str, Path]:
    from marketdata.demo import ensure_demo_data

    repo_demo = Path.cwd() / "demo_data"
    return ensure_demo_data(repo_demo if repo_demo.is_dir() else Path(opts.artifacts_dir) / "demo_data")


def resolve_exit_candles(opts: RunOptions, exit_iv: str | None, sources: list[Path]) -> list[Path]:
    """Candles of the config's finer exit interval: --exit-candles-db, else the demo's (smoke without
    --candles-db), else candles_<exit>.db beside the first --candles-db file."""
    if not exit_iv:
        if opts.exit_candles_db:
            _err("factory: note: --exit-candles-db has no effect: the config has no global.engine.exit_interval "
                 "(exits run on the main bars)")
        return []
    if opts.exit_candles_db:
        return [_existing(s.strip(), "--exit-candles-db") for s in opts.exit_candles_db.split(",") if s.strip()]
    if not opts.candles_db:
        demo = _demo_data(opts)
        if f"candles_{exit_iv}" not in demo:
            raise InputError(f"global.engine.exit_interval={exit_iv}: the demo data has only 1h and 5m candles")
        return [Path(demo[f"candles_{exit_iv}"])]
    first = sources[0]
    sibling = (first.parent if first.is_file() else first) / f"candles_{exit_iv}.db"
    if not sibling.is_file():
        raise InputError(f"global.engine.exit_interval={exit_iv} needs the {exit_iv} candles: {sibling} not found "
                         "(pass --exit-candles-db)")
    return [sibling]


def prepare_inputs(opts: RunOptions) -> Inputs:
    """Profile, config, sweep spec and data sources: every user mistake surfaces here as InputError."""
    from gpu.spec import SweepSpecError, load_sweep_spec
    from strategy.config import ConfigError, load_config

    profile = resolve_profile(opts.profile, opts.profile_overrides(), opts.profiles_path)
    config_path = resolve_config_path(opts.config)
    try:
        base_cfg = load_config(config_path)
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    spec_path = _existing(profile.sweep_spec, "--sweep-spec")
    try:
        spec = load_sweep_spec(spec_path, base_cfg)
    except SweepSpecError as exc:
        raise InputError(str(exc)) from None
    spec = dataclasses.replace(spec, initial_balance=float(opts.initial_balance))
    if not profile.tpe and profile.max_candidates and spec.grid_size_unconstrained > profile.max_candidates \
            and opts.trials is None:
        raise InputError(f"{spec_path}: grid of {spec.grid_size_unconstrained:,} candidates exceeds profile "
                         f"{profile.name!r} limit {profile.max_candidates:,}")
    sources, funding_db = resolve_candles(opts, profile)
    inp = Inputs(profile, config_path, base_cfg, spec_path, spec, sources, funding_db)
    inp.exit_sources = resolve_exit_candles(opts, inp.exit_interval, sources)
    return inp


def load_data(inp: Inputs, opts: RunOptions) -> None:
    """Main candles, funding and (when the config has a finer exit_interval) the exit candles over the
    same span: the sweep, the trace and every replay then see the very same bars."""
    from gpu.api import check_engine_settings
    from gpu.spec import SweepSpecError
    from marketdata.candles import load_market_data
    from marketdata.funding import funding_matrix
    from marketdata.intervals import MarketDataError

    try:
        inp.md = load_market_data(",".join(str(s) for s in inp.candle_sources), inp.profile.interval,
                                  opts.symbols, opts.start_ms, opts.end_ms)
        inp.funding = funding_matrix(str(inp.funding_db) if inp.funding_db else None, inp.md)
        if inp.exit_sources:
            end = int(inp.md.times[-1] + inp.md.interval_ms - 1)
            inp.exit_md = load_market_data(",".join(str(s) for s in inp.exit_sources), inp.exit_interval,
                                           opts.symbols, int(inp.md.times[0]), end)
        check_engine_settings(inp.base_cfg, inp.md.interval, inp.exit_md, inp.spec.axes)
    except (MarketDataError, SweepSpecError) as exc:
        raise InputError(str(exc)) from None
    if inp.md.nbar <= inp.spec.lookback + 1:
        raise InputError(f"{inp.md.nbar} {inp.profile.interval} bars: not more than the sweep lookback "
                         f"{inp.spec.lookback}; widen the data window")
    inp.trade_start_ms = int(inp.md.times[inp.spec.lookback])


# ----------------------------------------------------------------------------------- steps
def _db_files(sources: list[Path]) -> list[Path]:
    out: list[Path] = []
    for s in sources:
        out.extend(sorted(s.rglob("*.db")) if s.is_dir() else [s])
    return out


def _span(db: Path) -> tuple[int, int, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        t0, t1, n = conn.execute("SELECT MIN(t), MAX(COALESCE(t_close, t)), COUNT(*) FROM candles").fetchone()
    if not n:
        raise StepFailed(f"data check: {db}: no candles")
    return int(t0), int(t1), int(n)


def _check_candle_db(rd: RunDir, db: Path, interval: str, log) -> dict[str, Any]:
    from marketdata.checks import check_candle_dbs
    from marketdata.intervals import interval_ms

    bars_per_day = 86_400_000 // interval_ms(interval)
    try:
        t0, t1, n = _span(db)
    except sqlite3.Error as exc:
        raise StepFailed(f"data check: {db}: unreadable candles DB: {exc}") from None
    hours = (t1 - t0) / 3_600_000 + 1
    expected = max(1, int(hours * 3_600_000 // interval_ms(interval)))
    report = check_candle_dbs(
        str(db), hours, freshness_warn_mult=1e12, freshness_fail_mult=1e12, gap_warn_bars=1,
        gap_fail_bars=max(3, bars_per_day), missing_warn_bars=10,
        missing_fail_bars=max(50, expected // 20), now=t1 + 6_000, symbols=None,
    )
    path = write_json_atomic(rd.path / "data_checks" / f"candles_{db.stem}.json", report)
    log.write(f"{db}: {report['overall_status']} ({n} rows)\n")
    if report["overall_status"] == "FAIL":
        raise StepFailed(f"data check FAIL for {db}: see {path}")
    return {"db": str(db), "status": report["overall_status"], "report_path": str(path), "rows": n}


def step_data_checks(rd: RunDir, inp: Inputs, log) -> dict[str, Any]:
    """Historical data: judge gaps and bad rows over the data's own span, never freshness vs now."""
    from marketdata.checks import check_funding_db

    out: dict[str, Any] = {"dbs": [_check_candle_db(rd, db, inp.profile.interval, log)
                                   for db in _db_files(inp.candle_sources)]}
    out["dbs"] += [{**_check_candle_db(rd, db, inp.exit_interval, log), "role": "exit"}
                   for db in _db_files(inp.exit_sources)]
    if inp.funding_db is not None:
        rep = check_funding_db(str(inp.funding_db), lookback_hours=24 * 3650, max_age_warn_hours=1e9,
                               max_age_fail_hours=1e9)
        path = write_json_atomic(rd.path / "data_checks" / "funding.json", rep)
        out["funding"] = {"db": str(inp.funding_db), "status": rep.get("status"), "report_path": str(path)}
    out["status"] = "OK" if all(d["status"] == "OK" for d in out["dbs"]) else "WARN"
    return out


def sweep_stage_of(backend: str, tpe: bool) -> str:
    gpu = backend in ("cuda", "cudasim")  # cudasim runs the CUDA kernel (tests only)
    return ("gpu" if gpu else "cpu") + ("_tpe" if tpe else "")


def shortlist_keep_scores(modes: list[str]) -> dict[str, Any]:
    """Vectorised twins of factory.shortlist's sort modes over the sweep's metrics matrix, so a
    TPE sweep writes only rows the shortlist could pick (-inf = not eligible for that mode).
    Each is the mode's primary key; tests/test_sweep_tpe.py holds them equal to the row versions."""
    import numpy as np

    from strategy import layout as L

    def finite(x):
        return np.where(np.isfinite(x), x, 0.0)

    def pnl(m):
        return np.where(m[:, L.M_TOTAL_TRADES] >= 1, finite(m[:, L.M_TOTAL_PNL]), -np.inf)

    def balanced(m):
        score = (finite(m[:, L.M_TOTAL_PNL]) * 0.3 + np.minimum(finite(m[:, L.M_PROFIT_FACTOR]), 10.0) * 20.0
                 + finite(m[:, L.M_SHARPE]) * 15.0 - finite(m[:, L.M_MAX_DD]) * 100.0)
        score = np.where(finite(m[:, L.M_TOTAL_TRADES]) < 20, score * np.where(score > 0, 0.5, 2.0), score)
        return np.where(m[:, L.M_TOTAL_TRADES] >= 1, score, -np.inf)

    def dd(m):
        ok = (m[:, L.M_TOTAL_TRADES] >= 1) & (finite(m[:, L.M_TOTAL_PNL]) > 0)
        return np.where(ok, -finite(m[:, L.M_MAX_DD]), -np.inf)

    table = {"pnl": pnl, "balanced": balanced, "dd": dd}
    return {mode: table[mode] for mode in modes if mode in table}


def sweep_rows_to_keep(p: Profile) -> int | None:
    """TPE sweeps keep the top rows per shortlist sort mode (deduplicated), not a million rows."""
    return max(10_000, p.shortlist * 50) if p.tpe else None


def step_sweep(rd: RunDir, inp: Inputs, opts: RunOptions, log) -> dict[str, Any]:
    from gpu.api import run_sweep

    p = inp.profile
    top_n = sweep_rows_to_keep(p)
    res = run_sweep(inp.base_cfg, inp.spec, inp.md, inp.funding, backend=p.backend, precision=p.precision,
                    tpe=p.tpe, trials=p.trials, batch=p.batch, seed=42, top_n=top_n, progress=opts.progress,
                    storage=f"sqlite:///{(rd.path / 'state' / 'tpe.sqlite3').resolve()}" if p.tpe else None,
                    study_name=f"factory_{rd.metadata['run_id']}" if p.tpe else None, exit_md=inp.exit_md,
                    neighborhood=p.neighborhood if p.tpe else 1,
                    keep_scores=shortlist_keep_scores(p.sort_modes) if p.tpe else None)
    rows_path = write_jsonl_atomic(rd.path / "sweeps" / "sweep_results.jsonl", res.rows)
    log.write(f"backend {res.backend}: {res.backend_reason}; {res.candidates_evaluated} candidates "
              f"in {res.elapsed_s:.2f}s; {res.rows_written} rows written\n")
    return {"backend": res.backend, "backend_reason": res.backend_reason, "spec_path": str(inp.spec_path),
            "exit_interval": inp.exit_interval,
            "candidates_evaluated": int(res.candidates_evaluated), "elapsed_s": float(res.elapsed_s),
            "candidates_per_s": float(res.candidates_per_s), "precision": res.precision,
            "sweep_stage": sweep_stage_of(res.backend, p.tpe), "rows_kept": len(res.rows),
            "rows_written": res.rows_written, "rows_kept_per_mode": top_n, "summary": res.summary,
            "neighborhood": res.neighborhood, "tpe_trials": res.tpe_proposals,
            "rows_path": str(rows_path.resolve()), "tpe": p.tpe, "lookback": inp.spec.lookback,
            "trade_start_ms": inp.trade_start_ms}


def step_shortlist(rd: RunDir, inp: Inputs, sweep: dict[str, Any], behaviours: dict[str, Any] | None,
                   log) -> list[dict[str, Any]]:
    """Distinct behaviours first: configs with the same traced trade list are one row (config_ids)."""
    from factory.shortlist import build_shortlist

    rows = read_jsonl(sweep["rows_path"])
    short = build_shortlist(rows, inp.profile.shortlist, inp.profile.sort_modes,
                            behaviour_of=(behaviours or {}).get("checksums"))
    write_jsonl_atomic(rd.path / "sweeps" / "sweep_candidates.jsonl", short)
    twins = sum(len(r["config_ids"]) - 1 for r in short)
    log.write(f"{len(short)} distinct behaviours shortlisted from {len(rows)} rows ({twins} identical twins folded in)\n")
    return short


def step_configs(rd: RunDir, inp: Inputs, short: list[dict[str, Any]], log) -> list[dict[str, Any]]:
    """Write each candidate's full effective YAML; its config_id must be the sweep row's."""
    from strategy.config import apply_overrides, dump_config_yaml, load_config

    out = []
    for row in short:
        stem = f"candidate_{row['rank']}"
        cfg = apply_overrides(inp.base_cfg, row.get("overrides") or {})
        path = rd.path / "configs" / f"{stem}.yaml"
        dump_config_yaml(cfg, path)
        reloaded = load_config(path).config_id
        if not (cfg.config_id == row["config_id"] == reloaded):
            raise StepFailed(f"{path}: config_id {reloaded[:12]} (written) / {cfg.config_id[:12]} (applied) != "
                             f"sweep row {row['config_id'][:12]}: the sweep and the config system disagree")
        log.write(f"{stem}: {row['config_id'][:12]} sort_by={row['sort_by']}\n")
        out.append({"rank": row["rank"], "stem": stem, "path": str(path.resolve()), "config_id": row["config_id"],
                    "sort_by": row["sort_by"], "overrides": row.get("overrides") or {}, "sweep_row": row,
                    "config_ids": row.get("config_ids") or [row["config_id"]]})
    return out


def make_replay_fn(inp: Inputs, initial_balance: float) -> Callable[..., dict[str, Any]]:
    from cpu_replay.api import run_replay

    def replay(cfg, **kw):
        kw.setdefault("start_ms", inp.trade_start_ms)
        return run_replay(cfg, inp.md, funding=inp.funding, initial_balance=initial_balance,
                          exit_md=inp.exit_md, **kw)

    return replay


def step_replay(rd: RunDir, inp: Inputs, cand: dict[str, Any], replay_fn, log, plot: bool = False) -> dict[str, Any]:
    """The canonical replay of one candidate, with its per-bar equity (report.html draws the
    selected one's) and, with --plot, its own replay page."""
    from strategy.config import load_config

    cfg = load_config(cand["path"])
    report = replay_fn(cfg, with_trades=True, with_equity=True)
    path = write_json_atomic(rd.path / "replays" / f"{cand['stem']}.replay.json", report)
    log.write(f"{cand['stem']}: pnl {report['total_pnl']:.4f} trades {report['total_trades']}\n")
    out = {"path": str(path.resolve())}
    if plot:
        from factory.report_html import write_candidate_plot

        out["plot"] = str(write_candidate_plot(rd.path, cand["stem"], report, inp.md, cfg,
                                               data_paths=_data_paths(inp)).resolve())
    return out


def _data_paths(inp: Inputs) -> list[Path]:
    return [*inp.candle_sources, *inp.exit_sources, *([inp.funding_db] if inp.funding_db else [])]


def step_report_html(rd: RunDir, inp: Inputs, log) -> dict[str, Any]:
    """report.html beside report.md; without plotly the run goes on and says how to get it."""
    from factory.report_html import write_report_html
    from reports.html import PlotsUnavailable

    try:
        return {"report_html": str(write_report_html(rd.path, data_paths=_data_paths(inp)).resolve())}
    except PlotsUnavailable as exc:
        log.write(f"report.html skipped: {exc}\n")
        _err(f"factory: note: report.html skipped: {exc}")
        return {"report_html": None}


def step_equivalence(rd: RunDir, inp: Inputs, cand: dict[str, Any], sweep: dict[str, Any], replay_path: str,
                     initial_balance: float, log) -> dict[str, Any]:
    from gpu.api import trace_candidates

    report = read_json(replay_path)
    out_path = rd.path / "replays" / f"{cand['stem']}.replay_equivalence.json"
    try:
        trades = None
        if inp.profile.trace:
            trades = trace_candidates(inp.base_cfg, [cand["overrides"]], inp.md, inp.funding,
                                      initial_balance=initial_balance, backend=sweep["backend"],
                                      precision=sweep["precision"], lookback=inp.spec.lookback,
                                      exit_md=inp.exit_md)[0]
        eq = equivalence.compare_sweep_to_replay(cand["sweep_row"], report, trades,
                                                 initial_balance=initial_balance, precision=sweep["precision"])
    except Exception as exc:  # noqa: BLE001 - any failure to compare is recorded, never a pass
        eq = equivalence.error_report(f"{type(exc).__name__}: {exc}", cand["config_id"])
    eq.update({"sweep_row_path": sweep["rows_path"], "replay_report_path": replay_path,
               "config_path": cand["path"], "stem": cand["stem"]})
    write_json_atomic(out_path, eq)
    log.write(f"{cand['stem']}: equivalence {eq['status']} ({eq['count']} compared)\n")
    return {**{k: eq.get(k) for k in ("status", "failure_code", "count", "diffs", "mode")}, "path": str(out_path.resolve())}


def step_gates(rd: RunDir, inp: Inputs, cand: dict[str, Any], replay_path: str, replay_fn, opts: RunOptions,
               tick, log, run_level: dict[str, Any] | None = None) -> dict[str, Any]:
    from strategy.config import apply_overrides, load_config

    p = inp.profile
    report = read_json(replay_path)
    summaries = gates.run_gates(
        p.gates, cfg=load_config(cand["path"]), replay_report=report, replay_fn=replay_fn,
        apply_overrides=apply_overrides, initial_balance=opts.initial_balance, out_dir=rd.path / "gates",
        stem=cand["stem"], stability_splits=p.stability_splits, slippage_bps=p.slippage_bps,
        monte_carlo_iterations=p.monte_carlo_iterations, min_trades=p.min_trades, on_progress=tick,
        run_level=run_level)
    log.write(f"{cand['stem']}: gates {list(summaries)}\n")
    return scoring.verdict(summaries, report, enforce=p.gate_mode == "enforce")


# ----------------------------------------------------------------------------------- items
def _stage_fields(sweep: dict[str, Any], validated: bool, gate_label: str) -> dict[str, Any]:
    return {**STAGE_BASE, "pipeline_stage": "candidate_validation" if validated else "candidate_generation",
            "sweep_stage": sweep["sweep_stage"], "replay_stage": "cpu_replay" if validated else "",
            "validation_gate": gate_label if validated else ""}


def build_item(cand: dict[str, Any], sweep: dict[str, Any], replay_path: str, eq: dict[str, Any],
               verdict: dict[str, Any], gate_label: str) -> dict[str, Any]:
    rep = read_json(replay_path)
    metrics = ("initial_balance", "final_balance", "total_pnl", "total_trades", "win_rate", "profit_factor",
               "max_drawdown_pct", "total_fees", "sharpe")
    item = {k: rep.get(k) for k in metrics}
    item.update(_stage_fields(sweep, True, gate_label))
    item.update({
        "config_id": cand["config_id"], "config_path": cand["path"], "rank": cand["rank"],
        "config_ids": cand.get("config_ids") or [cand["config_id"]],
        "sort_by": cand["sort_by"], "overrides": cand["overrides"], "replay_report_path": replay_path,
        "canonical_cpu_verified": eq["status"] == "pass",
        "replay_equivalence_status": eq["status"], "replay_equivalence_failure_code": eq.get("failure_code"),
        "replay_equivalence_count": int(eq.get("count") or 0), "replay_equivalence_report_path": eq["path"],
        "replay_equivalence_mode": eq.get("mode"), "replay_equivalence_diffs": eq.get("diffs") or [],
    })
    item.update(verdict)
    if eq["status"] != "pass":
        item["not_deployable_reason"] = f"replay equivalence {eq['status']} ({eq.get('failure_code')})"
    return item


def candidate_config_row(cand: dict[str, Any], sweep: dict[str, Any], item: dict[str, Any] | None) -> dict[str, Any]:
    row = {"path": cand["path"], "config_id": cand["config_id"], "rank": cand["rank"], "sort_by": cand["sort_by"],
           **_stage_fields(sweep, False, ""), "canonical_cpu_verified": False,
           "replay_equivalence_status": "not_run", "replay_equivalence_report_path": None,
           "replay_equivalence_count": 0, "replay_report_path": None}
    if item is not None:
        for k in ("pipeline_stage", "replay_stage", "validation_gate", "canonical_cpu_verified",
                  "replay_equivalence_status", "replay_equivalence_report_path", "replay_equivalence_count",
                  "replay_report_path", "score_v1", "rejected", "reject_reason"):
            row[k] = item.get(k)
    return row


# ----------------------------------------------------------------------------------- deploy
def step_deploy(rd: RunDir, sel: dict[str, Any], opts: RunOptions, log) -> dict[str, Any]:
    """The factory's own deploy obeys the release blocker: red, stale or unreadable means no deploy."""
    from factory.deploy import deploy_paper
    from factory.release_blocker import read_blocker

    status = read_blocker()
    if not status.ok:
        reason = getattr(status, "reason_line", None) or getattr(status, "reason", None) or "release blocker not green"
        log.write(f"deploy skipped: {reason}\n")
        return {"deploy_stage": "skipped", "deploy_reason": f"release blocker: {reason}"}
    target, why = resolve_deploy_target(opts.deploy_target)
    if target is None:
        log.write(f"deploy skipped: {why}\n")
        return {"deploy_stage": "skipped", "deploy_reason": why}
    registry = _registry(opts)
    res = deploy_paper(sel["selected"]["config_path"], target_yaml=target, artifacts_dir=Path(opts.artifacts_dir),
                       reason=f"factory run {rd.metadata['run_id']}", registry=registry, ignore_replay_gate=False,
                       dry_run=False)
    info = dataclasses.asdict(res) if dataclasses.is_dataclass(res) else dict(getattr(res, "__dict__", {}))
    log.write(f"deployed {sel['selected']['config_id'][:12]} to {target}\n")
    return {"deploy_stage": "deployed", "deploy_reason": f"deployed to paper config {target}", "deployment": info}


def resolve_deploy_target(deploy_target: str | None, env: dict[str, str] | None = None) -> tuple[Path | None, str]:
    """The paper trader's YAML: --deploy-target (relative to the cwd), else $AI_QUANT_STRATEGY_YAML,
    else config/strategy_overrides.yaml (both relative to the repo root, as the daemon reads them).
    Never a *.example template and never a file that does not exist yet: (None, reason) skips."""
    import os

    env = os.environ if env is None else env
    if deploy_target:
        raw, origin = deploy_target, "--deploy-target"
    elif env.get("AI_QUANT_STRATEGY_YAML"):
        raw, origin = env["AI_QUANT_STRATEGY_YAML"], "AI_QUANT_STRATEGY_YAML"
    else:
        raw, origin = "config/strategy_overrides.yaml", "default deploy target"
    path = Path(raw).expanduser()
    if not path.is_absolute():  # the option is the operator's (cwd); the env/default are the daemon's (repo)
        path = path.resolve() if origin == "--deploy-target" else REPO_ROOT / path
    if path.name.endswith(".example"):
        return None, f"{origin} {path}: a *.example template is never a deploy target"
    if not path.is_file():
        return None, f"{origin} {path}: not found (the paper config must exist; pass --deploy-target)"
    return path, ""


def _registry(opts: RunOptions):
    from factory.registry import Registry

    return Registry(Path(opts.artifacts_dir) / "registry" / "registry.sqlite")


def record_registry(rd: RunDir, items: list[dict[str, Any]], opts: RunOptions) -> dict[str, Any]:
    reg = _registry(opts)
    reg.record_run(rd.metadata)
    for item in items:
        reg.record_config(item["config_id"], Path(item["config_path"]).read_text(encoding="utf-8"),
                          rd.metadata["run_id"])
        # an advisory run's gate failures do not reject, but they never make a config "validated"
        advisory_fail = bool(item.get("gate_failures")) and not item.get("rejected")
        reg.record_verdict(rd.metadata["run_id"], item["config_id"],
                           {**item, "deployable": is_deployable(item, rd.path) and not item.get("gate_failures"),
                            **({"verdict": "advisory_gate_failures"} if advisory_fail else {})})
    return {"status": "ok", "configs": len(items)}


# ----------------------------------------------------------------------------------- driver
def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, disable=not enabled, transient=False)


def run_evidence(meta: dict[str, Any], wf: dict[str, Any] | None, behaviours: dict[str, Any],
                 short: list[dict[str, Any]]) -> dict[str, Any]:
    """The run-level blocks report.json and selection.json carry (keys documented in docs/PROMOTION.md)."""
    return {
        "data": meta.get("data"), "score_v1_definition": scoring.SCORE_V1_EXPLAINED,
        "walk_forward": wf,
        "overfitting": {"pbo": (behaviours.get("pbo") or {}).get("pbo"), "pbo_detail": behaviours.get("pbo"),
                        "pbo_error": behaviours.get("pbo_error"), "n_trials": behaviours.get("n_trials"),
                        "sharpe_variance": behaviours.get("sharpe_variance"), "max_pbo": behaviours.get("max_pbo"),
                        "min_deflated_sharpe": behaviours.get("min_deflated_sharpe")},
        "behaviours": {"traced": behaviours.get("traced"), "distinct": behaviours.get("distinct_behaviours"),
                       "shortlist": [{"rank": r["rank"], "config_ids": r["config_ids"],
                                      "behaviour_checksum": r.get("behaviour_checksum")} for r in short]},
    }


def run_walk_forward_step(rd: RunDir, inp: Inputs, sweep: dict[str, Any], opts: RunOptions,
                          console: Console) -> dict[str, Any] | None:
    """Walk-forward optimisation once per run (every candidate's walk_forward gate reads it)."""
    wf_cfg = inp.profile.walk_forward
    if "walk_forward" not in inp.profile.gates:
        return None
    with _progress(console, opts.progress) as bar:
        task = bar.add_task("walk-forward folds", total=wf_cfg.folds)
        wf = rd.run_step("walk_forward", ["walk_forward", f"--folds={wf_cfg.folds}", f"--scheme={wf_cfg.scheme}"],
                         lambda log: step_walk_forward(rd.path, inp, sweep, opts.initial_balance, log,
                                                       on_fold=lambda k, n: bar.update(task, completed=k - 1)))
        bar.update(task, completed=wf_cfg.folds)
    rd.metadata["walk_forward"] = {k: wf.get(k) for k in ("scheme", "efficiency", "wf_median_oos_daily_return",
                                                          "oos_total_return", "passed", "reason")}
    return wf


def execute(rd: RunDir, inp: Inputs, opts: RunOptions, console: Console) -> dict[str, Any]:
    """All steps in order; returns the selection document."""
    meta = rd.metadata
    console.print(f"config {inp.config_path} (config_id {inp.base_cfg.config_id[:12]})", markup=False,
                  highlight=False, soft_wrap=True)
    meta["data"] = data_label(_db_files(inp.candle_sources))
    if meta["data"]["synthetic"]:
        console.print(f"[bold red]{meta['data']['warning']}[/]")
    rd.run_step("data_checks", ["data_checks", *map(str, inp.candle_sources), *map(str, inp.exit_sources)],
                lambda log: step_data_checks(rd, inp, log))
    load_data(inp, opts)
    sweep = rd.run_step("sweep", ["sweep", str(inp.spec_path), f"--backend={inp.profile.backend}"],
                        lambda log: step_sweep(rd, inp, opts, log))
    meta["sweep"] = {k: sweep.get(k) for k in ("backend", "spec_path", "candidates_evaluated", "elapsed_s",
                                               "candidates_per_s", "backend_reason", "precision", "sweep_stage",
                                               "rows_written", "rows_kept_per_mode", "neighborhood", "tpe_trials",
                                               "summary")}
    behaviours = rd.run_step("behaviours", ["trace", f"--pool={inp.profile.overfitting.candidates}"],
                             lambda log: step_behaviours(rd.path, inp, sweep, read_jsonl(sweep["rows_path"]),
                                                         opts.initial_balance, log))
    meta["overfitting"] = {k: behaviours.get(k) for k in ("n_trials", "sharpe_variance", "traced",
                                                          "distinct_behaviours", "pbo_error")}
    meta["overfitting"]["pbo"] = (behaviours.get("pbo") or {}).get("pbo")
    short = rd.run_step("shortlist", ["shortlist", f"--size={inp.profile.shortlist}"],
                        lambda log: step_shortlist(rd, inp, sweep, behaviours, log))
    if not short:
        raise StepFailed("shortlist is empty: no sweep row with at least one trade")
    cands = rd.run_step("configs", ["generate_configs", f"--count={len(short)}"],
                        lambda log: step_configs(rd, inp, short, log))
    meta["candidate_configs"] = [candidate_config_row(c, sweep, None) for c in cands]
    rd.save()
    wf = run_walk_forward_step(rd, inp, sweep, opts, console)
    run_level = {"walk_forward": wf, "overfitting": behaviours}
    gate_label = gates.validation_gate_label(inp.profile.gates)
    replay_fn = make_replay_fn(inp, opts.initial_balance)
    items: list[dict[str, Any]] = []
    chosen = cands[: inp.profile.replay]
    with _progress(console, opts.progress) as bar:
        task = bar.add_task("replay + gates", total=len(chosen))
        for i, cand in enumerate(chosen):
            stem = cand["stem"]

            def tick(what: str, stem=stem) -> None:
                bar.update(task, description=f"{stem}: {what}")

            tick("canonical replay")
            rep = rd.run_step(f"replay_{stem}", ["replay", cand["path"]],
                              lambda log, c=cand: step_replay(rd, inp, c, replay_fn, log, opts.plot))
            tick("replay equivalence")
            eq = rd.run_step(f"equivalence_{stem}", ["equivalence", rep["path"]],
                             lambda log, c=cand, r=rep: step_equivalence(rd, inp, c, sweep, r["path"], opts.initial_balance, log))
            verdict = rd.run_step(f"gates_{stem}", ["gates", gate_label, rep["path"]],
                                  lambda log, c=cand, r=rep: step_gates(rd, inp, c, r["path"], replay_fn, opts, tick, log,
                                                                         run_level))
            item = build_item(cand, sweep, rep["path"], eq, verdict, gate_label)
            items.append(item)
            meta["candidate_configs"][i] = candidate_config_row(cand, sweep, item)
            rd.save()
            bar.advance(task)
    evidence = run_evidence(meta, wf, behaviours, short)
    top = next(iter(rank_candidates(items, rd.path)), None) or best_candidate(items, rd.path)[0]
    evidence["overfitting"].update(deflated_sharpe=(top or {}).get("deflated_sharpe"),
                                   deflated_sharpe_config_id=(top or {}).get("config_id"))
    reports = rd.run_step("report", ["report"], lambda log: write_report(
        items, rd.path / "reports", run_id=meta["run_id"], profile=inp.profile.name, sweep=meta["sweep"],
        evidence=evidence))
    html = rd.run_step("report_html", ["report_html"], lambda log: step_report_html(rd, inp, log))
    bundle = {"run_dir": str(rd.path.resolve()), "run_metadata_json": str(rd.metadata_path.resolve()),
              "report_json": reports["report_json"], "report_md": reports["report_md"],
              **({"report_html": html["report_html"]} if html.get("report_html") else {}),
              "selection_json": str((rd.path / "reports" / "selection.json").resolve()),
              "selection_md": str((rd.path / "reports" / "selection.md").resolve())}

    def select(log) -> dict[str, Any]:
        sel = build_selection(items, run_id=meta["run_id"], run_dir=rd.path, bundle=bundle, no_deploy=opts.no_deploy,
                              evidence=evidence)
        write_selection(sel)
        return sel

    sel = rd.run_step("selection", ["select"], select)
    if sel["deploy_stage"] == "pending" and inp.profile.gate_mode != "enforce":
        sel.update(deploy_stage="skipped", promotion_stage="skipped",
                   deploy_reason=f"profile {inp.profile.name!r} runs gates in advisory mode: it never deploys")
        write_selection(sel)
    if sel["deploy_stage"] == "pending":
        dep = rd.run_step("deploy", ["deploy_paper", sel["selected"]["config_path"]], lambda log: step_deploy(rd, sel, opts, log))
        sel.update(dep)
        sel["promotion_stage"] = "skipped"
        sel["promotion_reason"] = "live promotion is promote_to_live's decision after paper evidence"
        sel["deployments"] = [dep["deployment"]] if dep.get("deployment") else []
        write_selection(sel)
    meta["registry_ingest"] = rd.run_step("registry", ["registry_ingest"], lambda log: record_registry(rd, items, opts))
    meta["selection"] = {k: sel[k] for k in ("selection_stage", "deploy_stage", "promotion_stage")}
    return sel


def _err(line: str) -> None:
    """One line on stderr, never wrapped (operators grep these)."""
    sys.stderr.write(line.replace("\n", " ") + "\n")
    sys.stderr.flush()


def check_run_options(opts: RunOptions, profile: Profile) -> None:
    """Cheap checks of values that would otherwise fail deep inside the run."""
    import math

    from marketdata.intervals import MarketDataError, normalize_interval

    bal = opts.initial_balance
    if isinstance(bal, bool) or not isinstance(bal, (int, float)) or not math.isfinite(bal) or bal <= 0:
        raise InputError(f"--initial-balance must be a finite number > 0 (got {bal})")
    try:
        normalize_interval(profile.interval)
    except MarketDataError as exc:
        raise InputError(f"--interval: {exc}") from None


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def check_resume_profile(opts: RunOptions, run_id: str, profile: Profile) -> None:
    """--resume continues the run it started: the profile resolved now (profiles file + flags) must be
    the one stored in run_metadata.json, or finished steps would mix two settings."""
    from factory.run_dir import find_existing_run_dir

    existing = find_existing_run_dir(Path(opts.artifacts_dir), run_id)
    if not opts.resume or existing is None:
        return
    try:
        stored = read_json(existing / "run_metadata.json").get("profile_resolved")
    except (OSError, ValueError, AttributeError):
        return  # RunDir.open reports an unreadable metadata file
    if not stored:
        return
    now = _jsonable(profile.model_dump())
    diff = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
    if diff:
        shown = ", ".join(f"{k}: {stored.get(k)!r} -> {now.get(k)!r}" for k in diff[:4])
        raise InputError(f"--resume: the resolved profile {profile.name!r} differs from run {run_id}'s ({shown}); "
                         "resume with the original profile settings or start a new --run-id")


def _mark_failed(opts: RunOptions, run_id: str, reason: str) -> None:
    """A bad --resume input leaves the existing run's metadata saying why it did not continue."""
    from factory.run_dir import find_existing_run_dir

    existing = find_existing_run_dir(Path(opts.artifacts_dir), run_id) if opts.resume else None
    if existing is None:
        return
    try:
        meta = read_json(existing / "run_metadata.json")
    except (OSError, ValueError):
        return
    if isinstance(meta, dict):
        meta.update(status="failed", failure_reason=reason)
        try:
            write_json_atomic(existing / "run_metadata.json", meta)
        except OSError:
            pass  # best effort: the refusal itself is still reported on stderr


def run_factory(opts: RunOptions, console: Console | None = None) -> int:
    """CLI entry: 0 ok, 1 failed step, 2 bad input, 130 interrupted."""
    console = console or Console()
    run_id = opts.run_id or default_run_id(opts.profile)
    try:
        check_run_id(run_id)  # first: --resume below may write into the run it names
    except RunDirError as exc:
        _err(f"factory: {exc}")
        return 2
    try:
        profile = resolve_profile(opts.profile, opts.profile_overrides(), opts.profiles_path)
        check_run_options(opts, profile)
        check_resume_profile(opts, run_id, profile)
    except InputError as exc:
        if not str(exc).startswith("--resume:"):
            _mark_failed(opts, run_id, str(exc))
        _err(f"factory: {exc}")
        return 2
    except ValueError as exc:
        _err(f"factory: {exc}")
        return 2
    args = {k: v for k, v in dataclasses.asdict(opts).items() if k not in ("extra", "progress")}
    try:
        rd = RunDir.open(opts.artifacts_dir, run_id, profile=opts.profile, args=args, resume=opts.resume,
                         initial_balance=opts.initial_balance, guarded_args=GUARDED_ARGS)
    except ValueError as exc:
        _err(f"factory: {exc}")
        return 2
    except (RunDirWriteError, OSError) as exc:
        _err(f"factory: {exc}")
        return 1
    return _run_in(rd, opts, console)


def _run_in(rd: RunDir, opts: RunOptions, console: Console) -> int:
    """The run proper, then its result to the operator's alert targets (AI_QUANT_ALERT_TARGETS)."""
    code = _run_steps(rd, opts, console)
    alert_factory_result(rd, code)
    return code


def alert_factory_result(rd: RunDir, code: int) -> None:
    """The nightly run's verdict reaches a phone: selected / not deployable / failed, with the run id.
    Alerting never changes the run's outcome: a bad alert setting is one note on stderr."""
    from live.alerts import Alerter
    from live.env import EnvError

    try:
        alerter = Alerter.from_env()
    except EnvError as exc:
        _err(f"factory: note: alerts off: {exc}")
        return
    if not alerter.enabled:
        return
    meta = rd.metadata
    sel = meta.get("selection") or {}
    verdict = (f"{sel.get('selection_stage')}, deploy {sel.get('deploy_stage')}" if code == 0
               else f"{meta.get('status', 'failed')} (exit {code}): {meta.get('failure_reason') or ''}")
    data = " [SYNTHETIC DEMO DATA]" if (meta.get("data") or {}).get("synthetic") else ""
    alerter.send("factory_result", f"factory run {meta.get('run_id')}: {verdict}{data}; {rd.path}",
                 severity="info" if code == 0 else "warning")
    alerter.close(5.0)


def _run_steps(rd: RunDir, opts: RunOptions, console: Console) -> int:
    """Every outcome is one line and an exit code, and the run's metadata says why, unless the
    disk that failed the run refuses that write too (then the line says so)."""
    rd.install_signal_handlers()
    started = time.monotonic()
    try:
        inp = prepare_inputs(opts)
        rd.metadata["profile_resolved"] = _jsonable(inp.profile.model_dump())
        rd.metadata["config_path"] = str(inp.config_path)
        sel = execute(rd, inp, opts, console)
        rd.metadata["elapsed_s"] = round(time.monotonic() - started, 3)
        rd.finish("ok")
    except RunInterrupted as exc:
        note = rd.finish_quietly("interrupted", str(exc))
        _err(f"factory: {exc}; finished steps are kept in {rd.metadata_path} (continue with --resume){note}")
        return 130
    except (InputError, StepFailed, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        note = rd.finish_quietly("failed", reason)
        _err(f"factory: {reason} (run dir {rd.path}){note}")
        return 2 if isinstance(exc, InputError) else 1
    except OSError as exc:  # disk full, read-only or vanished artifacts dir: not an internal error
        reason = f"file system error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        note = rd.finish_quietly("failed", reason)
        _err(f"factory: {reason} (run dir {rd.path}){note}")
        return 1
    except Exception as exc:  # noqa: BLE001 - an internal error still leaves a consistent run_metadata
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        note = rd.finish_quietly("failed", reason)
        _err(f"factory: internal error: {reason} (see {rd.path / 'logs'}){note}")
        return 1
    finally:
        rd.restore_signal_handlers()
    print_summary(console, rd, sel)
    return 0


def print_summary(console: Console, rd: RunDir, sel: dict[str, Any]) -> None:
    """The verdict in words that mean what they say: "selected" only for a deployable candidate,
    "best candidate (not deployable: ...)" otherwise, and the synthetic-data warning first."""
    s = sel.get("selected")
    best = s or sel.get("best_candidate")
    data = sel.get("data") or {}
    head = "selected" if s else ("best candidate (not deployable)" if best else sel["selection_stage"])
    title = f"factory run {rd.metadata['run_id']}: {head}" + (f" — {data['label']}" if data.get("synthetic") else "")
    table = Table(title=title)
    for col in ("config_id", "pnl", "trades", "max dd", "score_v1", "DSR", "equivalence"):
        table.add_column(col, no_wrap=True)
    if best:
        table.add_row(str(best["config_id"])[:12], f"{best['total_pnl']:.2f}", str(best["total_trades"]),
                      f"{best['max_drawdown_pct']:.2%}", f"{best['score_v1']:.5f}",
                      _fmt_opt(best.get("deflated_sharpe"), ".3f"),
                      f"{best['replay_equivalence_status']} ({best['replay_equivalence_count']})")
    console.print(table)
    ov = sel.get("overfitting") or {}
    if ov.get("pbo") is not None or ov.get("pbo_error"):
        console.print(f"overfitting: PBO {_fmt_opt(ov.get('pbo'), '.2f')} (CSCV over the top sweep candidates; "
                      f"max {ov.get('max_pbo')}), DSR = deflated Sharpe ratio given {ov.get('n_trials')} candidates "
                      f"tried (min {ov.get('min_deflated_sharpe')})"
                      + (f"; PBO not computed: {ov['pbo_error']}" if ov.get("pbo_error") else ""),
                      markup=False, soft_wrap=True)
    console.print(sel.get("score_v1_definition") or scoring.SCORE_V1_EXPLAINED, markup=False, soft_wrap=True)
    wf = sel.get("walk_forward") or {}
    if wf:
        console.print(f"walk-forward ({wf.get('folds')} folds, out-of-sample only): "
                      f"median OOS daily return {_fmt_opt(wf.get('wf_median_oos_daily_return'), '.5f')}, "
                      f"efficiency {_fmt_opt(wf.get('efficiency'), '.2f')}, "
                      f"stitched OOS return {_fmt_opt(wf.get('oos_total_return'), '+.2%')}", markup=False, soft_wrap=True)
    if not s and best:
        console.print(f"best candidate (not deployable: {'; '.join(sel.get('best_candidate_reasons') or [])})",
                      markup=False, soft_wrap=True)
    for nd in sel.get("not_deployable", []):
        if best and nd["config_id"] == best["config_id"] and not s:
            continue  # said in the line above
        console.print(f"not deployable {str(nd['config_id'])[:12]}: {'; '.join(nd['reasons'])}", markup=False, soft_wrap=True)
    console.print(f"deploy_stage={sel['deploy_stage']} promotion_stage={sel['promotion_stage']}"
                  + (f" ({sel['deploy_reason']})" if sel.get("deploy_reason") else ""), markup=False, soft_wrap=True)
    for key, path in sorted(sel["evidence_bundle_paths"].items()):
        console.print(f"  {key}: {path}", markup=False, highlight=False, soft_wrap=True)
    if best:
        console.print(f"  replay_report: {best['replay_report_path']}", markup=False, highlight=False, soft_wrap=True)
        console.print(f"  replay_equivalence: {best['replay_equivalence_report_path']}", markup=False, highlight=False, soft_wrap=True)
    tpe_db = rd.path / "state" / "tpe.sqlite3"
    if tpe_db.exists():
        from gpu.tpe import dashboard_hint

        console.print(dashboard_hint(f"sqlite:///{tpe_db.resolve()}", f"factory_{rd.metadata['run_id']}"),
                      markup=False, highlight=False, soft_wrap=True)


def _fmt_opt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)
