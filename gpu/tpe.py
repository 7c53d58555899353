"""Batched TPE search with optuna: ask a batch, evaluate it in ONE kernel launch, tell the batch.

Each axis is suggested as an integer index into its value list, so TPE sees the axis as ordered
and every proposal is exactly one of the spec's values (no float drift in overrides or
config ids). With a storage URL the study survives a kill: told trials are kept, trials that
were asked but never told (RUNNING) are evaluated first on resume, and the run stops when the
study holds the requested number of finished trials.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gpu.grid import encoded_columns
from gpu.spec import SweepSpec
from strategy.layout import M_MAX_DD, M_SHARPE, M_TOTAL_PNL, M_TOTAL_TRADES

OBJECTIVES = ("pnl", "sharpe", "balanced")


def objective_value(metrics_row: np.ndarray, objective: str, initial_balance: float) -> float:
    """Scalar to maximise. balanced = return fraction - 2 x max drawdown; no trades scores -1."""
    if objective == "pnl":
        value = float(metrics_row[M_TOTAL_PNL])
    elif objective == "sharpe":
        value = float(metrics_row[M_SHARPE])
    elif objective == "balanced":
        if metrics_row[M_TOTAL_TRADES] <= 0:
            return -1.0
        value = float(metrics_row[M_TOTAL_PNL]) / initial_balance - 2.0 * float(metrics_row[M_MAX_DD])
    else:
        raise ValueError(f"--objective: unknown objective {objective!r} (choose from {', '.join(OBJECTIVES)})")
    return value if math.isfinite(value) else -1e18


@dataclass
class TpeOutcome:
    trial_numbers: list[int]
    value_idx: np.ndarray   # int32[n, naxes], in evaluation order
    metrics: np.ndarray     # float64[n, NM]
    resumed_from: int       # finished trials already in the storage at start
    rejected: int           # trials that violated a constraint (told as pruned, not evaluated)


def _param_name(i: int, path: str) -> str:
    return f"a{i:02d}:{path}"


def _trial_value_idx(spec: SweepSpec, params: dict) -> np.ndarray:
    return np.array([params[_param_name(i, a.path)] for i, a in enumerate(spec.axes)], dtype=np.int32)


def _distributions(spec: SweepSpec) -> dict:
    from optuna.distributions import IntDistribution

    return {_param_name(i, a.path): IntDistribution(0, len(a.values) - 1) for i, a in enumerate(spec.axes)}


def open_study(spec: SweepSpec, *, seed: int, storage: str | None, study_name: str | None,
               finished: int = 0):
    """Create or load the study. A resumed sampler is re-seeded (seed + finished trials) so its
    random start-up proposals do not repeat the ones already told."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed + finished)
    name = study_name or "sweep"
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                               direction="maximize", load_if_exists=storage is not None)


def run_tpe(spec: SweepSpec, evaluate: Callable[[np.ndarray], np.ndarray], *, trials: int, batch: int,
            seed: int = 42, storage: str | None = None, study_name: str | None = None,
            objective: str = "pnl", initial_balance: float = 10_000.0,
            on_batch: Callable[[int], None] | None = None) -> TpeOutcome:
    """Run until the study holds ``trials`` finished trials. ``evaluate(value_idx) -> metrics``."""
    import optuna
    from optuna.trial import TrialState

    if objective not in OBJECTIVES:
        raise ValueError(f"--objective: unknown objective {objective!r} (choose from {', '.join(OBJECTIVES)})")
    if trials < 1 or batch < 1:
        raise ValueError("--trials and --batch must be >= 1")
    dists = _distributions(spec)
    probe = open_study(spec, seed=seed, storage=storage, study_name=study_name)
    done_states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    finished = len(probe.get_trials(deepcopy=False, states=done_states))
    study = open_study(spec, seed=seed, storage=storage, study_name=study_name, finished=finished) \
        if finished else probe
    orphans = list(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    numbers: list[int] = []
    idx_rows: list[np.ndarray] = []
    metric_rows: list[np.ndarray] = []
    rejected = 0
    told = finished
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        while told < trials:
            want = min(batch, trials - told)
            pending: list[tuple[int, np.ndarray]] = []
            while orphans and len(pending) < want:  # asked before a kill, never told
                orphan = orphans.pop(0)
                pending.append((orphan.number, _trial_value_idx(spec, orphan.params)))
            while len(pending) < want:
                trial = study.ask(dists)
                pending.append((trial.number, _trial_value_idx(spec, trial.params)))
            batch_idx = np.stack([p[1] for p in pending])
            ok = spec.satisfies(encoded_columns(spec, batch_idx))
            metrics = evaluate(batch_idx[ok]) if ok.any() else np.zeros((0, 0))
            k = 0
            for (num, row), good in zip(pending, ok, strict=True):
                if not good:
                    study.tell(num, state=TrialState.PRUNED)
                    rejected += 1
                    continue
                m = metrics[k]
                k += 1
                study.tell(num, objective_value(m, objective, initial_balance))
                numbers.append(num)
                idx_rows.append(row)
                metric_rows.append(m)
            told += len(pending)
            if on_batch is not None:
                on_batch(len(pending))
    naxes = len(spec.axes)
    return TpeOutcome(
        trial_numbers=numbers,
        value_idx=np.stack(idx_rows) if idx_rows else np.zeros((0, naxes), dtype=np.int32),
        metrics=np.stack(metric_rows) if metric_rows else np.zeros((0, 0)),
        resumed_from=finished, rejected=rejected,
    )
