"""HyperliquidBroker rules, secrets, live gates and flat_now --live against the sandbox (real SDK)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import eth_account
import pytest

from live.hl_broker import HyperliquidBroker, OrderRefused, min_size_for_notional, round_price, round_size
from live.live_gates import SendGate, live_start_problem
from live.oms import Oms, OrderExecutor, OrderRequest
from live.sandbox import AssetSpec, SandboxExchange
from live.secrets import SecretsError, load_secrets
from live.trading_db import open_trading_db

REPO = Path(__file__).resolve().parents[1]
HOUR = 3_600_000
T0 = 1_700_002_800_000 // HOUR * HOUR
LIVE_ENV = {"AI_QUANT_MODE": "live", "AI_QUANT_LIVE_ENABLE": "1",
            "AI_QUANT_LIVE_CONFIRM": "I_UNDERSTAND_THIS_CAN_LOSE_MONEY"}


def hexkey(account) -> str:
    return account.key.hex().removeprefix("0x")


def secrets_file(path: Path, key_hex: str, main: str, mode: int = 0o600) -> Path:
    path.write_text(json.dumps({"secret_key": key_hex, "main_address": main}))
    os.chmod(path, mode)
    return path


@pytest.fixture
def sandbox():
    wallet = eth_account.Account.create()
    bars = {"BTC": [(T0 + i * HOUR, 30_000.0, 30_050.0, 29_950.0, 30_000.0, 10.0) for i in range(20)],
            "ETH": [(T0 + i * HOUR, 2_000.0, 2_010.0, 1_990.0, 2_000.0, 10.0) for i in range(20)]}
    ex = SandboxExchange([AssetSpec("BTC", 5, 50), AssetSpec("ETH", 4, 25)], bars, {wallet.address: 10_000.0},
                         start_bar=5).start()
    yield ex, wallet
    ex.stop()


def test_rounding_rules():
    assert round_size(0.0123456, 5) == 0.01234 and round_size(0.0123456, 5, up=True) == 0.01235
    assert round_price(30_003.7, 5) == 30_004.0 and round_price(30_003.2, 5, up=True) == 30_004.0
    assert round_price(2_000.123, 4) == 2_000.1 and round_price(123_456.7, 0) == 123_457.0
    assert round_price(0.000051234, 0) == 0.000051 and round_price(1.234567, 2) == 1.2346
    assert round_price(0.123456, 2, up=False) == 0.1234  # at most 6 - szDecimals decimals
    assert min_size_for_notional(30_000.0, 5) == 0.00034  # 0.00034 * 30000 = 10.2 >= $10


def test_five_dollar_order_refused_locally_with_the_rule(sandbox, tmp_path):
    ex, wallet = sandbox
    secrets = load_secrets(secrets_file(tmp_path / "s.json", hexkey(wallet), wallet.address))
    broker = HyperliquidBroker(ex.base_url, secrets)
    with pytest.raises(OrderRefused, match=r"^Order must have minimum value of \$10 \(refused locally"):
        broker.entry_size("BTC", 5.0 / 30_000.0, 30_000.0)
    bumped = HyperliquidBroker(ex.base_url, secrets, bump_to_min=True)
    assert bumped.entry_size("BTC", 10.001 / 30_000.0, 30_000.0) == 0.00034  # rounded down < $10, bumped up
    audits = []
    conn = open_trading_db(tmp_path / "live.db")
    run = OrderExecutor(Oms(conn), broker, SendGate("live", LIVE_ENV), audit=lambda *a: audits.append(a),
                        still_valid=lambda i: True)
    got = run.execute(OrderRequest("BTC", "OPEN", "BUY", 5.0 / 30_000.0, 5.0, T0, 0))
    assert got.status == "REJECTED" and got.error.startswith("Order must have minimum value of $10")
    assert audits[0][0] == "ORDER_REJECTED" and ex.fills(wallet.address) == []
    assert conn.execute("SELECT COUNT(*) FROM oms_orders").fetchone()[0] == 0  # never sent


def test_wrong_signer_rejected_by_exchange_and_audited_without_the_key(sandbox, tmp_path):
    ex, wallet = sandbox
    stranger = eth_account.Account.create()
    secrets = load_secrets(secrets_file(tmp_path / "s.json", "0x" + hexkey(stranger), wallet.address))
    assert secrets.is_agent and "redacted" in repr(secrets) and hexkey(stranger) not in repr(secrets)
    audits = []
    conn = open_trading_db(tmp_path / "live.db")
    run = OrderExecutor(Oms(conn), HyperliquidBroker(ex.base_url, secrets), SendGate("live", LIVE_ENV),
                        audit=lambda *a: audits.append(a), still_valid=lambda i: True)
    got = run.execute(OrderRequest("BTC", "OPEN", "BUY", 0.01, 300.0, T0, 0))
    assert got.status == "REJECTED"
    assert got.error == f"User or API Wallet {stranger.address.lower()} does not exist."
    assert audits == [("ORDER_REJECTED", "BTC", {**audits[0][2], "error": got.error})]
    dump = "\n".join(str(r) for t in ("oms_intents", "oms_orders") for r in conn.execute(f"SELECT * FROM {t}"))
    assert hexkey(stranger) not in dump + repr(audits)
    ex.approve_agent(wallet.address, stranger.address)  # once approved, the agent trades for main_address
    ok = run.execute(OrderRequest("BTC", "OPEN", "BUY", 0.01, 300.0, T0, 1))
    assert ok.status == "FILLED" and ex.positions(wallet.address)["BTC"]["szi"] == 0.01


def test_secrets_file_checks(tmp_path):
    wallet = eth_account.Account.create()
    key = "0x" + hexkey(wallet)
    loose = secrets_file(tmp_path / "loose.json", key, wallet.address, 0o644)
    with pytest.raises(SecretsError) as err:
        load_secrets(loose)
    assert str(err.value) == (f"{loose}: permissions 0o644 let group/others read the secrets; run chmod 600 {loose} "
                              "(AI_QUANT_SECRETS_PATH)")
    bad = secrets_file(tmp_path / "bad.json", key[:-2], wallet.address)
    with pytest.raises(SecretsError, match="secret_key must be 64 hex") as err:
        load_secrets(bad)
    assert key[2:-2] not in str(err.value)
    with pytest.raises(SecretsError, match="main_address must be 0x"):
        load_secrets(secrets_file(tmp_path / "addr.json", key, "0x123"))
    with pytest.raises(SecretsError, match="not found"):
        load_secrets(tmp_path / "missing.json")
    good = load_secrets(secrets_file(tmp_path / "good.json", key[2:], wallet.address))
    assert good.wallet().address == wallet.address and not good.is_agent


def trader_live(env_extra: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_QUANT_")}
    env.update({"AI_QUANT_DB_PATH": str(tmp_path / "x.db"), "AI_QUANT_LOCK_PATH": str(tmp_path / "x.lock"),
                **env_extra})
    return subprocess.run([sys.executable, "-m", "live", "--mode", "live", "--until-caught-up"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_live_gates_refuse_with_one_line_each(tmp_path):
    assert live_start_problem({"AI_QUANT_MODE": "paper"}) == "live trading needs AI_QUANT_MODE=live (it is 'paper')"
    cases = [
        ({}, "live trading needs AI_QUANT_LIVE_ENABLE=1 (it is unset or false)"),
        ({"AI_QUANT_LIVE_ENABLE": "1"}, "live trading needs AI_QUANT_LIVE_CONFIRM=I_UNDERSTAND_THIS_CAN_LOSE_MONEY "
                                        "(missing or different)"),
        ({"AI_QUANT_LIVE_ENABLE": "1", "AI_QUANT_LIVE_CONFIRM": "i_understand_this_can_lose_money"},
         "live trading needs AI_QUANT_LIVE_CONFIRM=I_UNDERSTAND_THIS_CAN_LOSE_MONEY (missing or different)"),
    ]
    for extra, line in cases:
        proc = trader_live(extra, tmp_path)
        assert proc.returncode == 1 and proc.stderr.strip() == f"error: {line}", proc.stderr
    key = eth_account.Account.create()
    loose = secrets_file(tmp_path / "loose.json", hexkey(key), key.address, 0o644)
    (tmp_path / "cfg.yaml").write_text("global: {}\n")
    proc = trader_live({**LIVE_ENV, "AI_QUANT_LIVE_CONFIRM": "  I_UNDERSTAND_THIS_CAN_LOSE_MONEY  ",
                        "AI_QUANT_SECRETS_PATH": str(loose), "AI_QUANT_STRATEGY_YAML": str(tmp_path / "cfg.yaml")},
                       tmp_path)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "permissions 0o644" in proc.stderr and hexkey(key) not in proc.stderr + proc.stdout
    gate = SendGate("live", {**LIVE_ENV, "AI_QUANT_HARD_KILL_SWITCH": "1"})
    assert gate.may_send() == (False, "AI_QUANT_HARD_KILL_SWITCH")
    assert SendGate("live", LIVE_ENV).may_send() == (True, "ok")


def flat_now(args: list[str], env_extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_QUANT_")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "tools/flat_now.py", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def test_flat_now_live_closes_every_position_and_keeps_the_kill_file(sandbox, tmp_path):
    from hyperliquid.exchange import Exchange

    ex, wallet = sandbox
    x = Exchange(wallet, ex.base_url)
    x.market_open("BTC", True, 0.05)
    x.market_open("ETH", False, 0.5)
    assert set(ex.positions(wallet.address)) == {"BTC", "ETH"}
    sl = {"trigger": {"isMarket": True, "triggerPx": 28_000.0, "tpsl": "sl"}}
    x.order("BTC", False, 0.05, 25_200.0, sl, reduce_only=True)         # the protective stops rest
    x.order("ETH", True, 0.5, 2_420.0, {"trigger": {"isMarket": True, "triggerPx": 2_200.0, "tpsl": "sl"}},
            reduce_only=True)
    assert len(ex.open_orders(wallet.address)) == 2
    secrets = secrets_file(tmp_path / "s.json", hexkey(wallet), wallet.address)
    kill = tmp_path / "kill"
    env = {"AI_QUANT_SECRETS_PATH": str(secrets), "AI_QUANT_HL_BASE_URL": ex.base_url}
    refused = flat_now(["--kill-file", str(kill), "--live"], env)
    assert refused.returncode == 2 and set(ex.positions(wallet.address)) == {"BTC", "ETH"}
    done = flat_now(["--kill-file", str(kill), "--live", "--yes", "--verify-sleep-s", "0.1",
                     "--paper-db", str(tmp_path / "none.db")], env)
    assert done.returncode == 0, done.stderr
    assert ex.positions(wallet.address) == {}
    assert kill.read_text() == "close_only\n"
    assert "live_closed=2" in done.stderr and hexkey(wallet) not in done.stderr + done.stdout
    assert ex.open_orders(wallet.address) == [] and done.stderr.count("Stop Market") == 2   # cancelled, said
    closes = [f for f in ex.fills(wallet.address) if f["dir"].startswith("Close")]
    assert {f["coin"] for f in closes} == {"BTC", "ETH"}


def test_trigger_orders_placed_modified_listed_and_cancelled_through_the_sdk(sandbox, tmp_path):
    """The broker's resting reduce-only trigger orders: place (market on trigger, worst price 10 %
    beyond), list (frontendOpenOrders), modify by cloid (new oid, same cloid), cancel by cloid / oid."""
    from hyperliquid.exchange import Exchange

    ex, wallet = sandbox
    Exchange(wallet, ex.base_url).market_open("BTC", True, 0.02)
    broker = HyperliquidBroker(ex.base_url, load_secrets(secrets_file(tmp_path / "s.json", hexkey(wallet),
                                                                       wallet.address)))
    cloid = "0x" + "12" * 16
    res = broker.place_trigger("BTC", False, 0.02, 29_000.0, tpsl="sl", cloid=cloid)
    assert res.status == "RESTING" and res.limit_px == 26_100.0
    listed, = broker.trigger_orders()
    assert (listed["oid"], listed["triggerPx"], listed["orderType"], listed["reduceOnly"], listed["cloid"]) == \
        (res.oid, "29000.0", "Stop Market", True, cloid)
    moved = broker.modify_trigger("BTC", False, 0.01, 29_300.0, tpsl="sl", cloid=cloid)
    assert moved.status == "RESTING" and moved.oid != res.oid
    listed, = broker.trigger_orders()
    assert (listed["oid"], listed["triggerPx"], listed["sz"]) == (moved.oid, "29300.0", "0.01")
    assert broker.order_status(cloid)["order"]["status"] == "open"
    refused = broker.place_trigger("BTC", False, 0.02, 31_000.0, tpsl="sl", cloid="0x" + "34" * 16)
    assert refused.status == "REJECTED" and refused.error == "Invalid TP/SL price."
    assert broker.cancel_by_cloid("BTC", cloid) == (True, "success")
    assert broker.trigger_orders() == []
    again = broker.place_trigger("BTC", False, 0.02, 29_000.0, tpsl="sl", cloid="0x" + "56" * 16)
    assert broker.cancel_oid("BTC", again.oid) == (True, "success")
    assert broker.cancel_oid("BTC", again.oid)[0] is False
