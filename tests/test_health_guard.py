"""Health guard: a trader that cannot read its own fills must stop opening positions."""

from __future__ import annotations

import sqlite3

from live.daemon import TraderDaemon
from live.env import load_settings
from live.fill_intake import FillIntake
from live.oms import Oms
from tests.test_daemon_paper import setup  # noqa: F401  (fixture)


def test_five_failed_fill_intakes_trip_a_close_only_kill(setup):  # noqa: F811
    tmp_path, env = setup
    daemon = TraderDaemon(load_settings(env), until_caught_up=True)
    daemon._start()
    try:
        daemon.process_pending()

        def exchange_down(start_ms, end_ms):
            raise ConnectionError("exchange unreachable")

        daemon.intake = FillIntake(Oms(daemon.conn), exchange_down, now_ms=daemon.wall.now_ms, rest_every_s=0)
        for _ in range(4):
            daemon.sync_exchange()
        assert daemon.risk.kill_mode == "off"
        daemon.sync_exchange()
        assert daemon.risk.kill_mode == "close_only"
        assert daemon.risk.state()["kill_reason"] == "health:fill_ingest"
    finally:
        daemon.close()
    with sqlite3.connect(tmp_path / "paper.db") as conn:
        events = [r[0] for r in conn.execute("SELECT event FROM audit_events")]
    assert "RISK_KILL" in events
