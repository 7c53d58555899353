"""The paper trader's alerts reach a webhook receiver on 127.0.0.1: a start, a kill from the kill
file, each once; a poisoned candle as data trouble; the webhook's secret never in a log line."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time

import pytest
import test_daemon_paper
from test_alerts import Receiver

SECRET = "s3cr3t-hook-token"


@pytest.fixture()
def world(tmp_path, shared_data):
    rx = Receiver()
    tmp, env = test_daemon_paper.paper_world(tmp_path, shared_data)
    env = {k: v for k, v in env.items() if not k.lower().endswith("_proxy")}
    env.update({"AI_QUANT_ALERT_TARGETS": "webhook", "AI_QUANT_ALERT_WEBHOOK_URL": f"{rx.base}/hook/{SECRET}",
                "AI_QUANT_ALERT_LABEL": "paper-test", "AI_QUANT_KILL_SWITCH_FILE": str(tmp / "kill")})
    yield tmp, env, rx
    rx.close()


def run(env) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "live", "--mode", "paper", "--until-caught-up"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_start_and_kill_alerts_arrive_once_without_the_secret_in_any_log(world):
    tmp, env, rx = world
    (tmp / "kill").write_text("halt_all\n")
    proc = run(env)
    kinds = [body["kind"] for _, body in rx.requests]
    assert sorted(kinds) == ["kill", "start"], kinds
    kill = next(body for _, body in rx.requests if body["kind"] == "kill")
    assert kill["severity"] == "critical" and kill["label"] == "paper-test"
    assert "halt_all" in kill["text"] and kill["ts_iso"].startswith("20")
    assert all(path == f"/hook/{SECRET}" for path, _ in rx.requests)
    assert SECRET not in proc.stderr + proc.stdout
    with sqlite3.connect(tmp / "paper.db") as conn:
        logs = "\n".join(r[0] for r in conn.execute("SELECT message FROM runtime_logs"))
    assert "alerts on: webhook:" in logs and SECRET not in logs


def test_a_hanging_receiver_does_not_slow_the_catch_up(world, tmp_path_factory):
    """Alerts to a receiver that accepts and never answers cost the catch-up at most the bounded
    drain at exit (2 s), measured against the same catch-up with alerts off."""
    tmp, env, _rx = world
    (tmp / "kill").write_text("close_only\n")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        off = {k: v for k, v in env.items() if not k.startswith("AI_QUANT_ALERT")}
        other = tmp_path_factory.mktemp("off")
        started = time.monotonic()
        run({**off, "AI_QUANT_DB_PATH": str(other / "p.db"), "AI_QUANT_LOCK_PATH": str(other / "l")})
        baseline = time.monotonic() - started
        started = time.monotonic()
        proc = run({**env, "AI_QUANT_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{sock.getsockname()[1]}/hook/{SECRET}",
                    "AI_QUANT_ALERT_SEND_TIMEOUT_S": "30"})
        hanging = time.monotonic() - started
    finally:
        sock.close()
    assert "caught up:" in proc.stderr and SECRET not in proc.stderr
    assert hanging - baseline < 3.5, (baseline, hanging)


def test_events_map_to_alert_kinds():
    from live.alert_rules import alert_for

    assert alert_for("RISK_KILL", None, {"mode": "close_only", "reason": "safe_mode", "effective": "close_only"})[0] \
        == "safe_mode"
    assert alert_for("RISK_KILL", None, {"mode": "close_only", "reason": "daily_loss:2024-01-02"})[0] == "daily_loss"
    assert alert_for("ORDER_REJECTED", "BTC", {"action": "OPEN", "error": "margin"})[:2] == \
        ("order_rejected", "BTC: action=OPEN, error=margin")
    assert alert_for("EXIT_INCOMPLETE", "ETH", {"remaining_szi": 0.5})[0] == "unprotected_position"
    assert alert_for("PROTECTION_REFUSED", "BTC", {"role": "stop", "trigger_px": 9.5, "error": "Invalid TP/SL price."}) \
        == ("unprotected_position", "BTC: the exchange refused its protective order: role=stop, trigger_px=9.5, "
            "error=Invalid TP/SL price.", "unprotected:BTC:PROTECTION_REFUSED")
    assert alert_for("PROTECTIVE_STOP_FILLED", "BTC", {"intent_id": "i7", "role": "protective", "size": 0.5,
                                                      "px": 29197.0, "engine": "closed"}) == \
        ("protective_stop", "BTC: its resting protective order filled: role=protective, size=0.5, px=29197.0, "
         "engine=closed", "protective:BTC:i7")
    assert alert_for("CANDLE_SKIPPED", "ETH", {"t": 1, "problem": "h=inf"})[0] == "data_lag"
    assert alert_for("CONFIG_RELOAD", None, {}) is None
    assert json.dumps(alert_for("RISK_CLEAR", None, {"cleared": ["env"], "by": "file"}))
