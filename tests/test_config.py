"""The strategy config: schema, merge order, modes, config_id, overrides, dump/reload."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strategy import params as P
from strategy.config import (
    NO_MODE,
    ConfigError,
    EffectiveConfig,
    apply_overrides,
    config_from_dict,
    config_id_of,
    dump_config_yaml,
    is_config_path,
    load_config,
    validate_override_path,
)
from strategy.config_schema import GlobalConfig

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "strategy_overrides.yaml.example"


@pytest.fixture(autouse=True)
def _no_mode_env(monkeypatch):
    monkeypatch.delenv("AI_QUANT_STRATEGY_MODE", raising=False)


def _problems(data, **kw) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, source="t.yaml", **kw)
    return info.value.problems


def _at(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


# --- defaults and schema -------------------------------------------------------------------------


def test_pydantic_defaults_equal_param_and_window_specs():
    defaults = GlobalConfig().model_dump()
    for path, want in (*P.PARAM_SPECS, *P.WINDOW_SPECS):
        got = _at(defaults, path)
        assert got == want and type(got) is type(want), path
    assert defaults["engine"] == {
        "interval": "1h",
        "entry_interval": None,
        "exit_interval": None,
        "signal_on_candle_close": True,
        "loop_target_s": 5.0,
        "candle_close_grace_ms": 2000,
        "exit_fill": "close",
        "symbol_warmup_bars": 0,
    }
    assert defaults["watchlist_exclude"] == []


def test_example_equals_code_defaults_and_modes_set_intervals():
    base = load_config(EXAMPLE, mode=NO_MODE)
    assert base.config_id == config_from_dict({}).config_id
    assert (base.interval, base.entry_interval, base.exit_interval) == ("1h", None, None)
    want = {
        "primary": ("30m", None, "5m"),
        "fallback": ("1h", None, "5m"),
        "conservative": ("1h", None, "15m"),
        "flat": ("1h", None, "15m"),
    }
    for mode, intervals in want.items():
        cfg = load_config(EXAMPLE, mode=mode)
        assert cfg.mode == mode
        assert (cfg.interval, cfg.entry_interval, cfg.exit_interval) == intervals
    flat = load_config(EXAMPLE, mode="flat").params_for("BTC")
    assert flat[P.P_SIZE_MULTIPLIER] == 0.0
    assert flat[P.P_BUMP_TO_MIN_NOTIONAL] == 0.0
    assert flat[P.P_ENABLE_PYRAMIDING] == 0.0


def test_value_errors_name_their_yaml_path():
    probs = dict(
        _problems(
            {
                "global": {
                    "trade": {
                        "sl_atr_mult": -1,
                        "leverage": "2.0",
                        "allocation_pct": 1.5,
                        "max_open_positions": 0,
                    },
                    "indicators": {"ema_fast_window": 50, "ema_slow_window": 50, "rsi_window": 2.5},
                    "thresholds": {
                        "stoch_rsi": {"block_long_if_k_gt": 85},
                        "entry": {"macd_hist_entry_mode": "x"},
                    },
                    "filters": {"require_btc_alignment": "yes"},
                    "engine": {"interval": "5m", "entry_interval": "3m", "exit_interval": "15m"},
                }
            }
        )
    )
    assert probs["global.trade.sl_atr_mult"] == "must be > 0 (got -1)"
    assert probs["global.trade.leverage"] == "must be a number (got '2.0')"
    assert probs["global.trade.allocation_pct"] == "must be <= 1 (got 1.5)"
    assert probs["global.trade.max_open_positions"] == "must be >= 1 (got 0)"
    assert "ema_fast_window" in probs["global.indicators.ema_slow_window"]
    assert probs["global.indicators.rsi_window"] == "must be a whole number (got 2.5)"
    assert probs["global.thresholds.stoch_rsi.block_long_if_k_gt"] == "must be <= 1 (got 85)"
    assert "accel, sign or none" in probs["global.thresholds.entry.macd_hist_entry_mode"]
    assert probs["global.filters.require_btc_alignment"] == "must be true or false (got 'yes')"
    assert (
        probs["global.engine.entry_interval"]
        == "must be 5m or a shorter interval that divides it evenly (got 3m)"
    )
    assert "divides it evenly (got 15m)" in probs["global.engine.exit_interval"]
    assert len(probs) == 11


def test_whole_floats_accepted_for_counts_and_ints_for_floats():
    cfg = config_from_dict({"global": {"trade": {"max_open_positions": 5.0, "sl_atr_mult": 3}}})
    assert cfg.get("trade.max_open_positions") == 5 and isinstance(cfg.get("trade.max_open_positions"), int)
    assert cfg.get("trade.sl_atr_mult") == 3.0 and isinstance(cfg.get("trade.sl_atr_mult"), float)


def test_reference_keys_act_and_typos_get_a_suggestion():
    probs = _problems(
        {
            "global": {
                "trade": {"sl_atr_mul": 2.0},
                "thresholds": {"entry": {"ave_enabled": True, "enable_pullback_entries": True}},
                "market_regime": {"enable_auto_reverse": False},
                "filters": {"zzz": 1},
            },
            "symbolz": {},
        }
    )
    assert ("global.trade.sl_atr_mul", "unknown key (did you mean sl_atr_mult?)") in probs
    assert ("global.filters.zzz", "unknown key") in probs
    assert ("symbolz", "unknown key (did you mean symbols?)") in probs
    assert len(probs) == 3  # the AVE, pullback and breadth keys of the reference load


def test_a_reference_key_not_implemented_is_refused_by_name(monkeypatch):
    """Every reference key acts today; the table still names any that does not (none is ignored)."""
    from strategy import config_schema

    monkeypatch.setitem(config_schema.REFERENCE_ONLY_KEYS, "thresholds.entry", frozenset({"future_rule"}))
    probs = _problems({"global": {"thresholds": {"entry": {"future_rule": True}}}})
    assert probs == [("global.thresholds.entry.future_rule",
                      "known key of the reference strategy, not implemented in this version (remove it)")]


def test_the_reference_windows_filed_under_thresholds_are_global_only():
    probs = _problems({"symbols": {"ETH": {"thresholds": {"entry": {"ave_avg_atr_window": 40,
                                                                    "slow_drift_slope_window": 10}}}}})
    assert [p for p, _ in probs] == ["symbols.ETH.thresholds.entry.ave_avg_atr_window",
                                     "symbols.ETH.thresholds.entry.slow_drift_slope_window"]
    assert all("indicator window" in why for _, why in probs)
    cfg = config_from_dict({"global": {"thresholds": {"entry": {"ave_avg_atr_window": 40}}}})
    assert cfg.windows()[P.W_AVG_ATR] == 40 and cfg.windows()[P.W_EMA_SLOW_SLOPE] == 20


def test_config_error_is_one_line_and_lists_all_problems():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"global": {"trade": {"sl_atr_mult": -1, "tp_atr_mult": -2}}}, source="cfg.yaml")
    err = info.value
    assert isinstance(err, ValueError)
    assert str(err) == "cfg.yaml: global.trade.sl_atr_mult: must be > 0 (got -1) (+1 more problem)"
    assert "\n" not in str(err)
    assert err.problems == [
        ("global.trade.sl_atr_mult", "must be > 0 (got -1)"),
        ("global.trade.tp_atr_mult", "must be > 0 (got -2)"),
    ]
    clone = pickle.loads(pickle.dumps(err))  # survives a process pool
    assert str(clone) == str(err) and clone.problems == err.problems


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (None, "f.yaml: file not found"),
        ("global:\n  trade:\n    sl_atr_mult: [1\n", "line 4, column 1: invalid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("", "top level must be a mapping with global:, symbols:, modes: (file is empty)"),
        ("global:\n  trade: {}\n  trade: {}\n", "line 3, column 3: invalid YAML: duplicate key 'trade'"),
        ("symbols:\n  BTC:\n    indicators: {}\n", "symbols.BTC.indicators: cannot be set per symbol"),
    ],
)
def test_file_errors_are_config_errors(tmp_path, content, expect):
    path = tmp_path / "f.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expect in str(info.value)
    assert str(info.value).startswith(str(path))
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_scientific_notation_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("global:\n  trade:\n    min_atr_pct: 3e-3\n")
    assert load_config(path).get("trade.min_atr_pct") == 0.003


# --- merge order and modes ---------------------------------------------------------------------

LAYERED = {
    "global": {"trade": {"leverage": 3.0, "sl_atr_mult": 2.5}, "engine": {"interval": "1h"}},
    "symbols": {"BTC": {"trade": {"leverage": 4.0, "tp_atr_mult": 8.0}}},
    "live": {
        "global": {"trade": {"leverage": 1.5}},
        "symbols": {"ETH": {"filters": {"require_btc_alignment": False}}},
    },
    "modes": {
        "primary": {
            "global": {"engine": {"interval": "30m", "entry_interval": "5m"}, "trade": {"sl_atr_mult": 1.8}},
            "symbols": {"BTC": {"trade": {"sl_atr_mult": 1.2}}},
        },
        "flat": {"global": {"trade": {"size_multiplier": 0.0}}},
    },
}


def test_merge_order_global_symbol_live_mode():
    plain = config_from_dict(LAYERED, mode=NO_MODE)
    assert plain.get("trade.leverage", "BTC") == 4.0  # symbol beats global
    assert plain.get("trade.leverage", "SOL") == 3.0
    assert plain.get("trade.tp_atr_mult", "BTC") == 8.0
    assert plain.get("filters.require_btc_alignment", "ETH") is True  # live not applied
    assert plain.to_dict()["symbols"] == {"BTC": {"trade": {"leverage": 4.0, "tp_atr_mult": 8.0}}}

    live = config_from_dict(LAYERED, mode=NO_MODE, live=True)
    assert live.get("trade.leverage", "BTC") == 1.5  # live.global beats symbols.BTC
    assert live.get("trade.tp_atr_mult", "BTC") == 8.0  # untouched symbol key survives
    assert live.get("filters.require_btc_alignment", "ETH") is False

    both = config_from_dict(LAYERED, mode="primary", live=True)
    assert both.interval == "30m" and both.entry_interval == "5m" and both.exit_interval is None
    assert both.get("trade.sl_atr_mult", "SOL") == 1.8  # mode.global beats global
    assert both.get("trade.sl_atr_mult", "BTC") == 1.2  # mode.symbols beats mode.global
    assert both.get("global.trade.leverage", "BTC") == 1.5
    row = both.params_matrix(["BTC", "SOL"])
    assert row[0, P.P_SL_ATR_MULT] == 1.2 and row[1, P.P_SL_ATR_MULT] == 1.8
    assert row[0, P.P_TP_ATR_MULT] == 8.0 and row[1, P.P_TP_ATR_MULT] == 6.0
    assert len({plain.config_id, live.config_id, both.config_id}) == 3


@pytest.mark.parametrize(
    ("given", "canonical"),
    [("m1", "primary"), ("MODE1", "primary"), ("primary", "primary"), ("halt", "flat"), ("pause", "flat")],
)
def test_mode_aliases_from_argument_and_env(monkeypatch, given, canonical):
    assert config_from_dict(LAYERED, mode=given).mode == canonical
    monkeypatch.setenv("AI_QUANT_STRATEGY_MODE", given)
    assert config_from_dict(LAYERED).mode == canonical
    assert config_from_dict(LAYERED, mode=NO_MODE).mode is None  # explicit "no overlay" wins


def test_unknown_mode_and_undefined_mode(monkeypatch):
    probs = _problems(LAYERED, mode="turbo")
    assert probs[0][0] == "mode" and "unknown strategy mode 'turbo'" in probs[0][1]
    assert _problems(LAYERED, mode="m3") == [
        ("modes.conservative", "mode 'conservative' is selected but not defined under modes:")
    ]
    monkeypatch.setenv("AI_QUANT_STRATEGY_MODE", "safety")
    assert _problems(LAYERED)[0][0] == "modes.conservative"
    assert _problems({"live": {"trade": {"leverage": 1.0}}}, mode=NO_MODE) == [
        ("live.trade", "move it under live.global.trade (overlays take global: and symbols:)")
    ]
    assert _problems({"engine": {"interval": "1h"}}, mode=NO_MODE) == [
        ("engine", "move it under global.engine")
    ]
    assert _problems({"modes": {"turbo": {}}}, mode=NO_MODE) == [
        ("modes.turbo", "unknown mode; modes are primary, fallback, conservative, flat")
    ]


def test_overlay_problems_are_reported_under_the_overlay_once():
    data = {
        "symbols": {"BTC": {"trade": {"sl_atr_mult": -1}}, "ETH": {"trade": {"sl_atr_mult": -1}}},
        "modes": {"primary": {"global": {"thresholds": {"ranging": {"rsi_low": 60}}}}},
    }
    probs = _problems(data, mode=NO_MODE)
    assert ("symbols.BTC.trade.sl_atr_mult", "must be > 0 (got -1)") in probs
    assert ("symbols.ETH.trade.sl_atr_mult", "must be > 0 (got -1)") in probs
    assert probs[-1][0] == "modes.primary.global.thresholds.ranging.rsi_high"
    assert len(probs) == 3


# --- config_id -----------------------------------------------------------------------------------


def test_config_id_is_sha256_of_canonical_json():
    cfg = load_config(EXAMPLE, mode="primary")
    assert cfg.config_id == config_id_of(cfg.to_dict())
    assert len(cfg.config_id) == 64 and int(cfg.config_id, 16) >= 0
    assert config_id_of({"b": 1.0, "a": [1, 2]}) == config_id_of({"a": [1, 2], "b": 1.0})


def _shuffled(node, rng: random.Random):
    if isinstance(node, dict):
        items = list(node.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    return node


def _with_comments(text: str, rng: random.Random) -> str:
    lines = []
    for line in text.splitlines():
        if rng.random() < 0.3:
            lines.append(f"# note {rng.randint(0, 999)}")
        lines.append(line + (f"   # c{rng.randint(0, 99)}" if rng.random() < 0.3 and line.strip() else ""))
    return "\n".join(lines) + "\n"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), mode=st.sampled_from([NO_MODE, "primary", "flat"]))
def test_config_id_invariant_under_key_order_and_comments(tmp_path, seed, mode):
    rng = random.Random(seed)
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["symbols"] = {
        "BTC": {"trade": {"sl_atr_mult": 2.5}},
        "ETH": {"thresholds": {"entry": {"min_adx": 25}}},
    }
    raw["global"]["watchlist_exclude"] = ["ZK", "BERA", "INJ"]
    want = config_from_dict(raw, mode=mode).config_id
    shuffled = _shuffled(raw, rng)
    shuffled["global"]["watchlist_exclude"] = rng.sample(["ZK", "BERA", "INJ"], 3)
    path = tmp_path / f"shuffled_{seed}.yaml"
    path.write_text(_with_comments(yaml.safe_dump(shuffled, sort_keys=False), rng))
    assert load_config(path, mode=mode).config_id == want


def test_example_config_id_stable_when_rewritten(tmp_path):
    want = load_config(EXAMPLE, mode=NO_MODE).config_id
    raw = yaml.safe_load(EXAMPLE.read_text())
    path = tmp_path / "rewritten.yaml"
    path.write_text("# rewritten\n" + yaml.safe_dump(_shuffled(raw, random.Random(7)), sort_keys=False))
    assert load_config(path, mode=NO_MODE).config_id == want
    # A real change moves the id; writing 2 instead of 2.0 does not.
    raw["global"]["trade"]["sl_atr_mult"] = 2
    assert config_from_dict(raw, mode=NO_MODE).config_id == want
    raw["global"]["trade"]["sl_atr_mult"] = 2.1
    assert config_from_dict(raw, mode=NO_MODE).config_id != want


def test_redundant_symbol_override_does_not_change_config_id():
    base = config_from_dict({}, mode=NO_MODE)
    same = config_from_dict({"symbols": {"BTC": {"trade": {"sl_atr_mult": 2.0}}}}, mode=NO_MODE)
    assert same.config_id == base.config_id and same.to_dict()["symbols"] == {}


# --- kernel encoding -----------------------------------------------------------------------------


def test_params_for_encodes_enums_bools_and_numbers():
    cfg = config_from_dict(
        {
            "global": {
                "trade": {
                    "add_min_confidence": "high",
                    "entry_min_confidence": "medium",
                    "enable_pyramiding": False,
                },
                "thresholds": {"entry": {"macd_hist_entry_mode": "none"}},
                "indicators": {"ema_fast_window": 8, "ema_slow_window": 15},
            },
            "symbols": {"BTC": {"thresholds": {"entry": {"macd_hist_entry_mode": "sign"}}}},
        },
        mode=NO_MODE,
    )
    vec = cfg.params_for(None)
    assert vec.dtype == np.float64 and vec.shape == (P.NP,)
    assert vec[P.P_ADD_MIN_CONFIDENCE] == 2.0
    assert vec[P.P_ENTRY_MIN_CONFIDENCE] == 1.0
    assert vec[P.P_MACD_HIST_ENTRY_MODE] == 2.0
    assert vec[P.P_ENABLE_PYRAMIDING] == 0.0 and vec[P.P_ENABLE_PARTIAL_TP] == 1.0
    assert vec[P.P_ALLOCATION_PCT] == 0.03 and vec[P.P_MAX_OPEN_POSITIONS] == 20.0
    assert cfg.params_for("BTC")[P.P_MACD_HIST_ENTRY_MODE] == 1.0
    assert np.array_equal(cfg.params_for("DOGE"), vec)
    mat = cfg.params_matrix(["BTC", "DOGE"])
    assert mat.shape == (2, P.NP) and mat[0, P.P_MACD_HIST_ENTRY_MODE] == 1.0
    win = cfg.windows()
    assert win.dtype == np.int64 and win[P.W_EMA_FAST] == 8 and win[P.W_EMA_SLOW] == 15
    assert win[P.W_EMA_MACRO] == 200
    vec[0] = 99.0  # callers get copies
    assert cfg.params_for(None)[0] == 0.03


def test_effective_config_is_immutable():
    cfg = config_from_dict({}, mode=NO_MODE)
    with pytest.raises(AttributeError):
        cfg.mode = "flat"
    d = cfg.to_dict()
    d["global"]["trade"]["leverage"] = 9.0
    assert cfg.get("trade.leverage") == 2.0
    assert cfg.watchlist_exclude == ()
    with pytest.raises(ConfigError, match="no such config key"):
        cfg.get("trade.nope")


# --- overrides and dump --------------------------------------------------------------------------


def test_apply_overrides_round_trip_and_symbol_paths():
    cfg = load_config(EXAMPLE, mode="primary")
    new = apply_overrides(cfg, {"trade.sl_atr_mult": 1.5, "global.indicators.adx_window": 10})
    assert new.get("trade.sl_atr_mult") == 1.5 and new.windows()[P.W_ADX] == 10
    assert new.config_id != cfg.config_id and new.mode == "primary" and new.interval == "30m"
    back = apply_overrides(new, {"trade.sl_atr_mult": 2.0, "indicators.adx_window": 14})
    assert back.config_id == cfg.config_id
    sym = apply_overrides(cfg, {"symbols.BTC.trade.leverage": 3.0})
    assert sym.get("trade.leverage", "BTC") == 3.0 and sym.get("trade.leverage", "ETH") == 2.0
    assert isinstance(sym, EffectiveConfig) and cfg.symbols == ()


def test_apply_overrides_rejects_bad_paths_and_values():
    cfg = config_from_dict({}, mode=NO_MODE)
    cases = {
        "trade.sl_atr_mul": "unknown key (did you mean sl_atr_mult?)",
        "symbols.BTC.thresholds.entry.slow_drift_slope_window": "is an indicator window",
        "symbols.BTC.indicators.adx_window": "cannot be set per symbol",
        "modes.flat.global.trade.leverage": "already applied",
        "trade.leverage": "must be <= 50 (got 80)",
    }
    for path, expect in cases.items():
        value = 80 if path == "trade.leverage" else 1
        with pytest.raises(ConfigError) as info:
            apply_overrides(cfg, {path: value})
        assert info.value.problems[0][0] == path and expect in info.value.problems[0][1], path
    with pytest.raises(ConfigError, match="global.indicators.ema_slow_window"):
        apply_overrides(cfg, {"indicators.ema_fast_window": 60})


def test_validate_override_path_checks_key_and_range_only():
    validate_override_path("trade.sl_atr_mult", 1.25)
    validate_override_path("indicators.ema_fast_window", 60)  # cross-key order is checked on apply
    validate_override_path("symbols.ETH.thresholds.entry.min_adx", 30)
    validate_override_path("modes.flat.global.trade.size_multiplier", 0.0)  # YAML-document paths too
    validate_override_path("live.symbols.BTC.trade.leverage", 3)
    validate_override_path("global.engine", {"interval": "30m", "entry_interval": "5m"})
    assert is_config_path("engine.interval") and is_config_path("global.thresholds.entry")
    assert is_config_path("thresholds.entry.enable_pullback_entries") and not is_config_path("modes.turbo.global.trade")
    bad = [
        ("trade.sl_atr_mult", 0),
        ("trade.sl_atr_mul", 1.0),
        ("engine.interval", "2m"),
        ("modes.turbo.global.trade.leverage", 2.0),
        ("live.trade.leverage", 2.0),
    ]
    for path, value in bad:
        with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
            validate_override_path(path, value)


def test_dump_and_reload_give_same_config_id(tmp_path):
    cfg = apply_overrides(
        load_config(EXAMPLE, mode="flat"),
        {
            "symbols.kPEPE.trade.sl_atr_mult": 1e-3,
            "watchlist_exclude": ["ON", "ZK"],
            "trade.min_atr_pct": 0.1,
        },
    )
    out = tmp_path / "sub" / "resolved.yaml"
    dump_config_yaml(cfg, out)
    assert [p.name for p in out.parent.iterdir()] == ["resolved.yaml"]  # no temp file left behind
    again = load_config(out, mode=NO_MODE)
    assert again.config_id == cfg.config_id
    assert again.watchlist_exclude == ("ON", "ZK")
    assert again.get("trade.sl_atr_mult", "kPEPE") == 0.001
    assert again.get("trade.size_multiplier") == 0.0  # the flat overlay is baked in
    assert cfg.config_id in out.read_text()


@pytest.mark.parametrize("window", ["stoch_rsi_window", "bb_window", "adx_window"])
def test_spread_windows_must_be_at_least_two(window):
    """A 1-bar stoch RSI makes K NaN forever (no trade ever); 1-bar BB/ADX are degenerate too."""
    probs = dict(_problems({"global": {"indicators": {window: 1}}}))
    msg = probs[f"global.indicators.{window}"]
    assert msg.startswith("must be >= 2 (got 1): ") and len(msg) > 40  # says why
    config_from_dict({"global": {"indicators": {window: 2}}})
    with pytest.raises(ConfigError, match=f"indicators.{window}: must be >= 2"):
        validate_override_path(f"indicators.{window}", 1)


@pytest.mark.parametrize("value, expect", [(0.0, "must be > 0 (got 0.0)"), (1.0, "must be < 1 (got 1.0)"),
                                           (1, "must be < 1 (got 1)")])
def test_tp_partial_pct_strictly_between_zero_and_one(value, expect):
    assert dict(_problems({"global": {"trade": {"tp_partial_pct": value}}}))["global.trade.tp_partial_pct"] == expect
    probs = dict(_problems({"symbols": {"ETH": {"trade": {"tp_partial_pct": value}}}}))
    assert probs["symbols.ETH.trade.tp_partial_pct"] == expect
    with pytest.raises(ConfigError, match="trade.tp_partial_pct: must be"):
        apply_overrides(config_from_dict({}), {"trade.tp_partial_pct": value})
    assert config_from_dict({"global": {"trade": {"tp_partial_pct": 0.5}}}).get("trade.tp_partial_pct") == 0.5


@pytest.mark.parametrize("key", ["max_open_positions", "max_total_margin_pct"])
def test_portfolio_wide_caps_cannot_be_set_per_symbol(key):
    value = 3 if key == "max_open_positions" else 0.5
    doc = {"symbols": {"ETH": {"trade": {key: value, "leverage": 3.0}}},
           "live": {"symbols": {"BTC": {"trade": {key: value}}}},
           "modes": {"flat": {"symbols": {"SOL": {"trade": {key: value}}}}}}
    probs = dict(_problems(doc))
    for where in ("symbols.ETH", "live.symbols.BTC", "modes.flat.symbols.SOL"):
        assert "portfolio-wide" in probs[f"{where}.trade.{key}"]
    assert len(probs) == 3
    cfg = config_from_dict({})
    for path in (f"symbols.ETH.trade.{key}", "symbols.ETH.trade"):
        over = {path: value} if path.endswith(key) else {path: {key: value}}
        with pytest.raises(ConfigError, match="portfolio-wide"):
            apply_overrides(cfg, over)
    with pytest.raises(ConfigError, match="portfolio-wide"):
        validate_override_path(f"modes.flat.symbols.ETH.trade.{key}", value)
    assert apply_overrides(cfg, {f"trade.{key}": value}).get(f"trade.{key}") == value  # global is fine


def test_keys_the_reference_never_reads_load_with_one_warning_naming_them(caplog):
    """Live-only keys, second-granularity cooldowns and the never-applied dynamic TP multiples are
    accepted, do not act (the parameter vector is unchanged) and are named on one warning line."""
    import logging

    inert = {"trade": {"use_bbo_for_fills": True, "entry_cooldown_s": 20, "exit_cooldown_s": 15},
             "thresholds": {"tp_and_momentum": {"adx_weak_lt": 30.0, "tp_mult_strong": 7.0, "tp_mult_weak": 3.0}},
             "market_regime": {"enable_regime_gate": False, "regime_gate_fail_open": True}}
    with caplog.at_level(logging.WARNING, logger="strategy.config"):
        cfg = config_from_dict({"global": inert}, mode=NO_MODE)
    lines = [r.getMessage() for r in caplog.records if r.name == "strategy.config"]
    assert len(lines) == 1
    for key in ("global.trade.use_bbo_for_fills", "global.trade.entry_cooldown_s", "global.trade.exit_cooldown_s",
                "global.thresholds.tp_and_momentum.tp_mult_strong", "global.market_regime.enable_regime_gate"):
        assert key in lines[0]
    np.testing.assert_array_equal(cfg.params_for(None), config_from_dict({}, mode=NO_MODE).params_for(None))
    with pytest.raises(ConfigError, match="never reads"):
        apply_overrides(cfg, {"thresholds.tp_and_momentum.tp_mult_strong": 5.0})
