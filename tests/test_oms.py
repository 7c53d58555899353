"""OMS against the sandbox exchange through the real SDK: write-ahead intents, send-once, resolution."""

from __future__ import annotations

import json
import os
import sqlite3

import eth_account
import pytest

from live.hl_broker import HyperliquidBroker
from live.live_gates import SendGate
from live.oms import (
    Oms,
    OmsError,
    OrderExecutor,
    OrderRequest,
    cloid_for,
    dedupe_key,
    fill_action,
    is_our_cloid,
)
from live.sandbox import AssetSpec, SandboxExchange
from live.secrets import load_secrets
from live.trading_db import open_trading_db

HOUR = 3_600_000
T0 = 1_700_002_800_000 // HOUR * HOUR
LIVE_ENV = {"AI_QUANT_MODE": "live", "AI_QUANT_LIVE_ENABLE": "1",
            "AI_QUANT_LIVE_CONFIRM": "I_UNDERSTAND_THIS_CAN_LOSE_MONEY"}


def write_secrets(path, wallet, main=None):
    path.write_text(json.dumps({"secret_key": wallet.key.hex(), "main_address": main or wallet.address}))
    os.chmod(path, 0o600)
    return load_secrets(path)


@pytest.fixture
def world(tmp_path):
    wallet = eth_account.Account.create()
    bars = [(T0 + i * HOUR, 30_000.0, 30_050.0, 29_950.0, 30_000.0, 10.0) for i in range(20)]
    ex = SandboxExchange([AssetSpec("BTC", 5, 50)], {"BTC": bars}, {wallet.address: 10_000.0}, start_bar=5).start()
    secrets = write_secrets(tmp_path / "s.json", wallet)
    conn = open_trading_db(tmp_path / "live.db")
    audits = []
    yield ex, wallet, secrets, conn, audits
    conn.close()
    ex.stop()


def executor(world, *, timeout_s=5.0, expires_s=1.0, valid=True, before_send=None, env=LIVE_ENV):
    ex, wallet, secrets, conn, audits = world
    broker = HyperliquidBroker(ex.base_url, secrets, timeout_s=timeout_s, expires_s=expires_s)
    return OrderExecutor(Oms(conn), broker, SendGate("live", env), audit=lambda e, s, d: audits.append((e, s, d)),
                         still_valid=lambda intent: valid, poll_s=0.05, before_send=before_send)


def req(action="OPEN", side="BUY", size=0.01, seq=0, t=T0 + 5 * HOUR):
    return OrderRequest(symbol="BTC", action=action, side=side, size=size, notional=size * 30_000.0,
                        decision_ts_ms=t, seq=seq, leverage=5)


def test_cloid_is_deterministic_and_prefixed():
    key = dedupe_key("OPEN", "btc", "buy", 1_700_000_000_000, 0)
    assert key == "OPEN:BTC:BUY:1700000000000:0"
    cloid = cloid_for(key)
    assert cloid == cloid_for(key) and len(cloid) == 34 and cloid.startswith("0x" + b"aiq_".hex())
    assert cloid != cloid_for(dedupe_key("OPEN", "BTC", "BUY", 1_700_000_000_000, 1))
    assert is_our_cloid(cloid) and not is_our_cloid("0x" + "00" * 16)
    assert cloid_for(key, "bot1").startswith("0x" + b"bot1".hex())
    with pytest.raises(OmsError, match="1 to 8 bytes"):
        cloid_for(key, "much_too_long")


def test_fill_direction_mapping():
    assert fill_action({"dir": "Open Long", "startPosition": "0.0", "sz": "1"}) == ("LONG", "OPEN")
    assert fill_action({"dir": "Open Short", "startPosition": "-1.0", "sz": "1"}) == ("SHORT", "ADD")
    assert fill_action({"dir": "Close Long", "startPosition": "2.0", "sz": "1"}) == ("LONG", "REDUCE")
    assert fill_action({"dir": "Close Short", "startPosition": "-1.0", "sz": "1"}) == ("SHORT", "CLOSE")


def test_intent_committed_before_send_and_never_sent_twice(world, tmp_path):
    ex, wallet, _, conn, _ = world
    seen = []

    def look(intent):  # another connection sees the committed NEW row before the order leaves
        other = sqlite3.connect(tmp_path / "live.db")
        seen.append(other.execute("SELECT status, client_order_id FROM oms_intents").fetchall())
        other.close()

    run = executor(world, before_send=look)
    first = run.execute(req())
    assert first.status == "FILLED" and first.filled_sz == pytest.approx(0.01)
    assert seen == [[("NEW", first.intent.client_order_id)]]
    assert first.fills[0]["cloid"] == first.intent.client_order_id
    again = run.execute(req())  # same bar, same seq: found by dedupe key, not sent
    assert again.intent.intent_id == first.intent.intent_id and len(ex.fills(wallet.address)) == 1
    assert conn.execute("SELECT COUNT(*) FROM oms_fills").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM oms_orders").fetchone()[0] == 1
    close = run.execute(req("CLOSE", "SELL", size=0.02))  # exits close what the exchange holds
    assert close.status == "FILLED" and close.filled_sz == pytest.approx(0.01)
    assert ex.positions(wallet.address) == {}


def test_submit_delayed_past_timeout_then_filled_gives_one_position(world):
    ex, wallet, _, conn, audits = world
    ex.faults.delay_next("order", seconds=1.0)
    run = executor(world, timeout_s=0.3, expires_s=3.0)
    got = run.execute(req())
    assert got.status == "FILLED" and got.filled_sz == pytest.approx(0.01)
    assert [a[0] for a in audits] == ["ORDER_UNKNOWN"]
    assert ex.positions(wallet.address)["BTC"]["szi"] == pytest.approx(0.01)
    assert len(ex.fills(wallet.address)) == 1
    kinds = [tuple(r) for r in conn.execute("SELECT kind, result FROM oms_reconcile_events")]
    assert kinds == [("RESOLVE_UNKNOWN", "FILLED")]


def test_dropped_request_that_never_executed_expires(world):
    ex, wallet, _, _, audits = world
    ex.faults.drop_next("order", execute=False)
    got = executor(world, expires_s=0.5).execute(req())
    assert got.status == "EXPIRED" and got.refused
    assert [a[0] for a in audits] == ["ORDER_UNKNOWN", "INTENT_EXPIRED"]
    assert ex.fills(wallet.address) == []


def test_crash_between_commit_and_send_is_resolved_once(world):
    ex, wallet, _, conn, _ = world

    def die(intent):
        raise SystemExit("killed after the intent was committed")

    with pytest.raises(SystemExit):
        executor(world, before_send=die).execute(req())
    assert conn.execute("SELECT status FROM oms_intents").fetchone()[0] == "NEW"
    assert ex.fills(wallet.address) == []
    restarted = executor(world, expires_s=0.2)
    got = restarted.execute(req())
    assert got.status == "FILLED" and len(ex.fills(wallet.address)) == 1
    assert restarted.execute(req()).status == "FILLED" and len(ex.fills(wallet.address)) == 1
    results = [tuple(r) for r in conn.execute("SELECT kind, result FROM oms_reconcile_events")]
    assert results == [("RESOLVE_NEW", "send_now")]


def test_crash_then_bar_no_longer_valid_expires_without_sending(world):
    ex, wallet, _, conn, audits = world

    def die(intent):
        raise SystemExit

    with pytest.raises(SystemExit):
        executor(world, before_send=die).execute(req())
    got = executor(world, expires_s=0.2, valid=False).execute(req())
    assert got.status == "EXPIRED" and got.refused and ex.fills(wallet.address) == []
    assert audits[-1][0] == "INTENT_EXPIRED"


def test_dry_live_marks_would_and_hard_kill_blocks(world):
    ex, wallet, _, conn, audits = world
    ex_, _, secrets, _, _ = world
    broker = HyperliquidBroker(ex.base_url, secrets, read_only=True)
    dry = OrderExecutor(Oms(conn), broker, SendGate("dry_live", LIVE_ENV), audit=lambda *a: audits.append(a),
                        still_valid=lambda i: True)
    assert dry.execute(req(seq=7)).status == "WOULD"
    killed = executor(world, env={**LIVE_ENV, "AI_QUANT_HARD_KILL_SWITCH": "1"}).execute(req(seq=8))
    assert killed.status == "REJECTED" and killed.intent.last_error == "blocked: AI_QUANT_HARD_KILL_SWITCH"
    assert audits[-1][0] == "ORDER_BLOCKED" and ex.fills(wallet.address) == []
