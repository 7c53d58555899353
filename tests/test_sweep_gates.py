"""Conditional axes (``gate: {path, eq}``) and the reference's numeric codes in sweep specs.

Written from the spec syntax (docs/GPU.md, "Sweep specs"): a gated axis takes its swept values
only in candidates where its gate holds and keeps the base config's value elsewhere; numeric
codes decode to config values (0/1 booleans, enum codes in the schema's order, 14.0 -> 14).
No kernel runs here (fast); tests/test_sweep_reference_specs.py runs the reference files.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gpu.grid import candidates_from_overrides, encoded_columns, expand_grid
from gpu.spec import SweepSpecError, bind_base, load_sweep_spec, parse_sweep_spec
from gpu.spec_codes import decode_value
from gpu.tpe import Neighbourhoods, _distributions, _trial_value_idx, run_tpe
from strategy.config import apply_overrides, config_from_dict
from strategy.layout import M_TOTAL_PNL, NM

BASE = config_from_dict({"global": {"trade": {"enable_pyramiding": False, "max_adds_per_symbol": 2,
                                              "add_min_confidence": "medium"}}})
GATED = {
    "axes": [
        {"path": "trade.max_adds_per_symbol", "gate": {"path": "trade.enable_pyramiding", "eq": 1},
         "values": [1, 3]},
        {"path": "trade.enable_pyramiding", "values": [0, 1]},
        {"path": "trade.add_min_confidence", "gate": {"path": "trade.enable_pyramiding", "eq": 1},
         "values": [0, 2]},
        {"path": "trade.leverage", "gate": {"path": "trade.enable_dynamic_leverage", "eq": 0},
         "values": [1, 2, 3]},
        {"path": "trade.enable_dynamic_leverage", "values": [0, 1]},
        {"path": "indicators.stoch_rsi_window", "gate": {"path": "filters.use_stoch_rsi_filter", "eq": 1},
         "values": [10.0, 20.0]},
        {"path": "filters.use_stoch_rsi_filter", "values": [0, 1]},
        {"path": "trade.sl_atr_mult", "values": [1.5, 2.5]},
    ],
}


def spec_of(data=GATED, base=BASE):
    return bind_base(parse_sweep_spec(data, "<test>"), base)


def test_numeric_codes_decode_to_config_values():
    spec = spec_of()
    by = {a.path: a for a in spec.axes}
    assert by["trade.enable_pyramiding"].values == (False, True)
    assert by["trade.add_min_confidence"].values == ("low", "high")  # 0=low, 1=medium, 2=high
    assert by["indicators.stoch_rsi_window"].values == (10, 20)  # whole floats -> counts
    assert by["trade.leverage"].values == (1, 2, 3)  # a float key keeps its numbers
    assert decode_value("thresholds.entry.macd_hist_entry_mode", 2) == "none"  # 0=accel, 1=sign, 2=none
    assert decode_value("trade.entry_min_confidence", 1.0) == "medium"
    assert decode_value("trade.entry_min_confidence", "high") == "high"  # labels stay labels
    gate = by["trade.max_adds_per_symbol"].gate
    assert gate.path == "trade.enable_pyramiding" and gate.eq is True and gate.axis == 1


def _brute_force(spec) -> set[tuple]:
    """Every cartesian combo with each gated axis collapsed to its base slot where its gate is off."""
    out = set()
    for combo in itertools.product(*[range(len(a.values)) for a in spec.axes]):
        row = list(combo)
        for k in spec.gated:
            gate = spec.axes[k].gate
            if row[gate.axis] != gate.eq_index:
                row[k] = spec.axes[k].base_slot
        out.add(tuple(row))
    return out


def test_grid_varies_a_gated_axis_only_where_its_gate_holds():
    spec = spec_of()
    grid = expand_grid(spec)
    rows = {tuple(int(x) for x in r) for r in grid.value_idx}
    assert len(rows) == len(grid)  # no duplicate candidate
    assert rows == _brute_force(spec)
    # pyramiding: off 1 + on 2x2 = 5; dynamic leverage: on 1 + off 3 = 4; stoch: 1 + 2 = 3; sl 2
    assert len(grid) == spec.grid_size_unconstrained == 5 * 4 * 3 * 2
    for i in range(len(grid)):
        ov = grid.overrides(i)
        assert ("trade.max_adds_per_symbol" in ov) == ov["trade.enable_pyramiding"]
        assert ("trade.add_min_confidence" in ov) == ov["trade.enable_pyramiding"]
        assert ("trade.leverage" in ov) == (not ov["trade.enable_dynamic_leverage"])
        assert ("indicators.stoch_rsi_window" in ov) == ov["filters.use_stoch_rsi_filter"]
        cfg = apply_overrides(BASE, ov)  # where the gate is off the key keeps the base value
        if not ov["trade.enable_pyramiding"]:
            assert cfg.get("trade.max_adds_per_symbol") == 2 and cfg.get("trade.add_min_confidence") == "medium"


def test_a_gated_axis_encodes_the_base_value_where_its_gate_is_off():
    spec = spec_of()
    grid = expand_grid(spec)
    enc = encoded_columns(spec, grid.value_idx)
    k = [a.path for a in spec.axes].index("trade.add_min_confidence")
    off = grid.value_idx[:, k] == spec.axes[k].base_slot
    assert off.any() and (~off).any()
    assert set(enc[off, k]) == {1.0}  # the base's "medium"
    assert set(enc[~off, k]) == {0.0, 2.0}


def test_grid_order_without_gates_is_unchanged():
    spec = parse_sweep_spec({"axes": [{"path": "trade.sl_atr_mult", "values": [1.0, 2.0]},
                                      {"path": "trade.tp_atr_mult", "values": [3.0, 4.0, 5.0]}]})
    grid = expand_grid(spec)
    assert grid.value_idx.tolist() == [list(c) for c in itertools.product(range(2), range(3))]


def test_constraints_see_the_base_value_of_a_switched_off_axis():
    data = {**GATED, "constraints": ["leverage >= 2"]}
    grid = expand_grid(spec_of(data))  # base leverage 2.0 passes; swept 1 is dropped
    levs = {grid.overrides(i).get("trade.leverage", "base") for i in range(len(grid))}
    assert levs == {2, 3, "base"}


def test_candidates_from_overrides_round_trip_and_refuse_a_value_under_a_closed_gate():
    spec = spec_of()
    grid = expand_grid(spec)
    again = candidates_from_overrides(spec, [grid.overrides(i) for i in range(len(grid))])
    np.testing.assert_array_equal(again.value_idx, grid.value_idx)
    ov = dict(grid.overrides(0))
    ov["trade.enable_pyramiding"] = False
    ov["trade.max_adds_per_symbol"] = 3
    with pytest.raises(SweepSpecError, match="gate .* is off"):
        candidates_from_overrides(spec, [ov])


def fake_metrics(spec, value_idx):
    out = np.zeros((len(value_idx), NM))
    out[:, M_TOTAL_PNL] = encoded_columns(spec, value_idx).sum(axis=1)
    return out


@pytest.mark.parametrize("neighborhood", [1, 8])
def test_tpe_samples_a_gated_axis_only_where_its_gate_holds(tmp_path, neighborhood):
    import optuna

    spec = spec_of()
    storage = f"sqlite:///{tmp_path / 's.db'}"
    out = run_tpe(spec, lambda idx: fake_metrics(spec, idx), trials=48, batch=16, seed=3, storage=storage,
                  study_name="g", neighborhood=neighborhood)
    assert len(out.value_idx) == 48
    idx = out.value_idx.astype(np.int64)
    off = spec.gate_off(idx)
    base_slot = np.array([a.base_slot for a in spec.axes])
    assert np.array_equal(off, idx == base_slot[None, :])  # a closed gate <=> the base slot
    assert off.any() and (~off[:, list(spec.gated)]).any()
    study = optuna.load_study(study_name="g", storage=storage)
    seen_on = seen_off = 0
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        pyramiding = t.params["trade.enable_pyramiding"]
        assert ("trade.max_adds_per_symbol" in t.params) == pyramiding  # define-by-run: no sample when off
        assert ("trade.leverage" in t.params) == (not t.params["trade.enable_dynamic_leverage"])
        seen_on += pyramiding
        seen_off += not pyramiding
        row = _trial_value_idx(spec, t.params)
        assert np.array_equal(spec.gate_off(row[None, :])[0], row == base_slot)
    assert seen_on and seen_off


def test_neighbours_open_and_close_gates_consistently():
    spec = spec_of()
    hoods = Neighbourhoods(spec, seed=1, size=64)
    dists = _distributions(spec)
    assert set(dists) == {a.path for a in spec.axes}
    p = expand_grid(spec).value_idx[0].astype(np.int64)  # every gate off or on as the grid's first row
    rows = hoods.around(p, trial_number=5, limit=64)
    assert len(rows) > 10
    base_slot = np.array([a.base_slot for a in spec.axes])
    assert np.array_equal(spec.gate_off(rows), rows == base_slot[None, :])
    np.testing.assert_array_equal(rows, hoods.around(p, trial_number=5, limit=64))  # pure function


def _write(tmp_path, text):
    p = tmp_path / "spec.yaml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize(("axes", "fragment"), [
    ("[{path: trade.leverage, values: [1], gate: {path: trade.enable_dynamic_leverage, eq: 0}}]",
     "axes[0].gate.path: 'trade.enable_dynamic_leverage' is not an axis of this spec"),
    ("[{path: trade.leverage, values: [1], gate: {path: trade.nope, eq: 0}}]",
     "axes[0].gate.path: 'trade.nope' is not an axis of this spec"),
    ("[{path: trade.leverage, values: [1], gate: {path: trade.leverage, eq: 1}}]",
     "axes[0].gate.path: an axis cannot gate itself"),
    ("[{path: trade.leverage, values: [1], gate: {path: trade.enable_dynamic_leverage, equals: 0}},"
     " {path: trade.enable_dynamic_leverage, values: [0, 1]}]", "axes[0].gate: unknown key(s) ['equals']"),
    ("[{path: trade.leverage, values: [1], gate: {path: trade.enable_dynamic_leverage, eq: 2}},"
     " {path: trade.enable_dynamic_leverage, values: [0, 1]}]", "axes[0].gate.eq: code 2 out of range (0=false, 1=true)"),
    ("[{path: trade.leverage, values: [1], gate: {path: trade.enable_dynamic_leverage, eq: 1}},"
     " {path: trade.enable_dynamic_leverage, values: [0]}]", "axes[0].gate.eq: 1 is not one of the values"),
    ("[{path: trade.leverage, values: [1], gate: {path: trade.enable_dynamic_leverage, eq: 1}},"
     " {path: trade.enable_dynamic_leverage, values: [0, 1], gate: {path: trade.enable_pyramiding, eq: 1}},"
     " {path: trade.enable_pyramiding, values: [0, 1]}]", "has a gate of its own (gates do not chain)"),
    ("[{path: trade.leverage, values: [1], gate: {path: trade.entry_cooldown_s, eq: 1}},"
     " {path: trade.entry_cooldown_s, values: [10, 20]}]", "'trade.entry_cooldown_s' does not act"),
    ("[{path: trade.entry_min_confidence, values: [0, 3]}]",
     "axes[0].values[1]: code 3 out of range (0=low, 1=medium, 2=high)"),
    ("[{path: thresholds.entry.macd_hist_entry_mode, values: [1.5]}]", "axes[0].values[0]: code 1.5 out of range"),
    ("[{path: trade.enable_pyramiding, values: [0, 2]}]", "axes[0].values[1]: code 2 out of range (0=false, 1=true)"),
    ("[{path: trade.enable_pyramiding, values: [0, false]}]", "axes[0].values: duplicate values"),
    ("[{path: trade.sl_atr_mult, values: [1.0], when: x}]", "axes[0]: unknown key(s) ['when']"),
    ("[{path: trade.entry_cooldown_s, values: [10]}]", "axes: every axis is over a key that does not act"),
])
def test_bad_gates_and_codes_are_one_line_errors(tmp_path, axes, fragment):
    p = _write(tmp_path, f"axes: {axes}\n")
    with pytest.raises(SweepSpecError) as info:
        load_sweep_spec(p, None)
    assert fragment in str(info.value)
    assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_an_axis_the_schema_refuses_gives_its_reason_naming_the_axis(tmp_path, monkeypatch):
    """Every reference key acts today; a key the schema still refused ("not implemented") would be
    refused in a sweep spec with the schema's own reason, naming the axis."""
    from strategy import config_schema
    from strategy.config_schema import key_problem

    section, key = "thresholds.entry", "future_rule"
    monkeypatch.setitem(config_schema.REFERENCE_ONLY_KEYS, section, frozenset({key}))
    p = _write(tmp_path, f"axes: [{{path: trade.sl_atr_mult, values: [1.0]}}, {{path: {section}.{key}, values: [1]}}]\n")
    with pytest.raises(SweepSpecError) as info:
        load_sweep_spec(p, None)
    reason = key_problem(section, key, ())
    assert str(info.value) == f"gpu.spec.SweepSpecError: {p}: axes[1].path: config path '{section}.{key}': {reason}"


def test_inert_axes_are_held_out_and_named():
    spec = parse_sweep_spec({"axes": [{"path": "trade.sl_atr_mult", "values": [1.0, 2.0]},
                                      {"path": "trade.entry_cooldown_s", "values": [15, 20, 25]},
                                      {"path": "thresholds.tp_and_momentum.tp_mult_weak", "values": [2, 3]}]})
    assert [a.path for a in spec.axes] == ["trade.sl_atr_mult"]
    assert spec.inert == ("thresholds.tp_and_momentum.tp_mult_weak", "trade.entry_cooldown_s")
    assert len(expand_grid(spec)) == 2  # they would only multiply identical candidates


def test_a_gated_spec_needs_its_base_before_encoding():
    spec = parse_sweep_spec(GATED, "<test>")
    with pytest.raises(SweepSpecError, match="needs the base config"):
        expand_grid(spec)
    assert len(expand_grid(bind_base(spec, BASE))) == 120


def test_cli_refuses_a_bad_gate_with_one_line_and_exit_2(tmp_path):
    import typer
    from typer.testing import CliRunner

    from gpu.cli import sweep_command

    app = typer.Typer()
    app.command()(sweep_command)
    spec = _write(tmp_path, "axes: [{path: trade.leverage, values: [1, 2], gate: {path: trade.enable_pyramiding, eq: 1}}]\n")
    out = tmp_path / "rows.jsonl"
    res = CliRunner().invoke(app, ["--candles-db", str(tmp_path / "none.db"), "--sweep-spec", str(spec),
                                   "--output", str(out), "--no-progress"])
    assert res.exit_code == 2
    assert "axes[0].gate.path: 'trade.enable_pyramiding' is not an axis of this spec" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()
