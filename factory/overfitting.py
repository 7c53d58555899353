"""How much of a winner's edge is selection luck: PBO by CSCV and the deflated Sharpe ratio.

Why: a sweep of a million configs always finds one that looks good on the data it was chosen on.
Two published statistics measure that, and the factory reports both on every run:

- PBO (probability of backtest overfitting), by combinatorially symmetric cross-validation
  (Bailey, Borwein, López de Prado & Zhu 2017, "The Probability of Backtest Overfitting",
  J. Computational Finance 20(4)): the candidates' per-period returns are cut into S time blocks;
  for every way of calling half the blocks in-sample, the in-sample best candidate's out-of-sample
  rank is turned into a logit; PBO is the share of splits where that rank is at or below the median.
- DSR (deflated Sharpe ratio; Bailey & López de Prado 2014, "The Deflated Sharpe Ratio: Correcting
  for Selection Bias, Backtest Overfitting and Non-Normality", J. Portfolio Management 40(5)): the
  probability that the true Sharpe ratio exceeds the best Sharpe ratio expected from N unskilled
  trials, given the track record's length, skewness and kurtosis.

The computation is ours (numpy + the standard library's NormalDist); tests/test_overfitting.py
checks it against values worked by hand and against the DSR paper's numerical example.
"""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist
from typing import Any

import numpy as np

EULER_GAMMA = 0.5772156649015329
_Z = NormalDist()


# ----- PBO by CSCV -----------------------------------------------------------------------------
def performance(block_rows: np.ndarray, metric: str = "sharpe") -> np.ndarray:
    """Per-column performance of a [T, N] slice: Sharpe (mean / sample std, 0 when flat) or mean."""
    mean = block_rows.mean(axis=0)
    if metric == "mean":
        return mean
    if metric != "sharpe":
        raise ValueError(f"unknown performance metric {metric!r} (sharpe | mean)")
    std = block_rows.std(axis=0, ddof=1) if block_rows.shape[0] > 1 else np.zeros(block_rows.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, mean / np.where(std > 0, std, 1.0), 0.0)


def relative_rank(values: np.ndarray, j: int) -> float:
    """Rank of values[j] among all (1 = lowest, ties share their average rank) over N + 1, as in CSCV."""
    v = values[j]
    below = float(np.sum(values < v))
    equal = float(np.sum(values == v))
    return (below + (equal + 1.0) / 2.0) / (len(values) + 1.0)


def cscv_pbo(returns: np.ndarray, blocks: int = 8, metric: str = "sharpe") -> dict[str, Any]:
    """PBO of choosing the in-sample best column of ``returns`` [T periods, N candidates].

    Rows are cut into ``blocks`` (S, even) equal consecutive blocks (the remainder T mod S rows at the
    start are dropped, so the latest data is kept); each of the C(S, S/2) halves is in-sample once.
    The in-sample winner is the first column with the best performance. PBO = share of splits
    whose logit λ = ln(ω / (1 − ω)) is ≤ 0, ω being the winner's out-of-sample relative rank."""
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError(f"PBO needs a [periods, candidates] matrix with >= 2 candidates (got shape {m.shape})")
    if blocks < 2 or blocks % 2:
        raise ValueError(f"PBO needs an even number of blocks >= 2 (got {blocks})")
    if m.shape[0] < 2 * blocks:
        raise ValueError(f"PBO needs at least 2 periods per block: {m.shape[0]} periods < 2 x {blocks} blocks")
    m = m[m.shape[0] % blocks:]
    parts = np.split(m, blocks)
    logits, oos_winner = [], []
    for is_idx in itertools.combinations(range(blocks), blocks // 2):
        oos_idx = [b for b in range(blocks) if b not in is_idx]
        r_is = performance(np.concatenate([parts[b] for b in is_idx]), metric)
        r_oos = performance(np.concatenate([parts[b] for b in oos_idx]), metric)
        best = int(np.argmax(r_is))
        omega = relative_rank(r_oos, best)
        logits.append(math.log(omega / (1.0 - omega)))
        oos_winner.append(float(r_oos[best]))
    lam = np.asarray(logits)
    return {"pbo": float(np.mean(lam <= 0.0)), "blocks": blocks, "combinations": len(logits),
            "candidates": int(m.shape[1]), "periods": int(m.shape[0]), "metric": metric,
            "logit_median": float(np.median(lam)), "logits": [float(x) for x in lam],
            "prob_oos_loss": float(np.mean(np.asarray(oos_winner) < 0.0))}


# ----- deflated Sharpe ratio -------------------------------------------------------------------
def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """E[max SR] of n_trials unskilled strategies whose Sharpe ratios have variance sr_variance
    (False Strategy Theorem, DSR paper eq. 2); 0 for a single trial (no selection)."""
    if n_trials <= 1 or sr_variance <= 0:
        return 0.0
    n = float(n_trials)
    return math.sqrt(sr_variance) * ((1.0 - EULER_GAMMA) * _Z.inv_cdf(1.0 - 1.0 / n)
                                     + EULER_GAMMA * _Z.inv_cdf(1.0 - 1.0 / (n * math.e)))


def probabilistic_sharpe(sr: float, sr_benchmark: float, periods: int, skew: float, kurtosis: float) -> float:
    """P(true SR > sr_benchmark) for an observed per-period SR over ``periods`` returns (kurtosis
    not excess: 3 for normal returns)."""
    if periods < 2:
        return 0.0
    denom = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if not denom > 0:
        return 0.0
    return _Z.cdf((sr - sr_benchmark) * math.sqrt(periods - 1.0) / math.sqrt(denom))


def moments(returns: np.ndarray) -> tuple[float, float, float]:
    """(per-period Sharpe, skewness, kurtosis) of a return series; flat series -> (0, 0, 3)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return 0.0, 0.0, 3.0
    mu, sd = float(r.mean()), float(r.std(ddof=1))
    pop = float(r.std(ddof=0))
    if not sd > 0 or not pop > 0:
        return 0.0, 0.0, 3.0
    z = (r - mu) / pop
    return mu / sd, float(np.mean(z ** 3)), float(np.mean(z ** 4))


def deflated_sharpe(returns: np.ndarray, n_trials: int, sr_variance: float) -> dict[str, Any]:
    """DSR of a per-period return series chosen as the best of ``n_trials`` whose per-period Sharpe
    ratios have variance ``sr_variance``."""
    r = np.asarray(returns, dtype=np.float64)
    sr, skew, kurt = moments(r)
    sr0 = expected_max_sharpe(n_trials, sr_variance)
    return {"deflated_sharpe": probabilistic_sharpe(sr, sr0, int(r.size), skew, kurt),
            "sharpe_per_period": sr, "expected_max_sharpe": sr0, "n_trials": int(n_trials),
            "sharpe_variance": float(sr_variance), "periods": int(r.size), "skew": skew, "kurtosis": kurt}


# ----- inputs from the sweep -------------------------------------------------------------------
def period_returns(trade_lists: list[list[dict[str, Any]]], start_ms: int, end_ms: int, periods: int,
                   initial_balance: float) -> np.ndarray:
    """[periods, candidates] matrix of net trade PnL per equal time bucket (by exit time), as a
    fraction of the initial balance: the CSCV input built from traced trade lists."""
    edges = np.linspace(start_ms, end_ms, periods + 1)
    out = np.zeros((periods, len(trade_lists)))
    for j, trades in enumerate(trade_lists):
        if not trades:
            continue
        t = np.array([tr["exit_time_ms"] for tr in trades], dtype=np.float64)
        pnl = np.array([tr["pnl"] for tr in trades], dtype=np.float64)
        idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, periods - 1)
        np.add.at(out[:, j], idx, pnl / initial_balance)
    return out


def sweep_sharpe_variance(rows: list[dict[str, Any]]) -> float:
    """Variance across the sweep's rows of the per-day Sharpe ratio (the kernel reports it
    annualised by sqrt(365)); rows without trades are not trials of a trading strategy."""
    sr = np.array([float(r.get("sharpe") or 0.0) / math.sqrt(365.0) for r in rows
                   if int(r.get("total_trades") or 0) > 0], dtype=np.float64)
    sr = sr[np.isfinite(sr)]
    return float(sr.var(ddof=1)) if sr.size > 1 else 0.0


def overfitting_summary(pbo: dict[str, Any] | None, dsr: dict[str, Any] | None, *, max_pbo: float,
                        min_dsr: float, pbo_error: str | None = None) -> dict[str, Any]:
    """The overfitting gate for one candidate: run-level PBO and the candidate's own DSR."""
    reasons = []
    if pbo is None:
        reasons.append(f"PBO not computed ({pbo_error or 'no data'})")
    elif pbo["pbo"] > max_pbo:
        reasons.append(f"PBO {pbo['pbo']:.2f} > {max_pbo:.2f} (the in-sample best is usually below the "
                       "out-of-sample median)")
    if dsr is None:
        reasons.append("deflated Sharpe not computed")
    elif dsr["deflated_sharpe"] < min_dsr:
        reasons.append(f"deflated Sharpe {dsr['deflated_sharpe']:.3f} < {min_dsr:.3f} given "
                       f"{dsr['n_trials']:,} candidates tried")
    return {"gate": "overfitting", "pbo": None if pbo is None else pbo["pbo"],
            "deflated_sharpe": None if dsr is None else dsr["deflated_sharpe"], "dsr_detail": dsr,
            "max_pbo": max_pbo, "min_deflated_sharpe": min_dsr, "passed": not reasons,
            "reason": "; ".join(reasons) or None}
