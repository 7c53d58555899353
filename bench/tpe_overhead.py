"""Where a TPE sweep's time goes: optuna (ask/tell) vs neighbourhoods vs the kernel, per M.

    .venv/bin/python bench/tpe_overhead.py [--candidates 20000] [--m1-candidates 1000]
        [--neighborhoods 1,64,256] [--proposals-per-launch 16] [--symbols BTC,ETH,SOL,BNB] [--days 45]
        [--sqlite]   # optuna in a SQLite file (as the factory runs it) instead of in memory

Runs gpu.tpe.run_tpe on the synthetic demo data (cpu backend, config/sweeps/full.yaml: 24 axes)
for each neighbourhood size M and prints, per M: optuna trials, seconds in optuna, in
neighbourhood generation and in the kernel, and the optuna time extrapolated to 1,000,000
candidates. Optuna's cost per trial grows linearly with the trials already in the study, so the
extrapolation fits cost(n) = a + b*n to the measured per-batch costs and integrates it over
1e6 / M trials. M=1 runs fewer candidates (--m1-candidates): at 20,000 it alone would take an hour.
Every M asks the same number of proposals per kernel launch (batch = proposals x M), as the
profiles do (daily: 4096 = 16 x 256). Compilation is excluded (the kernel is warmed up first).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
TARGET = 1_000_000


@dataclass
class Timings:
    """Wall time split per batch: kernel inside evaluate(), the rest is the TPE driver."""

    kernel_s: float = 0.0
    batch_kernel_s: float = 0.0
    last_mark: float = 0.0
    per_trial: list[tuple[int, float]] = field(default_factory=list)  # (trials so far, driver s/trial)


def load_inputs(args):
    from gpu.api import bind_data, prepare
    from gpu.backend import Evaluator
    from gpu.spec import load_sweep_spec
    from marketdata.candles import load_market_data
    from marketdata.demo import END_MS, ensure_demo_data
    from strategy.config import config_from_dict

    paths = ensure_demo_data(args.demo_dir)
    base = config_from_dict({})
    spec = load_sweep_spec(args.spec)
    start = END_MS - args.days * 86_400_000
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    md = load_market_data(str(paths["candles_1h"]), "1h", symbols, start, END_MS)
    md, funding, sub = bind_data(base, md, None, None, spec.axes)
    prep = prepare(base, spec, md, funding, sub=sub)
    return spec, prep, Evaluator(prep.static, "cpu"), md


def measure(spec, prep, evaluator, *, candidates: int, m: int, batch: int, seed: int,
            storage: str | None = None) -> tuple[Timings, object, float]:
    from gpu.tpe import run_tpe

    t = Timings()
    trials_done = [0]

    def evaluate(value_idx):
        s = time.perf_counter()
        pvals, fidx = prep.kernel_vectors(value_idx)
        out = evaluator.evaluate(pvals, fidx)[0]
        t.batch_kernel_s = time.perf_counter() - s
        t.kernel_s += t.batch_kernel_s
        return out

    def on_batch(evaluated: int) -> None:
        now = time.perf_counter()
        trials = max(1, -(-evaluated // m))
        driver = now - t.last_mark - t.batch_kernel_s
        t.per_trial.append((trials_done[0] + trials // 2, driver / trials))
        trials_done[0] += trials
        t.last_mark, t.batch_kernel_s = now, 0.0

    t.last_mark = time.perf_counter()
    started = t.last_mark
    out = run_tpe(spec, evaluate, trials=candidates, batch=batch, seed=seed, neighborhood=m, on_batch=on_batch,
                  storage=storage, study_name=f"bench_m{m}")
    return t, out, time.perf_counter() - started


def neighbourhood_seconds(spec, proposals: int, m: int, seed: int) -> float:
    """Generation time for as many neighbourhoods as the run asked for (random proposals)."""
    from gpu.tpe import Neighbourhoods

    if m == 1:
        return 0.0
    hoods = Neighbourhoods(spec, seed, m)
    rng = np.random.default_rng(seed)
    sizes = np.array([len(a.values) for a in spec.axes])
    s = time.perf_counter()
    for n in range(proposals):
        hoods.around(rng.integers(0, sizes), n, m)
    return time.perf_counter() - s


def fit_cost(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(a, b) of cost per trial = a + b * trials held, least squares over every run's batches.
    The cost depends on the trials in the study, not on M, so all runs share one fit."""
    x = np.array([p[0] for p in points], dtype=np.float64)
    y = np.array([p[1] for p in points], dtype=np.float64)
    b, a = np.polyfit(x, y, 1)
    return max(a, 0.0), max(b, 0.0)


def integrate_cost(a: float, b: float, trials: int) -> float:
    return a * trials + b * trials * trials / 2.0


def human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 86_400:,.1f} days"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=20_000)
    ap.add_argument("--m1-candidates", type=int, default=1_000)
    ap.add_argument("--neighborhoods", default="1,64,256")
    ap.add_argument("--proposals-per-launch", type=int, default=16)
    ap.add_argument("--symbols", default="BTC,ETH,SOL,BNB")
    ap.add_argument("--days", type=int, default=45)
    ap.add_argument("--spec", default=str(REPO / "config" / "sweeps" / "full.yaml"))
    ap.add_argument("--demo-dir", type=Path, default=REPO / "artifacts" / "demo_data")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--sqlite", action="store_true", help="optuna storage in a temporary SQLite file")
    args = ap.parse_args()

    console = Console(width=max(Console().width, 120))
    spec, prep, evaluator, md = load_inputs(args)
    warm = np.zeros((2, len(spec.axes)), dtype=np.int32)
    evaluator.evaluate(*prep.kernel_vectors(warm))  # compile / load the cached driver
    tmp = tempfile.mkdtemp(prefix="tpe_bench_")
    where = "SQLite storage" if args.sqlite else "in-memory storage"
    table = Table(title=f"TPE overhead ({where}): {len(spec.axes)} axes, cpu backend, demo data {md.nsym} symbols x "
                        f"{md.nbar:,} 1h bars, {args.proposals_per_launch} proposals per launch")
    for col in ("M", "candidates", "trials", "optuna s", "hoods s", "kernel s", "optuna %",
                "optuna @1M", "kernel @1M"):
        table.add_column(col, justify="right", no_wrap=True)
    runs, points = [], []
    for m in (int(x) for x in args.neighborhoods.split(",")):
        n = args.m1_candidates if m == 1 else args.candidates
        storage = f"sqlite:///{tmp}/bench_m{m}.db" if args.sqlite else None
        t, out, wall = measure(spec, prep, evaluator, candidates=n, m=m, batch=args.proposals_per_launch * m,
                               seed=args.seed, storage=storage)
        hood_s = neighbourhood_seconds(spec, out.proposals, m, args.seed)
        hood_per_trial = hood_s / max(out.proposals, 1)
        points += [(held, cost - hood_per_trial) for held, cost in t.per_trial[1:]]  # 1st: study creation
        runs.append((m, t, out, wall, hood_s))
        console.print(f"M={m}: {len(out.value_idx):,} candidates in {wall:.1f} s", highlight=False)
    a, b = fit_cost(points)
    for m, t, out, wall, hood_s in runs:
        optuna_s = max(wall - t.kernel_s - hood_s, 0.0)
        evaluated = len(out.value_idx)
        kernel_1m = t.kernel_s / max(evaluated, 1) * TARGET
        table.add_row(str(m), f"{evaluated:,}", f"{out.proposals:,}", f"{optuna_s:,.2f}", f"{hood_s:,.2f}",
                      f"{t.kernel_s:,.2f}", f"{optuna_s / wall:.0%}", human(integrate_cost(a, b, -(-TARGET // m))),
                      human(kernel_1m))
    console.print(table)
    shutil.rmtree(tmp, ignore_errors=True)
    console.print(f"optuna cost per trial fitted as {a * 1e3:.2f} ms + {b * 1e6:.2f} us x trials held",
                  highlight=False)
    console.print("optuna @1M: optuna time extrapolated to 1,000,000 candidates (1e6 / M trials, cost per "
                  "trial fitted linear in the trials held); kernel @1M: this machine's cpu backend, scaled "
                  "linearly (a GPU is what the kernel column is for).", highlight=False)


if __name__ == "__main__":
    main()
