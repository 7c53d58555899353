"""The sweep as a library: run_sweep (grid or TPE) and trace_candidates (trade lists for a few).

Flow: spec -> candidates -> window keys per feature -> indicator pool (once) -> backend batches ->
metrics -> rows. Every row carries the config_id of the EFFECTIVE config (base + overrides), so
the factory can hand exactly that config to the canonical replay.

The data is bound exactly as cpu_replay.run_replay binds it (``bind_data``): the base config's
``watchlist_exclude`` symbols are dropped first, and a finer ``engine.exit_interval`` brings its
candles in as sub-bars under each main bar. Anything the replay would do differently (entries on
another interval, a per-candidate exit interval) is refused rather than silently approximated.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpu.backend import Evaluator, StaticInputs, choose_backend
from gpu.grid import CandidateSet, candidates_from_overrides, encoded_columns, expand_grid
from gpu.precompute import FEATURE_SOURCES, precompute
from gpu.spec import SweepSpec, SweepSpecError, bind_base, parse_sweep_spec
from marketdata.candles import exclude_symbols
from marketdata.subbars import SubBarError, SubBars, build_sub_bars
from strategy import layout as L
from strategy.features import NF
from strategy.params import NW, PARAM_INDEX
from strategy.records import trade_dicts

ROW_METRICS = (
    ("total_pnl", L.M_TOTAL_PNL), ("total_trades", L.M_TOTAL_TRADES), ("win_rate", L.M_WIN_RATE),
    ("profit_factor", L.M_PROFIT_FACTOR), ("max_drawdown_pct", L.M_MAX_DD), ("sharpe", L.M_SHARPE),
    ("total_fees", L.M_TOTAL_FEES), ("final_balance", L.M_FINAL_BALANCE),
)
MAX_WINDOW_UNIVERSE = 1_000_000


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]
    backend: str
    backend_reason: str
    candidates_evaluated: int
    elapsed_s: float
    precision: str = "f64"
    indicator_arrays: dict[str, int] = field(default_factory=dict)
    tpe_resumed_from: int = 0
    # TPE with neighbourhoods: trials told, neighbourhood places left empty, M, candidates seen once
    tpe_proposals: int = 0
    tpe_rejected: int = 0
    neighborhood: int = 1
    distinct_candidates: int = 0
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def candidates_per_s(self) -> float:
        return self.candidates_evaluated / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def rows_written(self) -> int:
        return len(self.rows)


# ---------------------------------------------------------------------------------- data binding

def check_engine_settings(base_cfg, md_interval: str, exit_md, axes: tuple = ()) -> None:
    """Refuse engine settings the sweep cannot reproduce exactly like the canonical replay."""
    entry = base_cfg.entry_interval
    if entry and entry != md_interval:
        raise SweepSpecError(f"global.engine.entry_interval={entry}: entries on another interval than the "
                             f"main interval ({md_interval}) are not supported; set it to null or {md_interval}")
    for axis in axes:
        # engine.exit_fill is a kernel parameter (a rule's switch); the other engine keys bind data
        if axis.path.startswith("engine.") and axis.path not in PARAM_INDEX:
            raise SweepSpecError(f"axis {axis.path}: engine.* settings cannot be swept (the data binding is "
                                 "shared by every candidate); run one sweep per setting")
    exit_iv = base_cfg.exit_interval
    if not exit_iv or exit_iv == md_interval:
        return
    if exit_md is None:
        raise SweepSpecError(f"global.engine.exit_interval={exit_iv} needs the {exit_iv} candles "
                             "(pass --exit-candles-db / exit_md, or set exit_interval to null)")
    if exit_md.interval != exit_iv:
        raise SweepSpecError(f"exit candles are {exit_md.interval} but global.engine.exit_interval={exit_iv}")


def bind_data(base_cfg, md, funding: np.ndarray | None, exit_md=None, axes: tuple = ()):
    """(md, funding, sub) as the replay sees them: watchlist_exclude applied, exit sub-bars built.

    ``exit_md`` is used only when the base config's exit_interval differs from the data interval;
    the sub-bars are aligned to ``md``'s symbols by name, so excluded symbols drop out of both.
    """
    md, funding = exclude_symbols(md, base_cfg.watchlist_exclude, funding)
    if not md.symbols:
        raise SweepSpecError("no symbols to sweep (all excluded by global.watchlist_exclude?)")
    check_engine_settings(base_cfg, md.interval, exit_md, axes)
    exit_iv = base_cfg.exit_interval
    if not exit_iv or exit_iv == md.interval:
        return md, funding, None
    try:
        return md, funding, build_sub_bars(md, exit_md)
    except SubBarError as exc:
        raise SweepSpecError(f"global.engine.exit_interval={exit_iv}: {exc}") from None


# ---------------------------------------------------------------------------------- preparation

def _symbol_overrides(base_cfg, symbols: list[str], path: str) -> list[bool]:
    """Which symbols set ``path`` themselves (their own value must survive the sweep's axis)."""
    per_symbol = (base_cfg.to_dict().get("symbols") or {})
    out = []
    for sym in symbols:
        node: Any = per_symbol.get(sym) or {}
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        out.append(node is not None)
    return out


def _trading_range(md, lookback: int, start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    """Bars [t0, t1) that trade. Bars before t0 only warm the (precomputed) indicators."""
    times = np.asarray(md.times)
    t0 = min(int(lookback), len(times))
    if start_ms is not None:
        t0 = max(t0, int(np.searchsorted(times, int(start_ms), side="left")))
    t1 = len(times) if end_ms is None else int(np.searchsorted(times, int(end_ms), side="left"))
    return t0, max(t0, t1)


@dataclass
class Prepared:
    """A spec bound to data: static inputs plus how to turn candidates into kernel vectors."""

    spec: SweepSpec
    static: StaticInputs
    param_axes: list[int]
    window_axes: list[int]
    # per feature column: (window axes its pool row depends on, their mixed-radix weights, pool row
    # by combination of those axes' value indices)
    feature_lookup: list[tuple[list[int], np.ndarray, np.ndarray]]
    computed: dict[str, int]

    def kernel_vectors(self, value_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        enc = encoded_columns(self.spec, value_idx)
        pvals = np.ascontiguousarray(enc[:, self.param_axes])
        fidx = np.empty((len(value_idx), NF), dtype=np.int32)
        for f, (axes, radix, rows) in enumerate(self.feature_lookup):
            if not axes:
                fidx[:, f] = rows[0]
                continue
            combo = (value_idx[:, axes].astype(np.int64) * radix).sum(axis=1)
            fidx[:, f] = rows[combo]
        return pvals, fidx


def _window_rows(spec: SweepSpec, base_windows: np.ndarray, window_axes: list[int]):
    """The window vectors the indicator pool must cover, feature by feature: a feature's pool row
    depends only on the swept windows among its key columns (stoch RSI on four, EMA fast on one),
    so each feature needs the combinations of those few axes' values, never the product of every
    window axis (141 reference axes hold 13 window axes: ~7e8 combinations, ~300 feature keys).
    Returns (window vectors int64[n, NW], per feature (axes, radix, first row, count))."""
    def window_value(k: int, slot: int) -> int:
        axis = spec.axes[k]
        return int(axis.values[slot]) if slot < len(axis.values) else int(base_windows[axis.index])

    vectors: list[np.ndarray] = []
    layout = []
    for f in range(NF):
        source = FEATURE_SOURCES.get(f)
        cols = set(source[2]) if source else set()
        axes = [k for k in window_axes if spec.axes[k].index in cols]
        sizes = [spec.axes[k].slots for k in axes]
        count = int(np.prod(sizes)) if sizes else 1
        if count > MAX_WINDOW_UNIVERSE:
            raise SweepSpecError(f"{spec.source}: axes: {count:,} window combinations feed one indicator "
                                 f"(limit {MAX_WINDOW_UNIVERSE:,}); sweep fewer window values")
        radix = np.ones(len(sizes), dtype=np.int64)
        for i in range(len(sizes) - 2, -1, -1):
            radix[i] = radix[i + 1] * sizes[i + 1]
        layout.append((axes, radix, sum(len(v) for v in vectors), count))
        block = np.tile(base_windows, (count, 1))
        for row, combo in enumerate(itertools.product(*[range(n) for n in sizes])):
            for k, slot in zip(axes, combo, strict=True):
                block[row, spec.axes[k].index] = window_value(k, slot)
        vectors.append(block)
    return np.concatenate(vectors), layout


def prepare(base_cfg, spec: SweepSpec, md, funding: np.ndarray | None, *, precision: str = "f64",
            start_ms: int | None = None, end_ms: int | None = None,
            initial_balance: float | None = None, sub: SubBars | None = None) -> Prepared:
    """Everything computed once per sweep: base params, indicator pool, window lookups.

    ``md``/``funding``/``sub`` are already bound (see ``bind_data``)."""
    if precision not in ("f64", "f32"):
        raise SweepSpecError(f"--precision: expected f64 or f32, got {precision!r}")
    spec = bind_base(spec, base_cfg)
    symbols = list(md.symbols)
    param_axes = [k for k, a in enumerate(spec.axes) if a.kind == "param"]
    window_axes = [k for k, a in enumerate(spec.axes) if a.kind == "window"]
    base_params = np.ascontiguousarray(base_cfg.params_matrix(symbols), dtype=np.float64)
    preplace = np.ones((len(symbols), len(param_axes)), dtype=np.uint8)
    for j, k in enumerate(param_axes):
        preplace[:, j] = [0 if own else 1 for own in _symbol_overrides(base_cfg, symbols, spec.axes[k].path)]
    base_windows = np.asarray(base_cfg.windows(), dtype=np.int64).reshape(NW)
    vectors, layout = _window_rows(spec, base_windows, window_axes)
    pre = precompute(md, vectors, precision=precision)
    lookup = [(axes, radix, np.ascontiguousarray(pre.fidx[start:start + count, f]))
              for f, (axes, radix, start, count) in enumerate(layout)]
    t0, t1 = _trading_range(md, spec.lookback, start_ms, end_ms)
    if sub is not None and sub.covered >= 0:
        t1 = max(t0, min(t1, sub.covered))  # as the replay: a bar whose exit bars are not all in waits
    times = np.ascontiguousarray(md.times, dtype=np.int64)
    fund = np.zeros(md.close.shape) if funding is None else np.ascontiguousarray(funding, dtype=np.float64)
    static = StaticInputs(
        pool=pre.pool, pcols=np.array([spec.axes[k].index for k in param_axes], dtype=np.int64),
        preplace=preplace, base_params=base_params,
        valid=np.ascontiguousarray(md.valid, dtype=np.uint8), funding=fund,
        t_open=times, t_close=times + np.int64(md.interval_ms), t0=t0, t1=t1,
        btc_idx=symbols.index("BTC") if "BTC" in symbols else -1,
        initial_balance=float(spec.initial_balance if initial_balance is None else initial_balance),
        sub=sub,
    )
    return Prepared(spec, static, param_axes, window_axes, lookup, pre.computed)


# ------------------------------------------------------------------------------------- rows

def effective_config_id(base_cfg, overrides: dict[str, Any]) -> str:
    from strategy.config import apply_overrides

    return apply_overrides(base_cfg, overrides).config_id


def metrics_to_row(metrics_row: np.ndarray) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, col in ROW_METRICS:
        value = float(metrics_row[col])
        row[name] = int(value) if name == "total_trades" else value
    return row


RowScore = Callable[[np.ndarray], np.ndarray]  # metrics[n, NM] -> score[n]; higher is better


def first_occurrences(value_idx: np.ndarray) -> np.ndarray:
    """Indices of each distinct candidate's first evaluation (neighbourhoods of different trials
    can overlap, and TPE may propose a config twice: one row per config)."""
    if len(value_idx) == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.ascontiguousarray(value_idx)
    as_bytes = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first = np.unique(as_bytes, return_index=True)
    return np.sort(first)


def _best_first(candidates: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``candidates`` ordered by score descending, ties by evaluation order (stable, reproducible)."""
    return candidates[np.lexsort((candidates, -score[candidates]))]


def kept_row_indices(metrics: np.ndarray, objective_score: np.ndarray, *, top_n: int | None,
                     keep_scores: dict[str, RowScore] | None = None,
                     candidates: np.ndarray | None = None) -> np.ndarray:
    """Rows to write, best-first by the objective: the top ``top_n`` by the objective plus the top
    ``top_n`` by each extra score (a non-finite extra score means "not eligible"), deduplicated.
    Without ``top_n`` every candidate is kept."""
    cand = np.arange(len(metrics), dtype=np.int64) if candidates is None else np.asarray(candidates, np.int64)
    if top_n is None:
        return _best_first(cand, objective_score)
    keep = [_best_first(cand, objective_score)[:top_n]]
    for score_fn in (keep_scores or {}).values():
        score = np.asarray(score_fn(metrics), dtype=np.float64)
        eligible = cand[np.isfinite(score[cand])]
        keep.append(_best_first(eligible, score)[:top_n])
    return _best_first(np.unique(np.concatenate(keep)), objective_score)


def build_rows(base_cfg, cands: CandidateSet, metrics: np.ndarray, *, backend: str, precision: str,
               order: np.ndarray) -> list[dict[str, Any]]:
    """Rows in ``order``; config ids (~0.7 ms each) are computed only for the rows kept."""
    rows = []
    for i in order:
        overrides = cands.overrides(i)
        row = {"config_id": effective_config_id(base_cfg, overrides), "overrides": overrides}
        row.update(metrics_to_row(metrics[i]))
        row.update(backend=backend, precision=precision)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------- progress

class _Progress:
    """A rich progress bar with candidates/s; a no-op when progress is off."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.bar = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.start = time.perf_counter()
            self.done = 0
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task(label, total=total, rate="")
            self.bar.start()

    def advance(self, n: int) -> None:
        if self.bar is None:
            return
        self.done += n
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        self.bar.update(self.task, advance=n, rate=f"{rate:,.0f} cand/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# ------------------------------------------------------------------------------------- public

def run_sweep(base_cfg, spec: SweepSpec, md, funding: np.ndarray | None, *, backend: str = "auto",
              precision: str = "f64", tpe: bool = False, trials: int | None = None,
              batch: int | None = None, seed: int = 42, storage: str | None = None,
              top_n: int | None = None, progress: bool = True, study_name: str | None = None,
              objective: str = "pnl", start_ms: int | None = None, end_ms: int | None = None,
              exit_md=None, neighborhood: int = 1,
              keep_scores: dict[str, RowScore] | None = None) -> SweepResult:
    """Evaluate a grid (or TPE candidates) and return rows sorted best-first by ``objective``.

    TPE: ``trials`` = candidates to evaluate, ``batch`` = candidates per kernel launch, each optuna
    trial expanded into a neighbourhood of ``neighborhood`` candidates (gpu/tpe.py).
    ``top_n`` keeps the best K rows by the objective and by each of ``keep_scores`` (the factory
    passes its shortlist sort modes), so a million-candidate run writes tens of thousands of rows.
    ``exit_md``: candles of the base config's finer exit interval (needed when it has one)."""
    from gpu.tpe import objective_values, run_tpe

    md, funding, sub = bind_data(base_cfg, md, funding, exit_md, spec.axes)
    spec = bind_base(spec, base_cfg)
    name, reason = choose_backend(backend)
    started = time.perf_counter()
    prep = prepare(base_cfg, spec, md, funding, precision=precision, start_ms=start_ms, end_ms=end_ms, sub=sub)
    evaluator = Evaluator(prep.static, name)
    initial = prep.static.initial_balance
    if tpe:
        cands, metrics, tpe_info = _run_tpe_sweep(spec, prep, evaluator, name, trials=trials, batch=batch,
                                                  seed=seed, storage=storage, study_name=study_name,
                                                  objective=objective, progress=progress,
                                                  neighborhood=neighborhood, run_tpe=run_tpe)
        distinct = first_occurrences(cands.value_idx)
    else:
        cands = expand_grid(spec)
        bar = _Progress(progress, len(cands), f"grid sweep ({name})")
        try:
            pvals, fidx = prep.kernel_vectors(cands.value_idx)
            metrics = evaluator.evaluate(pvals, fidx, on_batch=bar.advance)[0]
        finally:
            bar.close()
        tpe_info, distinct = {}, None
    score = objective_values(metrics, objective, initial) if len(cands) else np.zeros(0)
    order = kept_row_indices(metrics, score, top_n=top_n, keep_scores=keep_scores, candidates=distinct)
    rows = build_rows(base_cfg, cands, metrics, backend=name, precision=precision, order=order)
    n_distinct = len(cands) if distinct is None else len(distinct)
    return SweepResult(rows=rows, backend=name, backend_reason=reason, candidates_evaluated=len(cands),
                       elapsed_s=time.perf_counter() - started, precision=precision,
                       indicator_arrays=prep.computed, distinct_candidates=n_distinct,
                       summary=sweep_summary(metrics, len(cands), n_distinct, len(rows), tpe_info),
                       **{k: v for k, v in tpe_info.items() if k != "candidates_before"})


def _run_tpe_sweep(spec, prep: Prepared, evaluator, name: str, *, trials, batch, seed, storage, study_name,
                   objective, progress, neighborhood, run_tpe):
    if not trials:
        raise SweepSpecError("--trials: required with --tpe (a positive integer)")
    if neighborhood < 1:
        raise SweepSpecError(f"--neighborhood must be >= 1 (got {neighborhood})")
    bar = _Progress(progress, trials, f"TPE sweep ({name}, M={neighborhood})")

    def evaluate(value_idx):
        pvals, fidx = prep.kernel_vectors(value_idx)
        return evaluator.evaluate(pvals, fidx)[0]

    try:
        default = evaluator.max_batch if name == "cuda" else 1024  # on CUDA: what fills the device
        out = run_tpe(spec, evaluate, trials=trials, batch=batch or min(trials, default), seed=seed,
                      storage=storage, study_name=study_name, objective=objective,
                      initial_balance=prep.static.initial_balance, on_batch=bar.advance,
                      neighborhood=neighborhood)
    finally:
        bar.close()
    info = {"tpe_resumed_from": out.resumed_from, "tpe_proposals": out.proposals,
            "tpe_rejected": out.rejected, "neighborhood": out.neighborhood, "candidates_before": out.candidates_before}
    return CandidateSet(spec, out.value_idx), out.metrics, info


def sweep_summary(metrics: np.ndarray, evaluated: int, distinct: int, written: int,
                  tpe_info: dict[str, Any]) -> dict[str, Any]:
    """Counts that describe the whole sweep when only its top rows are written."""
    has = len(metrics) > 0 and metrics.ndim == 2 and metrics.shape[1] > L.M_TOTAL_PNL
    trades = metrics[:, L.M_TOTAL_TRADES] if has else np.zeros(0)
    pnl = metrics[:, L.M_TOTAL_PNL] if has else np.zeros(0)
    out = {"candidates_evaluated": int(evaluated), "distinct_candidates": int(distinct),
           "rows_written": int(written), "with_trades": int((trades > 0).sum()),
           "profitable": int(((pnl > 0) & (trades > 0)).sum()),
           "best_total_pnl": float(pnl.max()) if len(pnl) else None}
    if tpe_info:
        out.update({"tpe_trials": int(tpe_info["tpe_proposals"]), "neighborhood": int(tpe_info["neighborhood"]),
                    "rejected_by_constraints": int(tpe_info["tpe_rejected"]),
                    "resumed_from_trials": int(tpe_info["tpe_resumed_from"]),
                    "resumed_from_candidates": int(tpe_info["candidates_before"])})
    return out


def _spec_for_overrides(base_cfg, overrides_list: list[dict[str, Any]], lookback: int,
                        initial_balance: float) -> tuple[SweepSpec, list[dict[str, Any]]]:
    """A one-off spec whose axes are the union of the paths the candidates override."""
    paths: list[str] = []
    for ov in overrides_list:
        paths.extend(p for p in ov if p not in paths)
    full = [{p: ov.get(p, base_cfg.get(p)) for p in paths} for ov in overrides_list]
    axes = []
    for p in paths:
        values: list[Any] = []
        for ov in full:
            if not any(type(v) is type(ov[p]) and v == ov[p] for v in values):
                values.append(ov[p])
        axes.append({"path": p, "values": values})
    if not axes:  # the base config itself: sweep one base parameter over its own value
        p = "trade.allocation_pct"
        axes = [{"path": p, "values": [base_cfg.get(p)]}]
        full = [{p: base_cfg.get(p)} for _ in overrides_list]
    spec = parse_sweep_spec({"axes": axes, "lookback": lookback, "initial_balance": initial_balance},
                            source="<trace>")
    return spec, full


def trace_candidates(base_cfg, overrides_list: list[dict[str, Any]], md, funding: np.ndarray | None, *,
                     initial_balance: float = 10_000.0, backend: str = "cpu", precision: str = "f64",
                     lookback: int = 0, start_ms: int | None = None, end_ms: int | None = None,
                     max_trades: int = 4096, exit_md=None) -> list[list[dict[str, Any]]]:
    """Re-run a few candidates with trade buffers and return each one's trade list.

    Data binding as in run_sweep (watchlist_exclude, exit sub-bars); trade symbols name the bound md."""
    if not overrides_list:
        return []
    md, funding, sub = bind_data(base_cfg, md, funding, exit_md)
    spec, full = _spec_for_overrides(base_cfg, overrides_list, lookback, initial_balance)
    check_engine_settings(base_cfg, md.interval, exit_md, spec.axes)
    name, _ = choose_backend(backend)
    prep = prepare(base_cfg, spec, md, funding, precision=precision, start_ms=start_ms, end_ms=end_ms,
                   initial_balance=initial_balance, sub=sub)
    pvals, fidx = prep.kernel_vectors(candidates_from_overrides(spec, full).value_idx)
    evaluator = Evaluator(prep.static, name)
    metrics, trades = evaluator.evaluate(pvals, fidx, max_trades=max_trades)
    counts = metrics[:, L.M_TOTAL_TRADES].astype(np.int64)
    if counts.max(initial=0) > max_trades:  # overflowed: once more with room for every trade
        metrics, trades = evaluator.evaluate(pvals, fidx, max_trades=int(counts.max()))
    return [trade_dicts(trades[i][:int(counts[i])], list(md.symbols)) for i in range(len(full))]
