"""The daemon in live mode against the sandbox exchange on 127.0.0.1, through the real SDK.

Real Hyperliquid BTC 1h candles drive both sides: each step reveals one bar on the exchange,
appends the same bar to the daemon's candle DB and lets the daemon process it. The book is thin
(3 levels of $400), so entries fill in part and closes need a retry; one entry is rejected by the
exchange (margin taken by a resting order), one resting order of ours is cancelled as stale. The
run stops while the engine holds a position, and the engine, the trading DB and the exchange must
hold the same positions symbol by symbol. A manual trade on the account (through the SDK, behind
the daemon's back) is ingested as an orphan fill and the engine follows it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import eth_account
import pytest
from hyperliquid.exchange import Exchange

from live.clock import ManualClock
from live.daemon import TraderDaemon
from live.env import load_settings
from live.oms import OrderRequest
from live.sandbox import AssetSpec, BookSpec, SandboxExchange
from live.trading_db import open_positions

HOUR = 3_600_000
WARM = 50          # bars in the daemon's DB before it starts (warm-up only: too old to trade)
LIVE_BARS = 110
MAX_EXTRA_BARS = 150  # after LIVE_BARS, run on until the engine holds a position
CONFIG = """
global:
  trade: {entry_min_confidence: low, reentry_cooldown_minutes: 30, add_cooldown_minutes: 30}
  thresholds: {entry: {min_adx: 18.0, macd_hist_entry_mode: sign}}
  filters: {enable_ranging_filter: false, require_adx_rising: false}
  engine: {interval: 1h}
"""
CANDLES_SCHEMA = ("CREATE TABLE IF NOT EXISTS candles (symbol TEXT, interval TEXT, t INTEGER, t_close INTEGER, "
                  "o REAL, h REAL, l REAL, c REAL, v REAL, n INTEGER, PRIMARY KEY(symbol, interval, t))")


def hl_candles() -> Path:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "hyperliquid" / "candles_1h.db"
    if not path.exists():
        pytest.skip(f"../shared/data absent: {path}")
    return path


def source_rows(src: Path) -> list[tuple]:
    with sqlite3.connect(src) as conn:
        return conn.execute("SELECT symbol, interval, t, t_close, o, h, l, c, v, n FROM candles "
                            "WHERE symbol = 'BTC' ORDER BY t").fetchall()


def append_bars(db: Path, rows: list[tuple]) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(CANDLES_SCHEMA)
        conn.executemany("INSERT OR IGNORE INTO candles VALUES (?,?,?,?,?,?,?,?,?,?)", rows)


def live_env(tmp_path: Path, base_url: str, secrets: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AI_QUANT_", "HL_"))}
    env.update({
        "AI_QUANT_MODE": "live", "AI_QUANT_LIVE_ENABLE": "1", "AI_QUANT_LIVE_CONFIRM": "I_UNDERSTAND_THIS_CAN_LOSE_MONEY",
        "AI_QUANT_STRATEGY_YAML": str(tmp_path / "cfg.yaml"), "AI_QUANT_CANDLES_DB_DIR": str(tmp_path / "candles_dbs"),
        "AI_QUANT_DB_PATH": str(tmp_path / "live.db"), "AI_QUANT_LOCK_PATH": str(tmp_path / "live.lock"),
        "AI_QUANT_SECRETS_PATH": str(secrets), "AI_QUANT_HL_BASE_URL": base_url, "AI_QUANT_SYMBOLS": "BTC",
        "AI_QUANT_RISK_MAX_DAILY_LOSS_PCT": "0", "AI_QUANT_RISK_SAFE_MODE_DRAWDOWN_PCT": "0",
        "AI_QUANT_HL_ORDER_EXPIRES_S": "1", "AI_QUANT_HL_TIMEOUT_S": "5", "AI_QUANT_OMS_STALE_ORDER_MS": "0",
        "AI_QUANT_LIVE_REST_FILLS_SYNC_SECS": "0.1",
    })
    return env


class LiveWorld:
    def __init__(self, tmp_path: Path, book: BookSpec = BookSpec()):
        self.src = hl_candles()
        self.rows = source_rows(self.src)
        self.wallet = eth_account.Account.create()
        (tmp_path / "cfg.yaml").write_text(CONFIG)
        self.candles = tmp_path / "candles_dbs" / "candles_1h.db"
        self.candles.parent.mkdir(parents=True)
        append_bars(self.candles, self.rows[:WARM])
        self.ex = SandboxExchange([AssetSpec("BTC", 5, 50)], str(self.src), {self.wallet.address: 10_000.0},
                                  interval="1h", start_bar=WARM - 1, book=book).start()
        secrets = tmp_path / "secrets.json"
        secrets.write_text(json.dumps({"secret_key": self.wallet.key.hex(), "main_address": self.wallet.address}))
        os.chmod(secrets, 0o600)
        self.env = live_env(tmp_path, self.ex.base_url, secrets)
        self.next_bar = WARM
        self.wall = ManualClock(now_ms=self.rows[WARM - 1][2] + 2 * HOUR + 2_500)  # bar WARM-1 is too old
        self.daemon = None

    def start(self) -> TraderDaemon:
        self.daemon = TraderDaemon(load_settings(self.env), wall=self.wall)
        self.daemon._start()
        ws = self.daemon.market_ws
        if ws is not None:
            assert ws.wait_mids(0, 5.0) > 0, "no WS mids from the sandbox"
            deadline = time.monotonic() + 5
            while self.ex.ws_subscription_count() < len(ws.config.subscriptions()):
                assert time.monotonic() < deadline, "the daemon's WS subscriptions never reached the sandbox"
                time.sleep(0.01)
        self.daemon.loop_once()
        return self.daemon

    def step(self) -> None:
        """One bar: the exchange reveals it (and pushes it on the WS), the candle DB gets it, the
        daemon runs one loop (bars, fill intake, reconciler)."""
        row = self.rows[self.next_bar]
        ws = self.daemon.market_ws
        seq = ws.seq if ws is not None else 0
        self.ex.advance(1)
        if ws is not None and ws.health()["connected"]:
            ws.wait_mids(seq, 2.0)
        append_bars(self.candles, [row])
        self.wall.set_wall_ms(row[2] + HOUR + 2_500)
        self.next_bar += 1
        self.daemon.loop_once()

    def crash(self) -> None:
        """The daemon's process is gone: its handles close, nothing else runs."""
        self.daemon.close()
        self.daemon = None

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.close()
        self.ex.stop()


def run_until_position(world: LiveWorld, limit: int = MAX_EXTRA_BARS) -> int:
    """Step until the engine holds a position; returns the number of bars that took."""
    for n in range(limit + 1):
        if world.daemon._engine_positions():
            return n
        world.step()
    raise AssertionError(f"no position within {limit} bars")


def three_way(world: LiveWorld) -> tuple[dict, dict, dict]:
    """Signed position size per symbol: exchange, engine, trading DB (trades + position_state)."""
    exchange = {c: p["szi"] for c, p in world.ex.positions(world.wallet.address).items()}
    engine = world.daemon._engine_positions()
    db = {p["symbol"]: p["size"] * (1 if p["side"] == "LONG" else -1) for p in open_positions(world.daemon.conn)}
    return exchange, engine, db


def assert_agree(world: LiveWorld, sz_decimals: int = 5) -> dict:
    exchange, engine, db = three_way(world)
    assert engine.keys() == exchange.keys() == db.keys(), (exchange, engine, db)
    for coin, szi in exchange.items():
        assert engine[coin] == pytest.approx(szi, abs=10 ** -sz_decimals / 2), coin
        assert db[coin] == pytest.approx(szi, abs=10 ** -sz_decimals / 2), coin
    return exchange


def fill_paths(conn) -> dict:
    return dict(conn.execute("SELECT matched_via, COUNT(*) FROM oms_fills GROUP BY matched_via").fetchall())


def audits(db: Path, event: str) -> list[dict]:
    with sqlite3.connect(db) as conn:
        return [json.loads(r[0]) for r in conn.execute("SELECT data_json FROM audit_events WHERE event = ?", (event,))]


def test_live_daemon_trades_real_bars_and_agrees_with_the_exchange(tmp_path):
    world = LiveWorld(tmp_path, book=BookSpec(depth_levels=3, level_notional=400.0))
    try:
        daemon = world.start()
        assert world.ex.fills(world.wallet.address) == [], "warm-up bars must not trade"
        blocker = None
        x = Exchange(world.wallet, world.ex.base_url)
        for _ in range(LIVE_BARS):
            flat = not daemon._engine_positions()
            if blocker is None and flat and daemon.hl._leverage and not audits(tmp_path / "live.db", "ORDER_REJECTED"):
                lev = daemon.hl._leverage["BTC"]
                free = float(daemon.hl.user_state()["withdrawable"])
                size = int(free * 0.995 * lev / 50_000.0 * 1e5) / 1e5
                blocker = x.order("BTC", True, size, 50_000.0, {"limit": {"tif": "Gtc"}})
                blocker = blocker["response"]["data"]["statuses"][0]["resting"]["oid"]
            world.step()
            if blocker not in (None, -1) and audits(tmp_path / "live.db", "ORDER_REJECTED"):
                assert x.cancel("BTC", blocker)["response"]["data"]["statuses"] == ["success"]
                blocker = -1
        assert blocker == -1, "no entry was attempted while the margin was taken"
        extra = run_until_position(world)
        rejected = audits(tmp_path / "live.db", "ORDER_REJECTED")
        assert rejected[0]["error"] == "Insufficient margin to place order." and rejected[0]["action"] in ("OPEN", "ADD")

        # a resting order of ours, left behind, is cancelled by cloid as stale by the reconciler
        bar_t = world.rows[world.next_bar - 1][2]
        rest = daemon.executor.execute(OrderRequest(symbol="BTC", action="OPEN", side="BUY", size=0.001,
                                                    notional=50.0, decision_ts_ms=bar_t, seq="gtc", tif="Gtc",
                                                    limit_px=50_000.0))
        def limits() -> list[dict]:
            return [o for o in world.ex.open_orders(world.wallet.address) if not o["isTrigger"]]

        protective = [o for o in world.ex.open_orders(world.wallet.address) if o["isTrigger"]]
        assert rest.status == "SENT" and len(limits()) == 1 and len(protective) == 1
        daemon.reconciler.run()
        assert limits() == []
        assert daemon.oms.get(rest.intent.intent_id).status == "CANCELLED"
        # the position's resting protective stop is ours on purpose: never cancelled as stale
        assert [o for o in world.ex.open_orders(world.wallet.address) if o["isTrigger"]] == protective

        conn = daemon.conn
        statuses = dict(conn.execute("SELECT status, COUNT(*) FROM oms_intents WHERE action != 'PROTECT' "
                                     "GROUP BY status").fetchall())
        assert statuses.get("PARTIAL", 0) >= 1 and statuses.get("FILLED", 0) >= 4
        assert statuses.get("REJECTED", 0) == 1 and statuses.get("CANCELLED", 0) == 1
        assert "NEW" not in statuses and "UNKNOWN" not in statuses
        fills = world.ex.fills(world.wallet.address)
        n_trades = conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0]
        assert n_trades == len(fills) == conn.execute("SELECT COUNT(*) FROM oms_fills").fetchone()[0]
        hashes = {(r[0], r[1]) for r in conn.execute("SELECT fill_hash, fill_tid FROM trades")}
        assert hashes == {(f["hash"], f["tid"]) for f in fills}
        assert any(r[0] == "REDUCE" for r in conn.execute("SELECT action FROM trades"))

        exchange = assert_agree(world)
        assert exchange, "the run must end with an open position"
        (side, size), = [(p["side"], p["size"]) for p in open_positions(conn)]
        assert (side == "LONG") == (exchange["BTC"] > 0) and size == pytest.approx(abs(exchange["BTC"]), abs=5e-6)
        daemon.reconciler.run()
        events = [r[0] for r in conn.execute("SELECT kind FROM oms_reconcile_events")]
        assert "POSITION_ALIGNED" not in events and "POSITION_UNMANAGED" not in events
        paths = fill_paths(conn)
        assert "orphan" not in paths and sum(paths.values()) == len(fills)
        assert daemon.intake.counts == {}, "every WS/REST fill was already stored by the order path"
        balance = world.ex.balance(world.wallet.address)
        print(f"live e2e: {LIVE_BARS}+{extra} bars, {len(fills)} exchange fills {paths}, intents {statuses}, "
              f"already stored when WS/REST brought them {dict(daemon.intake.duplicates)}, "
              f"exchange balance {balance:.2f}, positions {exchange}")
    finally:
        world.stop()


def test_manual_trade_on_the_account_is_ingested_and_the_engine_follows(tmp_path):
    world = LiveWorld(tmp_path)
    try:
        daemon = world.start()
        run_until_position(world, limit=120)
        held = world.ex.positions(world.wallet.address)["BTC"]["szi"]
        half = round(abs(held) / 2, 5)
        # an operator trims the position by hand, through the SDK, behind the daemon's back
        x = Exchange(world.wallet, world.ex.base_url)
        px = world.ex.mid("BTC") * (0.97 if held > 0 else 1.03)
        reply = x.order("BTC", held < 0, half, round(px), {"limit": {"tif": "Ioc"}}, reduce_only=True)
        assert "filled" in reply["response"]["data"]["statuses"][0]
        manual = [f for f in world.ex.fills(world.wallet.address) if "cloid" not in f]
        deadline = time.monotonic() + 5
        while daemon.intake.pending() < len(manual) and time.monotonic() < deadline:
            time.sleep(0.01)
        daemon.loop_once()  # no new bar: fill intake, then the reconciler at once
        exchange = assert_agree(world)
        assert exchange["BTC"] == pytest.approx(held - half * (1 if held > 0 else -1), abs=1e-9)
        conn = daemon.conn
        orphans = conn.execute("SELECT intent_id, status, action FROM oms_intents WHERE intent_id LIKE 'manual_%'")
        assert [(r[1], r[2]) for r in orphans] == [("FILLED", "REDUCE")] * len(manual)
        assert fill_paths(conn)["orphan"] == len(manual) and daemon.intake.counts == {"ws": len(manual)}
        assert len(audits(tmp_path / "live.db", "ORPHAN_FILL")) == len(manual)
        aligned = audits(tmp_path / "live.db", "POSITION_ALIGNED")
        assert len(aligned) == 1 and aligned[0]["exchange_szi"] == pytest.approx(exchange["BTC"])
        daemon.intake.backfill()  # the REST window sees the same fill: stored once
        assert conn.execute("SELECT COUNT(*) FROM trades WHERE reason = 'manual'").fetchone()[0] == len(manual)
        print(f"manual trade: {len(manual)} orphan fill(s) via WS, engine aligned to {exchange['BTC']}")
    finally:
        world.stop()
