"""PBO by CSCV and the deflated Sharpe ratio against values worked by hand (factory/overfitting.py).

The hand computations are written out next to each case so a reviewer can redo them on paper.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from factory.overfitting import (
    cscv_pbo,
    deflated_sharpe,
    expected_max_sharpe,
    moments,
    performance,
    period_returns,
    probabilistic_sharpe,
    relative_rank,
)


def _blocks(*columns: list[float], rows_per_block: int = 2) -> np.ndarray:
    """A [T, N] matrix whose block b of every column is constant at columns[n][b]."""
    return np.array([[col[b] for col in columns] for b in range(len(columns[0])) for _ in range(rows_per_block)],
                    dtype=np.float64)


def test_pbo_two_blocks_inverted_ranking_is_one():
    # blocks: A = [1, -1], B = [0, 1], C = [0.5, 0]   (metric: mean)
    # IS {0}: best A (1); OOS {1}: A=-1 < C=0 < B=1 -> A rank 1 of 3 -> w = 1/4, logit ln(1/3) < 0
    # IS {1}: best B (1); OOS {0}: B=0 < C=0.5 < A=1 -> B rank 1 -> w = 1/4, logit ln(1/3) < 0
    m = _blocks([1.0, -1.0], [0.0, 1.0], [0.5, 0.0])
    out = cscv_pbo(m, blocks=2, metric="mean")
    assert out["pbo"] == 1.0 and out["combinations"] == 2
    assert out["logits"] == pytest.approx([math.log(1 / 3), math.log(1 / 3)])


def test_pbo_two_blocks_consistent_ranking_is_zero():
    # A best in both blocks: OOS rank 3 of 3 -> w = 3/4 -> logit ln 3 > 0 for both splits
    m = _blocks([2.0, 1.0], [0.0, 0.0], [1.0, 0.5])
    out = cscv_pbo(m, blocks=2, metric="mean")
    assert out["pbo"] == 0.0 and out["logits"] == pytest.approx([math.log(3), math.log(3)])


def test_pbo_four_blocks_with_ties_worked_by_hand():
    # A = [3, -1, 2, 1], B = [1, 1, 1, 1] per block (mean); N = 2 -> w = rank / 3.
    # IS {0,1}: A=1 = B=1, tie -> first column A; OOS {2,3}: A=1.5 > B=1 -> rank 2, w=2/3, ln 2 > 0
    # IS {0,2}: A=2.5 -> A; OOS {1,3}: A=0 < 1 -> rank 1, w=1/3, ln(1/2) < 0
    # IS {0,3}: A=2 -> A;   OOS {1,2}: A=0.5 < 1 -> ln(1/2)
    # IS {1,2}: A=0.5 -> B; OOS {0,3}: B=1 < A=2 -> B rank 1 -> ln(1/2)
    # IS {1,3}: A=0 -> B;   OOS {0,2}: B=1 < A=2.5 -> ln(1/2)
    # IS {2,3}: A=1.5 -> A; OOS {0,1}: A=1 = B=1 -> average rank 1.5, w=1/2, logit 0 (counts: <= 0)
    # PBO = 5/6
    m = _blocks([3.0, -1.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0])
    out = cscv_pbo(m, blocks=4, metric="mean")
    half = math.log(0.5)
    assert out["logits"] == pytest.approx([math.log(2), half, half, half, half, 0.0])
    assert out["pbo"] == pytest.approx(5 / 6) and out["combinations"] == 6


def test_pbo_drops_the_oldest_remainder_rows_and_refuses_bad_shapes():
    m = np.vstack([np.full((1, 2), 99.0), _blocks([1.0, 2.0], [0.0, 0.0])])  # 5 rows, 2 blocks
    assert cscv_pbo(m, blocks=2, metric="mean")["periods"] == 4
    with pytest.raises(ValueError, match="even"):
        cscv_pbo(np.zeros((12, 3)), blocks=3)
    with pytest.raises(ValueError, match=">= 2 candidates"):
        cscv_pbo(np.zeros((12, 1)), blocks=2)
    with pytest.raises(ValueError, match="2 periods per block"):
        cscv_pbo(np.zeros((6, 3)), blocks=4)


def test_sharpe_performance_and_relative_rank_by_hand():
    # [1, 3]: mean 2, sample sd sqrt(2) -> 1.41421356; a flat column scores 0
    got = performance(np.array([[1.0, 5.0], [3.0, 5.0]]))
    assert got == pytest.approx([math.sqrt(2), 0.0])
    assert relative_rank(np.array([1.0, 2.0, 2.0, 3.0]), 1) == pytest.approx(2.5 / 5)


def test_pbo_directions_on_generated_return_matrices():
    """No edge: the in-sample best is a coin flip out of sample (PBO high). A persistent edge in a
    few candidates: chosen and confirmed in every split (PBO 0). An edge in the first half that the
    second half takes back (the regime the config was fitted to reverses): PBO high. An edge confined
    to the first half and flat after it gives a LOW PBO by construction (every split with an edge block
    out of sample confirms it): that case is walk-forward's to catch (tests/test_walk_forward.py)."""
    noise_pbo, persistent_pbo, reversal_pbo, half_pbo = [], [], [], []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        noise = rng.normal(0.0, 0.01, (400, 40))
        persistent, reversal, half = noise.copy(), noise.copy(), noise.copy()
        persistent[:, :5] += 0.004
        reversal[:200, :5] += 0.004
        reversal[200:, :5] -= 0.004
        half[:200, :5] += 0.004
        noise_pbo.append(cscv_pbo(noise, 8)["pbo"])
        persistent_pbo.append(cscv_pbo(persistent, 8)["pbo"])
        reversal_pbo.append(cscv_pbo(reversal, 8)["pbo"])
        half_pbo.append(cscv_pbo(half, 8)["pbo"])
    assert np.mean(noise_pbo) > 0.5 and np.mean(reversal_pbo) > 0.5
    assert max(persistent_pbo) < 0.05
    assert np.mean(half_pbo) < 0.3


def test_expected_max_sharpe_and_psr_by_hand():
    # N = 10, V = 1: (1 - g) * Z^-1(0.9) + g * Z^-1(1 - 1/(10 e)) = 0.42278*1.28155 + 0.57722*1.78958 = 1.5748
    assert expected_max_sharpe(10, 1.0) == pytest.approx(1.5748, abs=5e-4)
    assert expected_max_sharpe(1, 1.0) == 0.0 and expected_max_sharpe(50, 0.0) == 0.0
    # returns [0.01, -0.01, 0.02, 0.0]: mean 0.005, sample sd sqrt(0.0005/3) -> SR 0.3872983;
    # z-scores (pop. sd) +-0.4472, +-1.3416 -> skew 0, kurtosis (0.04+3.24+3.24+0.04)/4 = 1.64;
    # PSR(0) = Phi(0.3872983 * sqrt(3) / sqrt(1 + 0.64/4 * 0.15)) = Phi(0.662913) = 0.74630
    sr, skew, kurt = moments(np.array([0.01, -0.01, 0.02, 0.0]))
    assert (sr, skew, kurt) == pytest.approx((0.3872983, 0.0, 1.64), abs=1e-6)
    assert probabilistic_sharpe(sr, 0.0, 4, skew, kurt) == pytest.approx(0.74630, abs=1e-4)
    single = deflated_sharpe(np.array([0.01, -0.01, 0.02, 0.0]), n_trials=1, sr_variance=0.3)
    assert single["deflated_sharpe"] == pytest.approx(0.74630, abs=1e-4)  # one trial: nothing to deflate


def test_deflated_sharpe_matches_the_papers_numerical_example():
    """Bailey & López de Prado (2014), section 4: annualised SR 2.5 over T = 1,250 daily returns,
    N = 100 trials with annualised SR variance 0.5, skew -3, kurtosis 10 -> DSR ~ 0.9004
    (per period: SR = 2.5/sqrt(250), V = 0.5/250; E[max SR] ~ 1.7894/sqrt(250))."""
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 * math.sqrt(250) == pytest.approx(1.7894, abs=2e-3)
    dsr = probabilistic_sharpe(2.5 / math.sqrt(250), sr0, 1250, -3.0, 10.0)
    assert dsr == pytest.approx(0.9004, abs=1e-3)


def test_period_returns_buckets_trade_pnl_by_exit_time():
    trades = [[{"exit_time_ms": 0, "pnl": 10.0}, {"exit_time_ms": 99, "pnl": -5.0}],
              [{"exit_time_ms": 50, "pnl": 20.0}], []]
    m = period_returns(trades, 0, 100, 2, 100.0)
    assert m.tolist() == [[0.1, 0.0, 0.0], [-0.05, 0.2, 0.0]]
