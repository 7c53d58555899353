"""Shared test fixtures: where the real market data lives (../shared/data beside the repo)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real candles of ../shared/data, or a skip saying why (a user's clone has no ../shared)."""
    if not (SHARED_DATA / "candles_5m.db").exists():
        pytest.skip(f"../shared/data absent ({SHARED_DATA}): real-data test skipped")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def private_state_home(tmp_path_factory, monkeypatch):
    """Every test (and every trader it starts) gets its own XDG_STATE_HOME, so the default kill file
    (~/.local/state/openclaw-ai-quant/kill) of the machine running the tests is never read."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
