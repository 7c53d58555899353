"""Batched TPE with local neighbourhoods: optuna proposes, the kernel evaluates a neighbourhood.

Why neighbourhoods: optuna's cost per ``ask`` grows linearly with the trials in the study (~20 us
per stored trial with 24 axes), so one trial per candidate makes a 1,000,000-candidate night spend
days inside optuna while the GPU idles. Here each optuna trial is one proposal P; the sweep
expands it into up to M candidates (P plus neighbours one to three axis steps away) and tells
optuna the best objective of the neighbourhood. 1M candidates at M=256 are ~3,900 trials.

Each axis is suggested in its own values, named by its config path (so optuna-dashboard shows
`trade.sl_atr_mult = 2.25`, not an index): an evenly spaced numeric axis as an Int/FloatDistribution
with that step (ordered for TPE, exactly like an index), any other list as a categorical; the
value is mapped back to its index, so every candidate is exactly one of the spec's values. The
study's metric name is the objective's. With neighbourhoods (M > 1) every evaluated candidate also
goes to a companion study in ``<storage stem>.candidates.journal`` (see ``CandidateLog``). A neighbourhood is drawn from a numpy
Generator seeded by (seed, trial number), so it is a pure function of the trial: a resumed study
regenerates it exactly. With a storage URL the study survives a kill: told trials are kept and
their neighbourhoods are regenerated and re-evaluated (one launch per batch of trials, never told
again) so the outcome holds every candidate of the study, trials asked but never told (RUNNING)
are evaluated next, and the run stops when the told trials account for the requested number of
candidates. The sampler is re-seeded from (seed, trial number) before every ask, so a proposal is
a pure function of the seed and the trials told before it: kill + resume yields the very
candidates of an uninterrupted run.

Budget: ``trials`` counts candidates evaluated. A trial may evaluate min(M, remaining)
candidates; a neighbourhood that cannot be filled (constraint violators that no bounded redraw
replaced) evaluates fewer and the run asks further proposals, so the study ends holding exactly
the requested number of candidates. With M=1 a trial is one candidate and a violating proposal is
told PRUNED (and evaluates nothing), as before.
"""

from __future__ import annotations

import shlex
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np

from gpu.spec import SweepSpec
from strategy.layout import M_MAX_DD, M_SHARPE, M_TOTAL_PNL, M_TOTAL_TRADES, NM

OBJECTIVES = ("pnl", "sharpe", "balanced")
STEP_TWO_PROBABILITY = 0.25   # share of moved axes that jump two values instead of one
MAX_AXES_MOVED = 3
DRAW_ROUNDS = 8               # bounded attempts: at most DRAW_ROUNDS x block draws per neighbourhood
LIMIT_ATTR, CANDIDATES_ATTR, NEIGHBORHOOD_ATTR = "limit", "candidates", "neighborhood"
STALL_PROPOSALS = 2_000       # consecutive proposals with no valid candidate: the constraints win
CANDIDATE_LOG_LIMIT = 100_000  # candidates kept in the companion study (~0.5 ms and ~1 kB each)


# ----------------------------------------------------------------------------------- objective

def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"--objective: unknown objective {objective!r} (choose from {', '.join(OBJECTIVES)})")


def objective_values(metrics: np.ndarray, objective: str, initial_balance: float) -> np.ndarray:
    """Scalar to maximise per metrics row. balanced = return fraction - 2 x max drawdown; no trades
    scores -1; a non-finite value scores -1e18 (never the best)."""
    _check_objective(objective)
    if objective == "pnl":
        value = metrics[:, M_TOTAL_PNL].astype(np.float64)
    elif objective == "sharpe":
        value = metrics[:, M_SHARPE].astype(np.float64)
    else:
        value = metrics[:, M_TOTAL_PNL] / initial_balance - 2.0 * metrics[:, M_MAX_DD]
        value = np.where(metrics[:, M_TOTAL_TRADES] <= 0, -1.0, value)
    return np.where(np.isfinite(value), value, -1e18)


def objective_value(metrics_row: np.ndarray, objective: str, initial_balance: float) -> float:
    return float(objective_values(np.asarray(metrics_row)[None, :], objective, initial_balance)[0])


# ------------------------------------------------------------------------------- neighbourhoods

def compact_index_dtype(spec: SweepSpec) -> np.dtype:
    """Smallest integer type holding every value index: 2M candidates x 24 axes fit in 48 MB."""
    largest = max(a.slots for a in spec.axes)
    return np.dtype(np.uint8 if largest <= 256 else np.uint16 if largest <= 65_536 else np.int32)


class Neighbourhoods:
    """Deterministic neighbourhoods of a proposal: same (seed, trial number, M) -> same candidates."""

    def __init__(self, spec: SweepSpec, seed: int, size: int):
        self.spec, self.seed, self.size = spec, int(seed), int(size)
        self.axis_sizes = np.array([len(a.values) for a in spec.axes], dtype=np.int64)
        self.movable = np.flatnonzero(self.axis_sizes > 1)
        self.gated = np.array(spec.gated, dtype=np.int64)
        self.tables = [spec.table(k) for k in range(len(spec.axes))] if spec.constraints else []
        self.block = max(2 * self.size, 16)

    def satisfies(self, value_idx: np.ndarray) -> np.ndarray:
        if not self.spec.constraints:
            return np.ones(len(value_idx), dtype=bool)
        enc = np.empty(value_idx.shape, dtype=np.float64)
        for k, table in enumerate(self.tables):
            enc[:, k] = table[value_idx[:, k]]
        return self.spec.satisfies(enc)

    def rng(self, trial_number: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed % 2**63, int(trial_number)]))

    def around(self, proposal: np.ndarray, trial_number: int, limit: int) -> np.ndarray:
        """Up to ``limit`` (<= M) distinct valid candidates: P first (if valid), then neighbours in
        draw order. Draws come in blocks sized by M, so a smaller limit yields a prefix of the
        full neighbourhood (a resumed last trial with a smaller remaining budget agrees)."""
        p = np.asarray(proposal, dtype=np.int64)
        valid_p = bool(self.satisfies(p[None, :])[0])
        out = [p] if valid_p else []
        if self.size == 1 or self.movable.size == 0:
            return np.stack(out)[:limit] if out else np.zeros((0, len(p)), dtype=np.int64)
        seen = {p.tobytes()}
        rng = self.rng(trial_number)
        for _ in range(DRAW_ROUNDS):
            if len(out) >= limit:
                break
            draws = self._draw(rng, p)
            ok = self.satisfies(draws)
            for row, good in zip(draws, ok, strict=True):
                key = row.tobytes()
                if key in seen:
                    continue
                seen.add(key)
                if good:
                    out.append(row)
                    if len(out) >= limit:
                        break
        return np.stack(out)[:limit] if out else np.zeros((0, len(p)), dtype=np.int64)

    def _draw(self, rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
        """A block of neighbours: 1..3 random axes, each moved +-1 (or +-2) values, bouncing off
        the ends of the value list. Gated axes: one whose gate is off in P moves from a random
        value of its own, and after the moves every gated axis whose gate is off (again) sits on
        its base slot, so a neighbour that switches a gate on gets values for the axes it opens."""
        n, nm = self.block, self.movable.size
        moved_axes = rng.integers(1, min(MAX_AXES_MOVED, nm) + 1, size=n)
        rank = np.argsort(np.argsort(rng.random((n, nm)), axis=1), axis=1)
        hi = self.axis_sizes[self.movable] - 1
        magnitude = np.minimum(np.where(rng.random((n, nm)) < STEP_TWO_PROBABILITY, 2, 1), hi)
        sign = np.where(rng.random((n, nm)) < 0.5, -1, 1)
        delta = (rank < moved_axes[:, None]) * magnitude * sign
        rows = np.tile(p, (n, 1))
        for k in self.gated:  # a gate switched on by a move needs a value here (no draw without gates)
            rows[:, k] = np.where(rows[:, k] >= self.axis_sizes[k], rng.integers(0, self.axis_sizes[k], size=n),
                                  rows[:, k])
        base = rows[:, self.movable]
        moved = base + delta
        moved = np.where((moved < 0) | (moved > hi), base - delta, moved)
        rows[:, self.movable] = np.clip(moved, 0, hi)
        return self.spec.close_gates(rows) if self.gated.size else rows


# ------------------------------------------------------------------------------------ outcome

@dataclass
class TpeOutcome:
    trial_numbers: np.ndarray   # int64[n]: the optuna trial each candidate belongs to (ascending)
    value_idx: np.ndarray       # [n, naxes] compact ints, in trial order (a resumed run included)
    metrics: np.ndarray         # float64[n, NM]
    resumed_from: int           # finished trials already in the storage at start
    rejected: int               # neighbourhood places left empty by constraint violators (M=1: pruned trials)
    proposals: int = 0          # trials told by this run
    neighborhood: int = 1
    candidates_before: int = 0  # candidates the storage's finished trials had already evaluated


@dataclass
class _Collector:
    """Per-batch arrays, concatenated once at the end (no per-candidate Python objects)."""

    naxes: int
    dtype: np.dtype
    numbers: list[np.ndarray] = field(default_factory=list)
    idx: list[np.ndarray] = field(default_factory=list)
    metrics: list[np.ndarray] = field(default_factory=list)
    log: CandidateLog | None = None       # neighbourhood searches: every candidate for optuna-dashboard
    unlogged: list = field(default_factory=list)

    def add(self, number: int, idx: np.ndarray, metrics: np.ndarray) -> None:
        self.numbers.append(np.full(len(idx), number, dtype=np.int64))
        self.idx.append(idx.astype(self.dtype))
        self.metrics.append(np.asarray(metrics, dtype=np.float64))
        if self.log is not None:
            self.unlogged.append((number, idx, np.asarray(metrics, dtype=np.float64)))

    def flush(self) -> None:
        """One companion-study write per launch (add_trials in bulk)."""
        if self.log is not None and self.unlogged:
            self.log.add(self.unlogged)
        self.unlogged = []

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.idx:
            return np.zeros(0, np.int64), np.zeros((0, self.naxes), self.dtype), np.zeros((0, NM))
        return np.concatenate(self.numbers), np.concatenate(self.idx), np.concatenate(self.metrics)


# -------------------------------------------------------------------------------------- study

def _param_name(i: int, path: str) -> str:
    """The optuna parameter of axis i: its config path, so optuna-dashboard labels it as the YAML does."""
    return path


def _arithmetic_step(values: tuple) -> float | None:
    """The common step of an ascending numeric value list (an evenly spaced axis), else None."""
    if len(values) < 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        return None
    diffs = np.diff(np.asarray(values, dtype=np.float64))
    step = float(f"{float(diffs[0]):.12g}")  # 0.5 - 0.4 is 0.09999999999999998: the axis means 0.1
    if step <= 0 or not np.allclose(diffs, step, rtol=1e-9, atol=1e-12):
        return None
    span = Decimal(str(float(values[-1]))) - Decimal(str(float(values[0])))
    if span % Decimal(str(step)) != 0:  # optuna would move `high` off the last value (and refuse it)
        return None
    return step


def axis_distribution(axis):
    """The optuna distribution of an axis, in the axis's own values (so the study and
    optuna-dashboard show real values, not indices). An evenly spaced numeric axis becomes an
    Int/FloatDistribution with that step, which TPE treats as ordered exactly like the index it
    replaces; any other list (enums, bools, uneven numbers) becomes a categorical of its values."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    values = axis.values
    step = _arithmetic_step(values)
    if step is None:
        return CategoricalDistribution(list(values))
    if all(isinstance(v, int) for v in values):
        return IntDistribution(int(values[0]), int(values[-1]), step=int(step))
    return FloatDistribution(float(values[0]), float(values[-1]), step=step)


def value_index(axis, dist, value) -> int:
    """The index in ``axis.values`` of a value optuna stored (a step grid is snapped to it)."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices).index(value)
    return int(min(max(round((float(value) - dist.low) / dist.step), 0), len(axis.values) - 1))


def _trial_value_idx(spec: SweepSpec, params: dict) -> np.ndarray:
    """Value indices of a trial's parameters. A gated axis has a parameter exactly when its gate
    holds in the trial; without one it sits on its base slot."""
    dists = _distributions(spec)
    names = [_param_name(i, a.path) for i, a in enumerate(spec.axes)]
    out = np.empty(len(spec.axes), dtype=np.int64)
    for k in [k for k, a in enumerate(spec.axes) if a.gate is None] + list(spec.gated):
        axis, name = spec.axes[k], names[k]
        if axis.gate is not None and out[axis.gate.axis] != axis.gate.eq_index:
            out[k] = axis.base_slot
            continue
        if name not in params:
            raise ValueError(f"optuna study: trial has no parameter {name!r} (a study written by an older "
                             "version or another spec; resume with the same spec or use a new --study-name)")
        out[k] = value_index(axis, dists[name], params[name])
    return out


def _trial_params(spec: SweepSpec, dists: dict, value_idx: np.ndarray) -> dict:
    """Axis values of one candidate as optuna parameters (the inverse of _trial_value_idx): a gated
    axis whose gate is off has none."""
    return {_param_name(i, a.path): _external(dists[_param_name(i, a.path)], a.values[int(value_idx[i])])
            for i, a in enumerate(spec.axes) if int(value_idx[i]) < len(a.values)}


def _suggest(trial, name: str, dist):
    """Define-by-run: ask for one parameter in its distribution (a gated axis whose gate holds)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step)


def ask_trial(study, spec: SweepSpec, dists: dict):
    """One trial: the ungated axes up front, then each gated axis only where its gate holds, so TPE
    models a conditional parameter from the trials that had it and never samples a switched-off one."""
    if not spec.gated:
        return study.ask(dists)
    names = [_param_name(i, a.path) for i, a in enumerate(spec.axes)]
    trial = study.ask({names[k]: dists[names[k]] for k, a in enumerate(spec.axes) if a.gate is None})
    for k in spec.gated:
        gate = spec.axes[k].gate
        gating = names[gate.axis]
        if value_index(spec.axes[gate.axis], dists[gating], trial.params[gating]) == gate.eq_index:
            _suggest(trial, names[k], dists[names[k]])
    return trial


def _external(dist, value):
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return value
    return int(value) if isinstance(dist, IntDistribution) else float(value)


_DIST_CACHE: dict[int, tuple[SweepSpec, dict]] = {}


def _distributions(spec: SweepSpec) -> dict:
    hit = _DIST_CACHE.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    dists = {_param_name(i, a.path): axis_distribution(a) for i, a in enumerate(spec.axes)}
    _DIST_CACHE.clear()
    _DIST_CACHE[id(spec)] = (spec, dists)
    return dists


OBJECTIVE_LABELS = {
    "pnl": "total_pnl (USD, net of fees and funding)",
    "sharpe": "sharpe (daily returns, annualised)",
    "balanced": "balanced = return - 2 x max drawdown",
}


def metric_name(objective: str, neighborhood: int) -> str:
    """The objective's name as optuna-dashboard shows it (instead of "Objective 0")."""
    label = OBJECTIVE_LABELS.get(objective, objective)
    return label if neighborhood <= 1 else f"best of neighbourhood: {label}"


def dashboard_command(storage: str | None) -> str | None:
    """The shell command that opens the study in optuna-dashboard (None without a storage)."""
    if not storage:
        return None
    return f"optuna-dashboard {shlex.quote(storage)}"


def dashboard_hint(storage: str | None, study_name: str | None = None) -> str:
    """One line for the operator: how to browse the search (or how to make it browsable)."""
    if not storage:
        return ("optuna-dashboard: pass --storage sqlite:///sweep_optuna.db to keep the study and browse it "
                "(pip install -e '.[plots]')")
    name = f" (study {study_name!r})" if study_name else ""
    line = f"optuna-dashboard: {dashboard_command(storage)}{name}"
    journal = candidates_journal_path(storage)
    if journal is not None and journal.exists():
        line += f"; every candidate: optuna-dashboard {shlex.quote(str(journal))}"
    return line


def trial_sampler(seed: int, trial_number: int):
    """The sampler for one ask: seeded by (seed, trial number), so the proposal depends only on the
    seed and the study's told trials, never on how many asks this process made before."""
    import optuna

    mixed = np.random.SeedSequence([int(seed) % 2**63, int(trial_number)]).generate_state(1)[0]
    return optuna.samplers.TPESampler(seed=int(mixed))


def check_storage(url: str) -> None:
    """Open the optuna storage once, so an unusable URL is one line (``--storage <url>: <reason>``)
    before any data is loaded, never a SQLAlchemy traceback mid-run."""
    import optuna

    if url.startswith("sqlite:///"):
        from pathlib import Path

        path = Path(url[len("sqlite:///"):].split("?", 1)[0])
        if str(path) and not path.parent.is_dir():
            raise ValueError(f"--storage {url}: directory {path.parent} does not exist")
        if path.is_dir():
            raise ValueError(f"--storage {url}: {path} is a directory, not a database file")
    try:
        optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/driver errors of every kind: one line
        text = str(exc).split("(Background on this error", 1)[0].strip()
        reason = (text.splitlines() or [type(exc).__name__])[0].strip() or type(exc).__name__
        raise ValueError(f"--storage {url}: {reason}") from None


def open_study(spec: SweepSpec, *, seed: int, storage: str | None, study_name: str | None,
               objective: str = "pnl", neighborhood: int = 1):
    """Create or load the study (the sampler is replaced per ask, see ``trial_sampler``), named
    for optuna-dashboard: the objective's metric name and what the study is."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = study_name or "sweep"
    study = optuna.create_study(study_name=name, storage=storage, sampler=trial_sampler(seed, 0),
                                direction="maximize", load_if_exists=storage is not None)
    label_study(study, spec, objective, neighborhood)
    return study


def label_study(study, spec: SweepSpec, objective: str, neighborhood: int) -> None:
    """Metric name and a description in the study's user attrs (shown by optuna-dashboard)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric_name(objective, neighborhood)])
    study.set_user_attr("objective", objective)
    study.set_user_attr("sweep_spec", str(spec.source))
    study.set_user_attr("axes", ", ".join(a.path for a in spec.axes))
    if neighborhood > 1:
        study.set_user_attr("about", f"each trial is a proposal; its value is the best of the {neighborhood} "
                                     "candidates around it (every candidate: the .candidates.journal study)")


def candidates_journal_path(storage: str | None) -> Path | None:
    """Where a neighbourhood search keeps every candidate: beside a SQLite storage,
    ``dir/x.sqlite3`` -> ``dir/x.candidates.journal``. None for in-memory or server storages."""
    if not storage or not storage.startswith("sqlite:///"):
        return None
    path = Path(storage[len("sqlite:///"):].split("?", 1)[0])
    return path.with_name(path.stem + ".candidates.journal") if path.name else None


class CandidateLog:
    """Every candidate a neighbourhood search evaluated, as one COMPLETE trial each (real axis
    values, its own objective, the proposal it belongs to) in a companion optuna study.

    Why a companion: the search study must hold one trial per proposal (optuna's cost per ask grows
    with its trials), so neighbours are invisible there. Why a journal file: optuna's SQLite storage
    takes ~7 ms per added trial, its journal file ~0.5 ms. At most ``limit`` candidates are kept
    (the study's user attrs say how many were evaluated), so a million-candidate night stays cheap.
    A resumed run skips proposals already logged."""

    def __init__(self, spec: SweepSpec, path: Path, study_name: str, objective: str, initial_balance: float,
                 limit: int = CANDIDATE_LOG_LIMIT):
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        self.spec, self.objective, self.initial_balance, self.limit = spec, objective, initial_balance, limit
        self.dists = _distributions(spec)
        storage = JournalStorage(JournalFileBackend(str(path)))
        self.study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize",
                                         load_if_exists=True)
        label_study(self.study, spec, objective, 1)
        done = self.study.get_trials(deepcopy=False)
        self.logged = {int(t.user_attrs.get("proposal", -1)) for t in done}
        self.count = len(done)
        self.evaluated = int(self.study.user_attrs.get("candidates_evaluated", 0))

    def add(self, rows: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        """rows: (proposal trial number, value_idx [n, naxes], metrics [n, NM]) of one launch."""
        from optuna.trial import create_trial

        trials = []
        for number, idx, metrics in rows:
            if number in self.logged:
                continue
            self.logged.add(number)
            self.evaluated += len(idx)
            values = objective_values(metrics, self.objective, self.initial_balance)
            for row, m, v in zip(idx, metrics, values, strict=True):
                if self.count + len(trials) >= self.limit:
                    break
                params = _trial_params(self.spec, self.dists, row)
                trials.append(create_trial(
                    params=params, distributions={k: self.dists[k] for k in params}, value=float(v),
                    user_attrs={"proposal": int(number), "total_pnl": float(m[M_TOTAL_PNL]),
                                "trades": int(m[M_TOTAL_TRADES]), "max_drawdown_pct": float(m[M_MAX_DD]),
                                "sharpe": float(m[M_SHARPE])}))
        if trials:
            self.study.add_trials(trials)
            self.count += len(trials)
        self.study.set_user_attr("candidates_evaluated", self.evaluated)
        self.study.set_user_attr("candidates_shown", self.count)


def _resume_state(study, neighborhood: int, storage: str | None) -> tuple[int, int]:
    """(finished trials, candidates they evaluated); refuses a different M on resume."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    if done:
        earlier = int(study.user_attrs.get(NEIGHBORHOOD_ATTR, 1))
        if earlier != neighborhood:
            raise ValueError(f"--neighborhood {neighborhood}: study {study.study_name!r} in {storage} was run "
                             f"with --neighborhood {earlier}; resume with that value or use a new --study-name")
    else:
        study.set_user_attr(NEIGHBORHOOD_ATTR, neighborhood)
    evaluated = sum(int(t.user_attrs.get(CANDIDATES_ATTR, 1 if t.state == TrialState.COMPLETE else 0))
                    for t in done)
    return len(done), evaluated


@dataclass
class _Pending:
    number: int
    trial_id: int          # storage id, for the accounting user attrs
    proposal: np.ndarray
    limit: int             # candidates this trial may evaluate: min(M, what the budget has left)


def run_tpe(spec: SweepSpec, evaluate: Callable[[np.ndarray], np.ndarray], *, trials: int, batch: int,
            seed: int = 42, storage: str | None = None, study_name: str | None = None,
            objective: str = "pnl", initial_balance: float = 10_000.0,
            on_batch: Callable[[int], None] | None = None, neighborhood: int = 1) -> TpeOutcome:
    """Evaluate ``trials`` candidates; ``evaluate(value_idx) -> metrics`` is called once per batch
    of ``batch // neighborhood`` proposals (one kernel launch). ``on_batch(n)`` gets the candidates
    evaluated (on resume, first the re-evaluated candidates of the trials told before the kill).
    The outcome holds every candidate of the study's COMPLETE trials, in trial order."""
    import optuna

    _check_objective(objective)
    if trials < 1 or batch < 1:
        raise ValueError("--trials and --batch must be >= 1")
    if neighborhood < 1:
        raise ValueError(f"--neighborhood must be >= 1 (got {neighborhood})")
    if storage is not None:
        check_storage(storage)
    dists = _distributions(spec)
    study = open_study(spec, seed=seed, storage=storage, study_name=study_name, objective=objective,
                       neighborhood=neighborhood)
    finished, done = _resume_state(study, neighborhood, storage)
    orphans = list(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
    hoods = Neighbourhoods(spec, seed, neighborhood)
    per_launch = max(1, batch // neighborhood)
    kept = _Collector(len(spec.axes), compact_index_dtype(spec))
    journal = candidates_journal_path(storage) if neighborhood > 1 else None
    if journal is not None:
        kept.log = CandidateLog(spec, journal, study.study_name, objective, initial_balance)
    rejected = told = barren = 0
    before = done
    asker = _Asker(study, spec, dists, seed, len(study.get_trials(deepcopy=False)), neighborhood)
    _reevaluate_told(study, spec, hoods, evaluate, kept, per_launch, neighborhood, on_batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        while done < trials:
            pending = _ask_batch(asker, orphans, per_launch, trials - done, neighborhood)
            cands = [hoods.around(p.proposal, p.number, p.limit) for p in pending]
            flat = np.concatenate(cands).astype(np.int32)
            metrics = evaluate(flat) if len(flat) else np.zeros((0, NM))
            start = 0
            for p, c in zip(pending, cands, strict=True):
                n = len(c)
                rejected += p.limit - n
                barren = barren + 1 if n == 0 else 0
                _tell(study, p, metrics[start:start + n], n, neighborhood, objective, initial_balance)
                if n:
                    kept.add(p.number, c, metrics[start:start + n])
                start += n
            kept.flush()
            done += start
            told += len(pending)
            if on_batch is not None and start:
                on_batch(start)
            if barren >= STALL_PROPOSALS:
                raise ValueError(f"{spec.source}: constraints: the last {barren} TPE proposals had no valid "
                                 f"candidate ({done} of {trials} evaluated); loosen the constraints")
    for orphan in orphans:  # only when resumed with a smaller --trials: close them, do not evaluate
        study.tell(orphan.number, state=optuna.trial.TrialState.FAIL)
    numbers, idx, metrics = kept.arrays()
    order = np.argsort(numbers, kind="stable")  # evaluation order of an uninterrupted run
    numbers, idx, metrics = numbers[order], idx[order], metrics[order]
    return TpeOutcome(trial_numbers=numbers, value_idx=idx, metrics=metrics, resumed_from=finished,
                      rejected=rejected, proposals=told, neighborhood=neighborhood, candidates_before=before)


def _trial_limit(trial, neighborhood: int, default: int) -> int:
    return int(trial.user_attrs.get(LIMIT_ATTR, default)) if neighborhood > 1 else 1


def _reevaluate_told(study, spec, hoods: Neighbourhoods, evaluate, kept: _Collector, per_launch: int,
                     neighborhood: int, on_batch) -> None:
    """A resumed study's COMPLETE trials: regenerate their neighbourhoods (a pure function of the
    trial) and evaluate them again, ``per_launch`` trials per launch, so the outcome's rows hold the
    candidates evaluated before the kill too. Nothing is told again."""
    from optuna.trial import TrialState

    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    for i in range(0, len(done), per_launch):
        group = done[i:i + per_launch]
        cands = [hoods.around(_trial_value_idx(spec, t.params), t.number, _trial_limit(t, neighborhood, neighborhood))
                 for t in group]
        flat = np.concatenate(cands).astype(np.int32)
        if not len(flat):
            continue
        metrics = evaluate(flat)
        start = 0
        for t, c in zip(group, cands, strict=True):
            if len(c):
                kept.add(t.number, c, metrics[start:start + len(c)])
            start += len(c)
        kept.flush()
        if on_batch is not None:
            on_batch(start)


@dataclass
class _Asker:
    """Fresh asks with a per-trial sampler; the limit is stored at ask time (M > 1), so a trial
    re-opened after a kill evaluates exactly the neighbourhood it would have."""

    study: object
    spec: SweepSpec
    dists: dict
    seed: int
    next_number: int
    neighborhood: int

    def ask(self, limit: int):
        self.study.sampler = trial_sampler(self.seed, self.next_number)
        trial = ask_trial(self.study, self.spec, self.dists)
        self.next_number = trial.number + 1
        if self.neighborhood > 1:
            self.study._storage.set_trial_user_attr(trial._trial_id, LIMIT_ATTR, int(limit))
        return trial


def _ask_batch(asker: _Asker, orphans, per_launch, budget, neighborhood) -> list[_Pending]:
    """Up to ``per_launch`` proposals. Trials asked before a kill form a launch of their own (as in
    the killed run, fresh asks come only after they are told); then fresh asks. Limits never exceed
    the budget, so the study cannot overshoot the requested candidates."""
    pending: list[_Pending] = []
    if orphans:
        while orphans and len(pending) < per_launch and budget > 0:
            trial = orphans.pop(0)
            limit = min(_trial_limit(trial, neighborhood, neighborhood), budget)
            budget -= limit
            pending.append(_Pending(trial.number, trial._trial_id, _trial_value_idx(asker.spec, trial.params), limit))
        return pending
    while len(pending) < per_launch and budget > 0:
        limit = min(neighborhood, budget)
        trial = asker.ask(limit)
        budget -= limit
        pending.append(_Pending(trial.number, trial._trial_id, _trial_value_idx(asker.spec, trial.params), limit))
    return pending


def _tell(study, p: _Pending, metrics: np.ndarray, n: int, neighborhood: int, objective: str,
          initial_balance: float) -> None:
    """Best objective of the neighbourhood; an empty neighbourhood is PRUNED. The accounting goes
    into user attrs (M > 1 only: with M=1 a COMPLETE trial is one candidate). They are written
    through the storage because a trial re-opened from a killed run exists only as a FrozenTrial."""
    from optuna.trial import TrialState

    if neighborhood > 1:
        study._storage.set_trial_user_attr(p.trial_id, LIMIT_ATTR, int(p.limit))
        study._storage.set_trial_user_attr(p.trial_id, CANDIDATES_ATTR, int(n))
    if n == 0:
        study.tell(p.number, state=TrialState.PRUNED)
        return
    study.tell(p.number, float(objective_values(metrics, objective, initial_balance).max()))
