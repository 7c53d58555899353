"""Batched TPE with local neighbourhoods: reproducibility, slot accounting, resuming a killed run,
which rows a million-candidate sweep keeps, and the CLI on real candles.

Most tests use a cheap closed-form objective of the axis values (the TPE driver does not care what
computes the metrics), so optuna, the batching, the neighbourhoods and the SQLite storage run for
real in seconds; the kernel path is exercised once on ../shared/data at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpu.spec import parse_sweep_spec
from gpu.tpe import Neighbourhoods, _trial_value_idx, objective_values, run_tpe
from strategy import layout as L
from strategy.layout import M_TOTAL_PNL, NM

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPEC = {
    "axes": [
        {"path": "trade.sl_atr_mult", "range": {"start": 1.0, "stop": 4.0, "step": 0.25}},
        {"path": "trade.tp_atr_mult", "range": {"start": 2.0, "stop": 10.0, "step": 0.5}},
        {"path": "indicators.ema_fast_window", "range": {"start": 6, "stop": 30, "step": 2}},
    ],
    "constraints": ["tp_atr_mult > sl_atr_mult"],
}


def fake_metrics(spec, value_idx: np.ndarray) -> np.ndarray:
    """A smooth surface with its optimum at sl=2.5, tp=6, fast=12."""
    out = np.zeros((len(value_idx), NM))
    for i, row in enumerate(value_idx):
        sl, tp, fast = (spec.axes[k].values[int(row[k])] for k in range(3))
        out[i, M_TOTAL_PNL] = 1000 - 100 * (sl - 2.5) ** 2 - 20 * (tp - 6) ** 2 - (fast - 12) ** 2
    return out


def digest(value_idx: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(value_idx, dtype=np.int32).tobytes()).hexdigest()[:16]


def _run(storage=None, seed=7, trials=60, batch=16, neighborhood=1, calls=None):
    spec = parse_sweep_spec(SPEC)

    def evaluate(idx):
        if calls is not None:
            calls.append(idx.copy())
        return fake_metrics(spec, idx)

    return run_tpe(spec, evaluate, trials=trials, batch=batch, seed=seed, storage=storage, study_name="t",
                   neighborhood=neighborhood)


# ------------------------------------------------------------------------- M = 1 (one per trial)

def test_same_seed_same_trials_in_same_order():
    a, b = _run(), _run()
    np.testing.assert_array_equal(a.trial_numbers, b.trial_numbers)
    np.testing.assert_array_equal(a.value_idx, b.value_idx)
    np.testing.assert_array_equal(a.metrics, b.metrics)
    assert len(a.trial_numbers) == 60 and a.proposals == 60 + a.rejected > 60  # violators asked again
    assert len(set(a.trial_numbers.tolist())) == len(a.trial_numbers)  # one candidate per trial
    c = _run(seed=8)
    assert not np.array_equal(a.value_idx[:16], c.value_idx[:16])


def test_tpe_beats_its_random_startup():
    out = _run(trials=120, batch=20)
    pnl = out.metrics[:, M_TOTAL_PNL]
    assert pnl[60:].max() >= pnl[:20].max()


CHILD = r"""
import sys, time, hashlib
import numpy as np
sys.path.insert(0, {testdir!r})
from test_sweep_tpe import SPEC, fake_metrics, digest
from gpu.spec import parse_sweep_spec
from gpu.tpe import run_tpe
spec = parse_sweep_spec(SPEC)
def slow(idx):
    print("eval", digest(idx), flush=True)
    time.sleep({sleep})
    return fake_metrics(spec, idx)
def mark(n):
    print("batch", n, flush=True)
run_tpe(spec, slow, trials={trials}, batch={batch}, seed=3, storage={storage!r}, study_name="resume",
        on_batch=mark, neighborhood={m})
print("done", flush=True)
"""


def _kill_after(tmp_path, *, trials, batch, m, batches, sleep=0.25):
    """Run the child until its (batches+1)-th launch is in flight, SIGKILL it; returns (storage, evals)."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    code = CHILD.format(testdir=str(Path(__file__).parent), storage=storage, trials=trials, batch=batch, m=m,
                        sleep=sleep)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    evals: list[str] = []
    deadline = time.time() + 60
    while len(evals) <= batches and time.time() < deadline:
        line = child.stdout.readline()
        if line.startswith("eval"):
            evals.append(line.split()[1])
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert len(evals) == batches + 1, "child did not get far enough before the kill"
    return storage, evals


def test_killed_run_resumes_without_retelling_told_trials(tmp_path):
    import optuna

    storage, _ = _kill_after(tmp_path, trials=80, batch=8, m=1, batches=3)
    study = optuna.load_study(study_name="resume", storage=storage)
    told_before = {t.number: t.params for t in study.trials if t.state.is_finished()}
    assert 24 <= len(told_before) < 80

    spec = parse_sweep_spec(SPEC)
    calls: list[int] = []

    def evaluate(idx):
        calls.append(len(idx))
        return fake_metrics(spec, idx)

    complete_before = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    pruned_before = {t.number for t in study.trials if t.state == optuna.trial.TrialState.PRUNED}
    out = run_tpe(spec, evaluate, trials=80, batch=8, seed=3, storage=storage, study_name="resume")
    assert out.resumed_from == len(told_before) and out.candidates_before == complete_before
    study = optuna.load_study(study_name="resume", storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    numbers = [t.number for t in finished]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in finished) == 80  # 80 candidates
    assert len(set(numbers)) == len(numbers) == len(study.trials)
    assert not [t for t in study.trials if not t.state.is_finished()]  # orphans were evaluated
    # told trials are re-evaluated (their rows come back) but never told again: 80 candidates in all
    assert set(out.trial_numbers.tolist()) >= {n for n, t in told_before.items() if t} - pruned_before
    assert sum(calls) == len(out.trial_numbers) == 80
    for t in finished:  # the resumed run did not change what was already told
        if t.number in told_before:
            assert t.params == told_before[t.number]


# ---------------------------------------------------------------------------- neighbourhoods

def test_neighbourhood_is_local_distinct_valid_and_reproducible():
    spec = parse_sweep_spec(SPEC)
    hoods = Neighbourhoods(spec, seed=11, size=64)
    p = np.array([6, 8, 3])  # sl=2.5, tp=6.0, fast=12
    a = hoods.around(p, trial_number=5, limit=64)
    np.testing.assert_array_equal(a, hoods.around(p, trial_number=5, limit=64))
    assert len(a) == 64 and np.array_equal(a[0], p)
    assert len({r.tobytes() for r in a}) == 64                      # no duplicates
    assert hoods.satisfies(a).all()                                  # no constraint violator
    moved = (a[1:] != p).sum(axis=1)
    assert moved.min() >= 1 and moved.max() <= 3                     # 1..3 axes moved
    assert np.abs(a - p).max() <= 2                                  # by at most two values
    np.testing.assert_array_equal(hoods.around(p, 5, 20), a[:20])   # a smaller budget = a prefix
    assert not np.array_equal(hoods.around(p, 6, 64), a)            # another trial, other neighbours
    bad = np.array([12, 0, 3])  # sl=4.0 > tp=2.0: the proposal itself is replaced by valid neighbours
    b = hoods.around(bad, 7, 64)
    assert hoods.satisfies(b).all() and not any(np.array_equal(r, bad) for r in b)
    corner = hoods.around(np.array([0, 0, 0]), 8, 64)  # few valid neighbours: fewer candidates, no hang
    assert 0 < len(corner) < 64 and hoods.satisfies(corner).all()


def test_neighbourhood_run_counts_candidates_and_batches():
    calls: list[np.ndarray] = []
    out = _run(trials=200, batch=32, neighborhood=8, calls=calls)
    assert len(out.trial_numbers) == 200 and out.neighborhood == 8    # exactly the candidates asked for
    assert 25 <= out.proposals <= 30                                  # ~200 / 8 trials, not 200
    assert all(len(c) <= 32 for c in calls)                           # 4 proposals x 8 per launch
    assert sum(len(c) for c in calls) == len(out.value_idx)
    again = _run(trials=200, batch=32, neighborhood=8)
    np.testing.assert_array_equal(out.value_idx, again.value_idx)
    np.testing.assert_array_equal(out.trial_numbers, again.trial_numbers)
    assert out.value_idx.dtype == np.uint8                            # compact: 2M x 24 axes = 48 MB


def test_tell_values_are_neighbourhood_maxima_and_neighbourhoods_regenerate(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 's.db'}"
    out = _run(storage=storage, trials=96, batch=48, neighborhood=12)
    study = optuna.load_study(study_name="t", storage=storage)
    obj = objective_values(out.metrics, "pnl", 1e4)
    hoods = Neighbourhoods(parse_sweep_spec(SPEC), seed=7, size=12)
    assert sum(t.user_attrs["candidates"] for t in study.trials) == 96
    for t in study.trials:
        mine = obj[out.trial_numbers == t.number]
        assert t.user_attrs["candidates"] == len(mine) <= t.user_attrs["limit"] <= 12
        if not len(mine):  # a proposal deep in the violating corner: no valid neighbour within 2 steps
            assert t.state == optuna.trial.TrialState.PRUNED
            continue
        assert t.value == pytest.approx(mine.max())
        proposal = _trial_value_idx(parse_sweep_spec(SPEC), t.params)  # real axis values -> indices
        np.testing.assert_array_equal(hoods.around(proposal, t.number, t.user_attrs["limit"]),
                                      out.value_idx[out.trial_numbers == t.number])  # a pure function of the trial
    assert study.user_attrs["neighborhood"] == 12


def test_killed_neighbourhood_run_resumes_to_exactly_the_requested_candidates(tmp_path):
    import optuna

    storage, evals = _kill_after(tmp_path, trials=300, batch=32, m=8, batches=2, sleep=0.5)
    study = optuna.load_study(study_name="resume", storage=storage)
    told = {t.number for t in study.trials if t.state.is_finished()}
    assert len(told) == 8 and len([t for t in study.trials if not t.state.is_finished()]) == 4

    spec = parse_sweep_spec(SPEC)
    seen: list[str] = []
    progress: list[int] = []

    def evaluate(idx):
        seen.append(digest(idx))
        return fake_metrics(spec, idx)

    out = run_tpe(spec, evaluate, trials=300, batch=32, seed=3, storage=storage, study_name="resume",
                  neighborhood=8, on_batch=progress.append)
    assert seen[:3] == evals  # told trials re-evaluated launch by launch, then the launch in flight at the kill
    before = sum(t.user_attrs["candidates"] for t in study.trials if t.number in told)
    assert sum(progress[:2]) == before == out.candidates_before and sum(progress) == 300
    study = optuna.load_study(study_name="resume", storage=storage)
    numbers = [t.number for t in study.trials]
    assert all(t.state.is_finished() for t in study.trials)
    assert len(numbers) == len(set(numbers)) >= 300 // 8
    assert sum(t.user_attrs["candidates"] for t in study.trials) == 300  # exactly the requested total
    assert len(out.trial_numbers) == 300 and set(out.trial_numbers.tolist()) >= told


@pytest.mark.parametrize("m,batch,batches", [(1, 8, 3), (8, 32, 2)])
def test_killed_and_resumed_run_returns_the_rows_of_an_uninterrupted_run(tmp_path, m, batch, batches):
    """The candidates evaluated before the kill are part of the outcome: same candidates, same metrics,
    same order, same count as one uninterrupted run with the same seed."""
    storage, _ = _kill_after(tmp_path, trials=200, batch=batch, m=m, batches=batches, sleep=0.3)
    spec = parse_sweep_spec(SPEC)
    resumed = run_tpe(spec, lambda idx: fake_metrics(spec, idx), trials=200, batch=batch, seed=3,
                      storage=storage, study_name="resume", neighborhood=m)
    assert resumed.resumed_from > 0 and resumed.candidates_before > 0
    whole = run_tpe(spec, lambda idx: fake_metrics(spec, idx), trials=200, batch=batch, seed=3,
                    storage=f"sqlite:///{tmp_path / 'whole.db'}", study_name="resume", neighborhood=m)
    assert len(resumed.value_idx) == len(whole.value_idx) == 200
    np.testing.assert_array_equal(resumed.trial_numbers, whole.trial_numbers)
    np.testing.assert_array_equal(resumed.value_idx, whole.value_idx)
    np.testing.assert_array_equal(resumed.metrics, whole.metrics)


def test_resume_with_another_neighbourhood_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    _run(storage=storage, trials=32, batch=16, neighborhood=8)
    with pytest.raises(ValueError, match="--neighborhood 4: study 't' .* was run with --neighborhood 8"):
        _run(storage=storage, trials=64, batch=16, neighborhood=4)


# ---------------------------------------------------------------------------------- kept rows

def test_kept_rows_are_the_union_of_per_mode_tops_without_duplicates():
    from gpu.api import first_occurrences, kept_row_indices

    idx = np.array([[0, 1], [2, 3], [0, 1], [4, 4], [1, 1], [2, 3]], dtype=np.uint8)
    np.testing.assert_array_equal(first_occurrences(idx), [0, 1, 3, 4])
    m = np.zeros((6, NM))
    m[:, L.M_TOTAL_PNL] = [5, 9, 5, 1, 3, 9]
    m[:, L.M_MAX_DD] = [0.5, 0.4, 0.5, 0.01, 0.2, 0.4]
    score = m[:, L.M_TOTAL_PNL].copy()
    low_dd = {"dd": lambda mm: np.where(mm[:, L.M_TOTAL_PNL] > 2, -mm[:, L.M_MAX_DD], -np.inf)}
    kept = kept_row_indices(m, score, top_n=1, keep_scores=low_dd, candidates=first_occurrences(idx))
    np.testing.assert_array_equal(kept, [1, 4])           # best pnl (row 1) + lowest dd with pnl > 2 (row 4)
    everything = kept_row_indices(m, score, top_n=None, candidates=first_occurrences(idx))
    np.testing.assert_array_equal(everything, [1, 0, 4, 3])  # best-first, ties by evaluation order


def test_factory_keep_scores_rank_like_the_shortlist():
    """The vectorised keep scores and factory.shortlist's row keys order rows identically."""
    from factory.pipeline import shortlist_keep_scores
    from factory.shortlist import _eligible, _key
    from gpu.api import metrics_to_row

    rng = np.random.default_rng(5)
    m = np.zeros((400, NM))
    m[:, L.M_TOTAL_PNL] = rng.normal(0, 500, 400)
    m[:, L.M_TOTAL_TRADES] = rng.integers(0, 60, 400)
    m[:, L.M_PROFIT_FACTOR] = rng.uniform(0, 15, 400)
    m[:, L.M_SHARPE] = rng.normal(0, 2, 400)
    m[:, L.M_MAX_DD] = rng.uniform(0, 0.6, 400)
    m[::37, L.M_SHARPE] = np.nan
    rows = [{**metrics_to_row(r), "config_id": f"c{i:04d}"} for i, r in enumerate(m)]
    for mode, fn in shortlist_keep_scores(["pnl", "balanced", "dd"]).items():
        score = fn(m)
        eligible = [i for i, r in enumerate(rows) if _eligible(r, mode, 1)]
        assert set(eligible) == set(np.flatnonzero(np.isfinite(score)))
        assert [_key(mode)(rows[i])[0] for i in eligible] == pytest.approx(score[eligible].tolist())


# ------------------------------------------------------------------------- kernel + CLI, real data

@pytest.mark.skipif(not (DATA / "candles_1h.db").exists(), reason=f"../shared/data absent: {DATA}")
def test_cli_tpe_with_neighbourhoods_on_real_candles(tmp_path):
    import typer
    from typer.testing import CliRunner

    from gpu.cli import sweep_command

    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({**SPEC, "lookback": 60}))
    app = typer.Typer()
    app.command()(sweep_command)
    out = tmp_path / "rows.jsonl"
    args = ["--sweep-spec", str(spec), "--candles-db", str(DATA / "candles_1h.db"), "--backend", "cpu",
            "--tpe", "--trials", "96", "--batch", "48", "--neighborhood", "16", "--top-n", "10",
            "--output", str(out), "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert re.search(r"TPE: [67] optuna trials x neighbourhood 16 -> 96 candidates", res.output)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert 0 < len(rows) <= 10 and len({r["config_id"] for r in rows}) == len(rows)
    assert [r["total_pnl"] for r in rows] == sorted((r["total_pnl"] for r in rows), reverse=True)
    bad = CliRunner().invoke(app, [*args[:6], "--neighborhood", "0", "--output", str(out)])
    assert bad.exit_code == 2 and "--neighborhood must be >= 1 (got 0)" in bad.output


def test_factory_tpe_sweep_records_neighbourhoods_and_written_rows(tmp_path, monkeypatch):
    """A factory run with a TPE profile: run_metadata.sweep says what was evaluated and written."""
    from factory.pipeline import RunOptions, run_factory
    from marketdata.intervals import parse_time_ms

    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({**SPEC, "lookback": 120}))
    monkeypatch.chdir(tmp_path)
    opts = RunOptions(profile="smoke", tpe=True, trials=400, batch=128, neighborhood=32, sweep_spec=str(spec),
                      shortlist=3, replay=1, artifacts_dir=str(tmp_path / "art"), run_id="tpe", no_deploy=True,
                      progress=False, start_ms=parse_time_ms("2025-04-15", "--start"),
                      end_ms=parse_time_ms("2025-06-01", "--end"), symbols=["BTC", "ETH", "SOL"])
    assert run_factory(opts) == 0
    (rd,) = (tmp_path / "art").glob("*/run_tpe")
    sweep = json.loads((rd / "run_metadata.json").read_text())["sweep"]
    assert sweep["candidates_evaluated"] == 400 and sweep["neighborhood"] == 32
    assert 400 / 32 <= sweep["tpe_trials"] < 400 / 8                  # trials, not candidates
    rows = (rd / "sweeps" / "sweep_results.jsonl").read_text().splitlines()
    assert sweep["rows_written"] == len(rows) == sweep["summary"]["distinct_candidates"] <= 400
    assert sweep["summary"]["with_trades"] <= 400 and sweep["rows_kept_per_mode"] == 10_000


def test_constraints_that_reject_everything_stop_the_run_with_one_line(monkeypatch):
    import gpu.tpe

    monkeypatch.setattr(gpu.tpe, "STALL_PROPOSALS", 12)
    spec = parse_sweep_spec({**SPEC, "constraints": ["sl_atr_mult > 100"]}, source="never.yaml")
    with pytest.raises(ValueError, match=r"^never.yaml: constraints: the last 12 TPE proposals had no valid "
                                         r"candidate \(0 of 50 evaluated\)"):
        run_tpe(spec, lambda idx: fake_metrics(spec, idx), trials=50, batch=16, neighborhood=4)


@pytest.mark.parametrize("url, reason", [
    ("sqlite:///{tmp}/no/such/dir/study.db", "directory {tmp}/no/such/dir does not exist"),
    ("sqlite:///{tmp}", "{tmp} is a directory, not a database file"),
    ("not-a-url", "Could not parse SQLAlchemy URL"),
])
def test_unusable_storage_is_one_line_and_exit_2(tmp_path, url, reason):
    import typer
    from typer.testing import CliRunner

    from gpu.cli import sweep_command

    url, reason = url.format(tmp=tmp_path), reason.format(tmp=tmp_path)
    app = typer.Typer()
    app.command()(sweep_command)
    res = CliRunner().invoke(app, ["--sweep-spec", str(tmp_path / "s.yaml"), "--candles-db", str(tmp_path / "c.db"),
                                   "--tpe", "--trials", "8", "--storage", url, "--no-progress"])
    assert res.exit_code == 2, res.output
    assert f"--storage {url}: {reason}" in " ".join(res.output.split()) and "Traceback" not in res.output
    spec = parse_sweep_spec(SPEC)
    with pytest.raises(ValueError, match=r"^--storage "):
        run_tpe(spec, lambda idx: fake_metrics(spec, idx), trials=4, batch=4, storage=url)


def test_every_axis_of_the_shipped_specs_is_a_distribution_holding_all_its_values():
    """A float step read off the values (0.5 - 0.4 = 0.09999999999999998) once made optuna move
    `high` below the last value and refuse it mid-run: every shipped axis must hold all its values."""
    import warnings

    from gpu.spec import load_sweep_spec
    from gpu.tpe import axis_distribution
    from strategy.config import config_from_dict

    base = config_from_dict({})
    for name in ("smoke.yaml", "full.yaml"):
        spec = load_sweep_spec(Path(__file__).resolve().parents[1] / "config" / "sweeps" / name, base)
        for axis in spec.axes:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                dist = axis_distribution(axis)
            for value in axis.values:
                assert dist._contains(dist.to_internal_repr(value)), (name, axis.path, value, dist)
