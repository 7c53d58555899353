"""Batched TPE: seeded reproducibility and resuming a killed run from its SQLite storage.

The objective here is a cheap closed-form function of the axis values (the TPE driver does not
care what computes the metrics), so the test exercises optuna, the batching and the storage for
real in a couple of seconds; the kernel path is covered by test_sweep_equivalence.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gpu.spec import parse_sweep_spec
from gpu.tpe import run_tpe
from strategy.layout import M_TOTAL_PNL, NM

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


def _run(storage=None, seed=7, trials=60, batch=16):
    spec = parse_sweep_spec(SPEC)
    out = run_tpe(spec, lambda idx: fake_metrics(spec, idx), trials=trials, batch=batch, seed=seed,
                  storage=storage, study_name="t")
    return out


def test_same_seed_same_trials_in_same_order():
    a, b = _run(), _run()
    assert a.trial_numbers == b.trial_numbers
    np.testing.assert_array_equal(a.value_idx, b.value_idx)
    np.testing.assert_array_equal(a.metrics, b.metrics)
    assert len(a.trial_numbers) + a.rejected == 60
    c = _run(seed=8)
    assert not np.array_equal(a.value_idx[:16], c.value_idx[:16])


def test_tpe_beats_its_random_startup():
    out = _run(trials=120, batch=20)
    pnl = out.metrics[:, M_TOTAL_PNL]
    assert pnl[60:].max() >= pnl[:20].max()


CHILD = r"""
import sys, time
sys.path.insert(0, {testdir!r})
from test_sweep_tpe import SPEC, fake_metrics
from gpu.spec import parse_sweep_spec
from gpu.tpe import run_tpe
spec = parse_sweep_spec(SPEC)
def slow(idx):
    time.sleep(0.25)
    return fake_metrics(spec, idx)
def mark(n):
    print("batch", n, flush=True)
run_tpe(spec, slow, trials=80, batch=8, seed=3, storage={storage!r}, study_name="resume", on_batch=mark)
print("done", flush=True)
"""


def test_killed_run_resumes_without_rerunning_told_trials(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    code = CHILD.format(testdir=str(Path(__file__).parent), storage=storage)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    batches = 0
    deadline = time.time() + 60
    while batches < 3 and time.time() < deadline:
        line = child.stdout.readline()
        batches += line.startswith("batch")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert batches == 3, "child did not get far enough before the kill"

    study = optuna.load_study(study_name="resume", storage=storage)
    told_before = {t.number: t.params for t in study.trials if t.state.is_finished()}
    assert 24 <= len(told_before) < 80

    spec = parse_sweep_spec(SPEC)
    calls: list[int] = []

    def evaluate(idx):
        calls.append(len(idx))
        return fake_metrics(spec, idx)

    out = run_tpe(spec, evaluate, trials=80, batch=8, seed=3, storage=storage, study_name="resume")
    assert out.resumed_from == len(told_before)
    study = optuna.load_study(study_name="resume", storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    numbers = [t.number for t in finished]
    assert len(finished) == 80 and len(set(numbers)) == 80
    assert not [t for t in study.trials if not t.state.is_finished()]  # orphans were evaluated
    assert not set(out.trial_numbers) & set(told_before)  # told trials were not re-run
    assert sum(calls) + out.rejected == 80 - len(told_before)
    for t in finished:  # the resumed run did not change what was already told
        if t.number in told_before:
            assert t.params == told_before[t.number]
