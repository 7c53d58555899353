"""Factory profiles: named bundles of sweep size, shortlist size and gates.

Why a file and not constants: the nightly timer, the stage-gate script and a human at a terminal
must all mean the same thing by "daily"; the YAML is the one place that says it, and flags only
override single fields for one run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROFILES_PATH = REPO_ROOT / "config" / "factory_profiles.yaml"
KNOWN_GATES = ("walk_forward", "overfitting", "stability", "slippage", "concentration", "sensitivity", "monte_carlo",
               "min_trades")
NESTED = ("walk_forward", "overfitting")  # sub-settings: a flag overrides single keys, not the whole block
KNOWN_SORT_MODES = ("pnl", "balanced", "dd")


class ProfileError(ValueError):
    """One-line description of a bad profile file, profile name or override."""


class WalkForwardSettings(BaseModel):
    """Walk-forward optimisation (factory/walk_forward.py): folds over the tradable span."""

    model_config = ConfigDict(extra="forbid")

    folds: int = Field(default=3, ge=1)
    scheme: Literal["anchored", "rolling"] = "anchored"
    embargo_bars: int = Field(default=24, ge=0)
    # candidates per fold's in-sample sweep: TPE profiles run this many; grid profiles run the grid.
    fold_trials: int | None = Field(default=None, ge=1)
    min_efficiency: float = 0.0   # OOS / IS return per day below this fails the gate


class OverfittingSettings(BaseModel):
    """PBO (CSCV over the top sweep candidates' returns in `blocks` time blocks) and deflated Sharpe."""

    model_config = ConfigDict(extra="forbid")

    blocks: int = Field(default=8, ge=2)
    candidates: int = Field(default=200, ge=2)
    max_pbo: float = Field(default=0.5, ge=0.0, le=1.0)
    min_deflated_sharpe: float = Field(default=0.95, ge=0.0, le=1.0)

    @field_validator("blocks")
    @classmethod
    def _even(cls, blocks: int) -> int:
        if blocks % 2:
            raise ValueError("must be even (CSCV splits the blocks in two halves)")
        return blocks


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    sweep_spec: str
    interval: str = "1h"
    backend: Literal["auto", "cpu", "cuda", "cudasim"] = "auto"
    precision: Literal["f64", "f32"] = "f64"
    tpe: bool = False
    trials: int | None = Field(default=None, ge=1)
    batch: int | None = Field(default=None, ge=1)
    # TPE: candidates per optuna trial (the proposal and its neighbours); optuna's cost grows with
    # the trials it holds, so million-candidate profiles need hundreds per trial.
    neighborhood: int = Field(default=1, ge=1)
    max_candidates: int | None = Field(default=None, ge=1)
    shortlist: int = Field(ge=1)
    replay: int = Field(ge=1)
    sort_modes: list[str] = Field(default_factory=lambda: list(KNOWN_SORT_MODES))
    trace: bool = True
    gates: list[str] = Field(default_factory=lambda: list(KNOWN_GATES))
    walk_forward: WalkForwardSettings = Field(default_factory=WalkForwardSettings)
    overfitting: OverfittingSettings = Field(default_factory=OverfittingSettings)
    stability_splits: int = Field(default=3, ge=1)   # the in-sample time-split stability check
    slippage_bps: list[float] = Field(default_factory=lambda: [10.0, 20.0, 30.0])
    monte_carlo_iterations: int = Field(default=2000, ge=1)
    min_trades: int = Field(default=30, ge=0)
    # advisory: gates are computed and reported but do not reject, and the run never deploys.
    gate_mode: Literal["enforce", "advisory"] = "enforce"

    @field_validator("gates")
    @classmethod
    def _known_gates(cls, gates: list[str]) -> list[str]:
        bad = [g for g in gates if g not in KNOWN_GATES]
        if bad:
            raise ValueError(f"unknown gate(s) {bad}; known: {', '.join(KNOWN_GATES)}")
        return gates

    @field_validator("sort_modes")
    @classmethod
    def _known_modes(cls, modes: list[str]) -> list[str]:
        bad = [m for m in modes if m not in KNOWN_SORT_MODES]
        if bad or not modes:
            raise ValueError(f"sort_modes must be a non-empty subset of {', '.join(KNOWN_SORT_MODES)}")
        return modes

    @field_validator("slippage_bps")
    @classmethod
    def _needs_20bps(cls, levels: list[float]) -> list[float]:
        if 20.0 not in [float(x) for x in levels]:
            raise ValueError("slippage_bps must include 20 (the reject level)")
        return [float(x) for x in levels]


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}"


def load_profiles(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    path = Path(path) if path else DEFAULT_PROFILES_PATH
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read profiles: {str(exc).splitlines()[0]}") from None
    profiles = (data or {}).get("profiles") if isinstance(data, dict) else None
    if not isinstance(profiles, dict) or not profiles:
        raise ProfileError(f"{path}: missing top-level 'profiles' mapping")
    return profiles


def resolve_profile(
    name: str, overrides: dict[str, Any] | None = None, path: str | Path | None = None
) -> Profile:
    """The named profile with every non-None override applied, validated as a whole."""
    profiles = load_profiles(path)
    if name not in profiles:
        raise ProfileError(f"unknown profile {name!r}; known: {', '.join(sorted(profiles))}")
    raw = dict(profiles[name] or {})
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in NESTED and isinstance(value, dict) and isinstance(raw.get(key), dict):
            value = {**raw[key], **{k: v for k, v in value.items() if v is not None}}
        raw[key] = value
    raw["name"] = name
    try:
        return Profile(**raw)
    except ValidationError as exc:
        raise ProfileError(f"profile {name!r}: {_one_line(exc)}") from None
    except TypeError as exc:
        raise ProfileError(f"profile {name!r}: {exc}") from None
