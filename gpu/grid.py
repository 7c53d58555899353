"""Candidate sets: rows of axis values, as value indices (exact overrides) and encoded floats (kernel).

Grids are expanded with numpy index arithmetic rather than itertools so a million-combo grid
and its constraint filter cost milliseconds, and candidate ``i`` is always the same combo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gpu.spec import SweepSpec, SweepSpecError

MAX_GRID = 50_000_000


@dataclass(frozen=True)
class CandidateSet:
    """``value_idx[i, a]`` is the index into ``spec.axes[a].values`` of candidate i."""

    spec: SweepSpec
    value_idx: np.ndarray  # int32[n, naxes]

    def __len__(self) -> int:
        return int(self.value_idx.shape[0])

    def encoded(self) -> np.ndarray:
        """float64[n, naxes]: the values as the kernel sees them."""
        return encoded_columns(self.spec, self.value_idx)

    def overrides(self, i: int) -> dict[str, Any]:
        return {a.path: a.values[int(self.value_idx[i, k])] for k, a in enumerate(self.spec.axes)}

    def subset(self, rows: np.ndarray) -> CandidateSet:
        return CandidateSet(self.spec, self.value_idx[rows])


def encoded_columns(spec: SweepSpec, value_idx: np.ndarray) -> np.ndarray:
    out = np.empty(value_idx.shape, dtype=np.float64)
    for k, axis in enumerate(spec.axes):
        out[:, k] = axis.encoded()[value_idx[:, k]]
    return out


def expand_grid(spec: SweepSpec) -> CandidateSet:
    """Cartesian product of the axes minus the combos that violate a constraint."""
    total = spec.grid_size_unconstrained
    if total > MAX_GRID:
        raise SweepSpecError(f"{spec.source}: axes: the full grid has {total:,} combos "
                             f"(limit {MAX_GRID:,}); use --tpe --trials N")
    sizes = [len(a.values) for a in spec.axes]
    flat = np.arange(total, dtype=np.int64)
    value_idx = np.empty((total, len(sizes)), dtype=np.int32)
    for k in range(len(sizes) - 1, -1, -1):  # last axis varies fastest, like itertools.product
        value_idx[:, k] = flat % sizes[k]
        flat //= sizes[k]
    keep = spec.satisfies(encoded_columns(spec, value_idx))
    return CandidateSet(spec, value_idx[keep])


def candidates_from_overrides(spec: SweepSpec, overrides_list: list[dict[str, Any]]) -> CandidateSet:
    """Candidates given as override dicts (trace mode, TPE); every axis must be present."""
    value_idx = np.empty((len(overrides_list), len(spec.axes)), dtype=np.int32)
    for i, ov in enumerate(overrides_list):
        for k, axis in enumerate(spec.axes):
            value = ov[axis.path]
            try:
                value_idx[i, k] = axis.values.index(value)
            except ValueError:
                raise SweepSpecError(f"{spec.source}: axes[{k}]: {value!r} is not one of its values") from None
    return CandidateSet(spec, value_idx)
