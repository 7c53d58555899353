"""One declaration per knob and per layout: every config path lands at the index the kernel reads.

PARAM_SPECS is the table; the P namespace (P.SL_ATR_MULT, ...) and the flat P_* names are derived
from it. These tests change one key at a time in a real config and check that exactly its column
of the parameter vector moves, that the kernel's source reads every column by that name, and that
the state layouts are the tables they claim to be.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import strategy.features as FEATURES
import strategy.layout as L
import strategy.params as PARAMS
from strategy.config import ConfigError, config_from_dict
from strategy.features import F
from strategy.params import ENUMS, PARAM_INDEX, PARAM_SPECS, P, encode_value, kernel_name

KERNEL_DIR = Path(__file__).resolve().parents[1] / "strategy" / "kernel"
# Columns the kernel does not read yet, and why (a new key must not land here by accident).
NOT_READ_BY_KERNEL = {"MAKER_FEE_BPS": "every simulated fill is a taker fill (book.taker_entry_fill)"}


def _nested(path: str, value) -> dict:
    out: dict = {}
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return {"global": out}


def _other_values(path: str, default):
    """A few valid-looking values different from the default, most likely first."""
    if path in ENUMS:
        return [k for k in ENUMS[path] if k != default]
    if isinstance(default, bool):
        return [not default]
    if isinstance(default, int):
        return [default + 1, default - 1]
    return [default + 0.01, default - 0.01, default * 1.5]


def _changed(path: str, default):
    for value in _other_values(path, default):
        try:
            return value, config_from_dict(_nested(path, value))
        except ConfigError:
            continue
    raise AssertionError(f"no valid value other than the default for {path}")


@pytest.mark.parametrize(("path", "default"), PARAM_SPECS, ids=[p for p, _ in PARAM_SPECS])
def test_each_config_path_moves_exactly_its_kernel_column(path, default):
    base = config_from_dict({}).params_for(None)
    value, cfg = _changed(path, default)
    vec = cfg.params_for(None)
    moved = [i for i in range(P.N) if vec[i] != base[i]]
    col = getattr(P, kernel_name(path))
    assert moved == [col], f"{path} moved columns {moved}, the kernel reads P.{kernel_name(path)} = {col}"
    assert col == PARAM_INDEX[path] == getattr(PARAMS, f"P_{kernel_name(path)}")
    assert vec[col] == encode_value(path, value)


def test_the_kernel_reads_every_column_by_its_declared_name():
    src = "\n".join(p.read_text() for p in sorted(KERNEL_DIR.glob("*.py")))
    read = set(re.findall(r"\bP\.([A-Z][A-Z0-9_]*)\b", src)) - {"N", "NAMES", "MEANINGS"}
    declared = {n.upper() for n in P.NAMES}
    assert read <= declared, f"the kernel reads undeclared columns: {sorted(read - declared)}"
    assert declared - read == set(NOT_READ_BY_KERNEL), f"declared, never read: {sorted(declared - read)}"


def test_state_layouts_are_their_tables():
    for mod, ns, count in ((L, L.POS, "NPOS"), (L, L.A, "NACCT"), (L, L.FL, "NFILL"), (L, L.T, "NTRADE"),
                           (L, L.M, "NM"), (FEATURES, F, "NF"), (PARAMS, P, "NP")):
        assert getattr(mod, count) == ns.N == len(ns.NAMES)
        for i, name in enumerate(ns.NAMES):
            assert getattr(ns, name.upper()) == i
            assert getattr(mod, f"{ns.__name__}_{name.upper()}") == i


def test_enumerations_decode_what_configs_encode():
    assert ENUMS["trade.entry_min_confidence"] == L.CONF.CODES == {"low": 0, "medium": 1, "high": 2}
    assert ENUMS["thresholds.entry.macd_hist_entry_mode"] == L.MACD.CODES == {"accel": 0, "sign": 1, "none": 2}
    for code, name in L.CONF.NAMES.items():
        assert encode_value("trade.entry_min_confidence", name) == code == getattr(L.CONF, name.upper())
    assert L.R.NAMES[int(L.R.STOP_LOSS)] == "stop_loss" and L.ACT.NAMES[int(L.ACT.OPEN)] == "OPEN"
