"""ConfigWatcher on a real YAML file: reload by mtime, last-good fallback, interval restart notice."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import yaml

from live.config_watch import ConfigWatcher


class ConfigError(ValueError):
    """Stands in for strategy.config.ConfigError (same name, one-line str)."""


@dataclass
class Cfg:
    interval: str
    config_id: str
    sl: float


def loader(path):
    data = yaml.safe_load(path.read_text())
    try:
        g = data["global"]
        return Cfg(g["engine"]["interval"], f"id-{g['trade']['sl_atr_mult']}", float(g["trade"]["sl_atr_mult"]))
    except (KeyError, TypeError):
        raise ConfigError(f"{path}: global.trade.sl_atr_mult missing") from None


def write(path, text, bump_ns):
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump_ns))


GOOD = "global:\n  engine: {interval: 1h}\n  trade: {sl_atr_mult: 2.0}\n"


def test_reload_fallback_and_restart_notice(tmp_path):
    p = tmp_path / "strategy_overrides.yaml"
    write(p, GOOD, 0)
    w = ConfigWatcher(p, loader)
    assert w.config.sl == 2.0
    assert not w.check().changed  # untouched: nothing to do
    write(p, GOOD.replace("2.0", "1.5"), 1_000_000)
    r = w.check()
    assert r.changed and r.config.sl == 1.5 and r.message.startswith("Config reloaded from")
    assert "id-2.0 -> id-1.5" in r.message

    write(p, "global: [unclosed\n", 2_000_000)  # broken YAML
    r = w.check()
    assert not r.changed and r.config.sl == 1.5
    assert r.error.startswith(f"{p}: ") and r.error.endswith("keeping the last good config")
    assert "\n" not in r.error
    assert w.check().error is None  # reported once
    write(p, "global: {}\n", 3_000_000)  # parses, but the loader rejects it
    r = w.check()
    assert r.error == f"{p}: {p}: global.trade.sl_atr_mult missing; keeping the last good config"

    write(p, GOOD.replace("1h", "30m"), 4_000_000)
    r = w.check()
    assert r.restart_required and not r.changed and w.config.interval == "1h"
    assert "engine.interval changed 1h -> 30m: restart required" in r.message

    write(p, GOOD.replace("2.0", "3.0"), 5_000_000)
    assert w.check().config.sl == 3.0


def test_missing_and_world_writable(tmp_path):
    p = tmp_path / "s.yaml"
    write(p, GOOD, 0)
    w = ConfigWatcher(p, loader)
    p.unlink()
    assert "file missing" in w.check().error
    write(p, GOOD.replace("2.0", "2.5"), 10_000_000)
    os.chmod(p, 0o666)
    r = w.check()
    assert "world-writable" in r.error and w.config.sl == 2.0
    os.chmod(p, 0o644)
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 1_000_000))
    assert w.check().config.sl == 2.5
    with pytest.raises(PermissionError):
        os.chmod(p, 0o666)
        ConfigWatcher(p, loader)


def test_with_the_real_strategy_config_loader(tmp_path):
    import strategy.config as config
    if not hasattr(config, "load_config"):
        pytest.skip("strategy.config.load_config not written yet")
    p = tmp_path / "strategy_overrides.yaml"
    write(p, "global:\n  trade:\n    sl_atr_mult: 2.0\n", 0)
    w = ConfigWatcher(p, lambda path: config.load_config(path))
    first_id = w.config.config_id
    write(p, "global:\n  trade:\n    sl_atr_mult: 1.5\n", 1_000_000)
    r = w.check()
    assert r.changed and r.config.config_id != first_id
    write(p, "global:\n  trade:\n    sl_atr_mult: [not, a, number]\n", 2_000_000)
    r = w.check()
    assert r.error is not None and "\n" not in r.error and r.config.config_id == w.config.config_id
