"""Candidate sets: rows of axis values, as value indices (exact overrides) and encoded floats (kernel).

Grids are expanded with numpy index arithmetic rather than itertools so a million-combo grid
and its constraint filter cost milliseconds, and candidate ``i`` is always the same combo.

A gated axis (``gate: {path, eq}``, gpu/spec.py) holds its base slot (the base config's value)
in every candidate whose gate is off: the grid enumerates it only under its gate, so a gate never
multiplies the candidates where it cannot act.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gpu.spec import SweepSpec, SweepSpecError

MAX_GRID = 50_000_000


@dataclass(frozen=True)
class CandidateSet:
    """``value_idx[i, a]`` is the index into ``spec.axes[a].values`` of candidate i (a gated axis
    whose gate is off: its ``base_slot``)."""

    spec: SweepSpec
    value_idx: np.ndarray  # int32[n, naxes]

    def __len__(self) -> int:
        return int(self.value_idx.shape[0])

    def encoded(self) -> np.ndarray:
        """float64[n, naxes]: the values as the kernel sees them."""
        return encoded_columns(self.spec, self.value_idx)

    def overrides(self, i: int) -> dict[str, Any]:
        """The swept values of candidate i; a gated axis whose gate is off is left out (it keeps
        the base config's value)."""
        row = self.value_idx[i]
        return {a.path: a.values[int(row[k])] for k, a in enumerate(self.spec.axes)
                if int(row[k]) < len(a.values)}

    def subset(self, rows: np.ndarray) -> CandidateSet:
        return CandidateSet(self.spec, self.value_idx[rows])


def encoded_columns(spec: SweepSpec, value_idx: np.ndarray) -> np.ndarray:
    out = np.empty(value_idx.shape, dtype=np.float64)
    for k in range(len(spec.axes)):
        out[:, k] = spec.table(k)[value_idx[:, k]]
    return out


def expand_grid(spec: SweepSpec) -> CandidateSet:
    """Cartesian product of the axes (gated axes only under their gates) minus the combos that
    violate a constraint. Without gates the last axis varies fastest, like itertools.product."""
    total = spec.grid_size_unconstrained
    if total > MAX_GRID:
        raise SweepSpecError(f"{spec.source}: axes: the full grid has {total:,} combos "
                             f"(limit {MAX_GRID:,}); use --tpe --trials N")
    blocks = spec.blocks()
    flat = np.arange(total, dtype=np.int64)
    value_idx = np.empty((total, len(spec.axes)), dtype=np.int32)
    for cols, rows in reversed(blocks):  # the last block varies fastest
        value_idx[:, cols] = rows[flat % len(rows)]
        flat //= len(rows)
    keep = spec.satisfies(encoded_columns(spec, value_idx))
    return CandidateSet(spec, value_idx[keep])


def candidates_from_overrides(spec: SweepSpec, overrides_list: list[dict[str, Any]]) -> CandidateSet:
    """Candidates given as override dicts (trace mode, TPE): every axis must be present, except a
    gated axis whose gate is off (it must then be absent, as ``CandidateSet.overrides`` writes it)."""
    value_idx = np.empty((len(overrides_list), len(spec.axes)), dtype=np.int32)
    for i, ov in enumerate(overrides_list):
        for k, axis in enumerate(spec.axes):
            if axis.gate is not None and axis.path not in ov:
                value_idx[i, k] = axis.base_slot
                continue
            value = ov[axis.path]
            try:
                value_idx[i, k] = axis.values.index(value)
            except ValueError:
                raise SweepSpecError(f"{spec.source}: axes[{k}]: {value!r} is not one of its values") from None
    off = spec.gate_off(value_idx)
    bad = np.argwhere(off != (value_idx == np.array([a.base_slot if a.gate else -1 for a in spec.axes])))
    if len(bad):
        i, k = (int(x) for x in bad[0])
        gate = spec.axes[k].gate
        state = "off: leave it out" if off[i, k] else "on: give it a value"
        raise SweepSpecError(f"{spec.source}: axes[{k}] ({spec.axes[k].path}) in candidate {i}: its gate "
                             f"({gate.path} == {gate.eq!r}) is {state}")
    return CandidateSet(spec, value_idx)
