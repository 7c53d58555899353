"""The kill file's grammar and its safe reader: a human note never clears, unsafe files fail closed.

Rows are written from the rule (docs/RISK.md): only the whole content `clear` clears; a word naming
a halt wins over one naming close-only; an empty file is close_only; anything else, or anything that
cannot be read safely, is halt_all.
"""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from live.clock import ManualClock
from live.env import EnvError, RiskLimits, load_settings
from live.kill_switch import (
    CLEAR,
    CLOSE_ONLY,
    HALT_ALL,
    MAX_KILL_FILE_BYTES,
    default_kill_file,
    parse_env_kill,
    parse_file_kill,
    read_kill_file,
)
from live.risk import RiskManager

GRAMMAR = [
    ("clear", CLEAR),
    ("  Clear \n", CLEAR),
    ("CLEAR", CLEAR),
    ("HALT. Do NOT resume until reviewed", HALT_ALL),
    ("halt_all - trading off", HALT_ALL),
    ("close_only (drawdown review, do not clear)", CLOSE_ONLY),
    ("clear? no: close_only until bob says so", CLOSE_ONLY),
    ("please clear", HALT_ALL),  # not the whole content: a note, and it names nothing -> halt_all
    ("resume", HALT_ALL),
    ("off", HALT_ALL),
    ("close_only", CLOSE_ONLY),
    ("close only, then halt if it gets worse", HALT_ALL),
    ("stop everything", HALT_ALL),
    ("", CLOSE_ONLY),
    ("\n\n", CLOSE_ONLY),
    ("paused by ops", HALT_ALL),
]


@pytest.mark.parametrize(("text", "verdict"), GRAMMAR)
def test_file_grammar(text, verdict):
    assert parse_file_kill(text) == verdict


@given(st.text(max_size=200))
def test_only_the_exact_word_clear_ever_clears(text):
    if parse_file_kill(text) == CLEAR:
        assert text.strip().lower() == "clear"


@given(st.text(max_size=80), st.text(max_size=80))
def test_a_note_naming_halt_is_always_halt(before, after):
    assert parse_file_kill(f"{before} halt {after}") == HALT_ALL


@pytest.mark.parametrize(("value", "verdict"), [
    ("clear", CLEAR), ("halt_all - trading off", HALT_ALL), ("HALT. do not resume", HALT_ALL),
    ("close_only (review)", CLOSE_ONLY), ("1", CLOSE_ONLY), ("2", HALT_ALL), ("off", None), ("", None),
])
def test_env_grammar(value, verdict):
    assert parse_env_kill(value) == verdict


@pytest.mark.parametrize("value", ["resume", "unpause", "paused by ops"])
def test_env_value_naming_nothing_refuses_to_start(value):
    with pytest.raises(EnvError, match="is not a kill-switch value"):
        RiskLimits.from_env({"AI_QUANT_KILL_SWITCH": value})


def latched_manager(tmp_path, kill_text: str):
    """A RiskManager with a latched drawdown stop, then the kill file written with kill_text."""
    clock = ManualClock()
    rm = RiskManager(RiskLimits(kill_switch_file=tmp_path / "kill", max_drawdown_pct=10), clock)
    rm.update_equity(10_000, clock.now_ms())
    rm.update_equity(8_500, clock.now_ms())
    assert rm.kill_mode == CLOSE_ONLY
    (tmp_path / "kill").write_text(kill_text)
    clock.advance(5)
    rm.poll()
    return rm


@pytest.mark.parametrize("note", ["HALT. Do NOT resume until reviewed", "halt_all - trading off"])
def test_a_halt_note_keeps_every_kill_and_halts(tmp_path, note):
    rm = latched_manager(tmp_path, note)
    reasons = {k["reason"] for k in rm.state()["kills"]}
    assert rm.kill_mode == HALT_ALL and "drawdown" in reasons


def test_a_close_only_note_saying_do_not_clear_keeps_the_drawdown_stop(tmp_path):
    rm = latched_manager(tmp_path, "close_only (drawdown review, do not clear)")
    assert {k["reason"] for k in rm.state()["kills"]} >= {"drawdown"}
    assert rm.kill_mode == CLOSE_ONLY


def test_fifo_at_the_kill_path_does_not_hang_and_halts(tmp_path):
    fifo = tmp_path / "kill"
    os.mkfifo(fifo)
    started = time.monotonic()
    reading = read_kill_file(fifo)
    assert time.monotonic() - started < 1.0
    assert (reading.verdict, reading.problem) == (HALT_ALL, "not a regular file")


def test_symlink_to_dev_zero_halts_without_reading_it(tmp_path):
    (tmp_path / "kill").symlink_to("/dev/zero")
    reading = read_kill_file(tmp_path / "kill")
    assert (reading.verdict, reading.problem) == (HALT_ALL, "not a regular file")


def test_oversized_file_halts_and_is_not_reread_while_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "kill"
    path.write_text("close_only " * 500_000)  # ~5 MB
    first = read_kill_file(path)
    assert (first.verdict, first.problem) == (HALT_ALL, f"larger than {MAX_KILL_FILE_BYTES} bytes")
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    assert read_kill_file(path, first) is first and opened == []


def test_binary_file_halts(tmp_path):
    (tmp_path / "kill").write_bytes(b"\xff\xfe\x00halt?")
    reading = read_kill_file(tmp_path / "kill")
    assert (reading.verdict, reading.problem) == (HALT_ALL, "not UTF-8 text")


def test_small_file_is_reread_when_it_changes(tmp_path):
    path = tmp_path / "kill"
    path.write_text("close_only")
    first = read_kill_file(path)
    path.write_text("halt_all")
    os.utime(path, ns=(first.signature[1] + 10**9, first.signature[1] + 10**9))
    assert read_kill_file(path, first).verdict == HALT_ALL


def test_default_kill_file_is_in_a_private_state_dir_not_tmp(tmp_path):
    path = default_kill_file({"HOME": str(tmp_path)})
    assert path == tmp_path / ".local" / "state" / "openclaw-ai-quant" / "kill"
    assert default_kill_file({"XDG_STATE_HOME": str(tmp_path / "st")}) == tmp_path / "st" / "openclaw-ai-quant" / "kill"
    settings = load_settings({"HOME": str(tmp_path)})
    assert settings.risk.kill_switch_file == path
    explicit = load_settings({"HOME": str(tmp_path), "AI_QUANT_KILL_SWITCH_FILE": "/tmp/ai-quant-kill"})
    assert str(explicit.risk.kill_switch_file) == "/tmp/ai-quant-kill"  # the runbook's path, when set
