"""A real kill -9: `python -m live --mode live` runs as a child process against the sandbox exchange
(in this process, on 127.0.0.1). The exchange holds one request of the first order's path — the
submit itself (the intent is committed, the order in flight) or the fill fetch right after the
exchange filled it (the intent is SENT) — and the child is SIGKILLed while it waits. After a restart every intent is resolved
exactly once: no cloid has two exchange orders, no intent is left NEW/UNKNOWN, and the exchange,
the engine checkpoint and the trading DB hold the same positions."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_live_e2e import HOUR, WARM, LiveWorld, append_bars

from live import checkpoint
from live.trading_db import open_positions
from strategy.layout import POS_SIDE, POS_SIZE

REPO = Path(__file__).resolve().parents[1]
QUIET_BARS = 11        # bars after the warm-up in which this config does not trade (found by the e2e run)
HOLD_S = 1.5           # how long the exchange holds the request; the orders expire after 1 s (live_env)


def db_rows(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=5) as conn:
        try:
            return [tuple(r) for r in conn.execute(sql)]
        except sqlite3.OperationalError:   # tables not created yet
            return []


def last_bar(db: Path) -> int | None:
    rows = db_rows(db, "SELECT value_json FROM engine_state WHERE key = 'engine'")
    return json.loads(rows[0][0])["last_bar_t"] if rows else None


class Child:
    def __init__(self, env: dict, log: Path):
        self.log = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "live", "--mode", "live"], env=env, cwd=REPO,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(20)
        self.log.close()
        return code


def hold_next(ex, action: str, seconds: float) -> list[float]:
    """Hold the next `action` request in the exchange; the returned list gets the monotonic time at
    which that request arrived (the real sandbox, observed through its fault queue)."""
    arrived: list[float] = []
    take = ex.faults.take

    def take_and_note(kind: str):
        fault = take(kind)
        if kind == action and fault is not None and not arrived:
            arrived.append(time.monotonic())
        return fault

    ex.faults.take = take_and_note
    ex.faults.delay_next(action, seconds=seconds)
    return arrived


def settled(world: LiveWorld, db: Path) -> bool:
    n_fills = len(world.ex.fills(world.wallet.address))
    return (not db_rows(db, "SELECT 1 FROM oms_intents WHERE action != 'PROTECT' AND status IN ('NEW', 'UNKNOWN', 'SENT')")
            and db_rows(db, "SELECT COUNT(*) FROM oms_fills") == [(n_fills,)]
            and db_rows(db, "SELECT COUNT(*) FROM trades") == [(n_fills,)])


def drive(world: LiveWorld, child: Child, db: Path, log: Path) -> None:
    """Reveal one bar on the exchange and in the candle DB; wait until the child processed it."""
    row = world.rows[world.next_bar]
    world.ex.advance(1)
    append_bars(world.candles, [row])
    world.next_bar += 1
    deadline = time.monotonic() + 20
    while last_bar(db) != row[2]:
        assert child.alive(), log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"bar {row[2]} not processed\n{log.read_text()[-3000:]}"
        time.sleep(0.02)


@pytest.mark.parametrize(("held", "status_at_kill", "resolution"), [
    ("order", "NEW", "RESOLVE_NEW"), ("userFills", "SENT", "RESOLVE_SENT")])
def test_sigkill_after_a_committed_intent_then_restart_resolves_every_intent_once(tmp_path, held, status_at_kill,
                                                                                  resolution):
    world = LiveWorld(tmp_path)
    db, log = tmp_path / "live.db", tmp_path / "daemon.log"
    # the quiet bars are history when the daemon starts: warm-up only, like the bars before them
    world.ex.advance(QUIET_BARS)
    append_bars(world.candles, world.rows[WARM:WARM + QUIET_BARS])
    world.next_bar = WARM + QUIET_BARS
    last_warm_close_ms = world.rows[world.next_bar - 1][2] + HOUR
    max_age_s = (time.time() * 1000 - last_warm_close_ms) / 1000 - 1800   # newer bars trade, older ones warm
    world.env.update({"AI_QUANT_LIVE_MAX_BAR_AGE_S": f"{max_age_s:.0f}", "AI_QUANT_LOOP_TARGET_SECS": "0.5",
                      "AI_QUANT_HEARTBEAT_SECS": "1", "AI_QUANT_LIVE_BACKFILL_MS": str(20 * 365 * 24 * HOUR),
                      "AI_QUANT_LIVE_REST_FILLS_SYNC_SECS": "1", "PYTHONUNBUFFERED": "1"})
    child = Child(world.env, log)
    try:
        deadline = time.monotonic() + 30
        while last_bar(db) != world.rows[world.next_bar - 1][2]:
            assert child.alive() and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        held_at = hold_next(world.ex, held, HOLD_S)           # the first order's path hangs in the exchange
        wanted = f"SELECT intent_id FROM oms_intents WHERE action != 'PROTECT' AND status = '{status_at_kill}'"
        for _ in range(10):
            row = world.rows[world.next_bar]
            world.ex.advance(1)
            append_bars(world.candles, [row])
            world.next_bar += 1
            end = time.monotonic() + 20
            while not db_rows(db, wanted) and last_bar(db) != row[2]:
                assert child.alive() and time.monotonic() < end, log.read_text()[-3000:]
                time.sleep(0.005)
            if db_rows(db, wanted):
                break
        # kill only once the request is in flight, held by the exchange: under CPU load the child can
        # be slow to send it, and a hold still queued would catch the restarted daemon's request instead
        end = time.monotonic() + 20
        while not held_at:
            assert child.alive() and time.monotonic() < end, f"no {held} request reached the exchange\n" \
                                                              f"{log.read_text()[-3000:]}"
            time.sleep(0.005)
        child.kill9()
        assert time.monotonic() < held_at[0] + HOLD_S, "killed after the hold ended: the test machine is too slow"
        (killed_cloid, killed_status), = db_rows(db, "SELECT client_order_id, status FROM oms_intents WHERE action != 'PROTECT'")
        assert killed_status == status_at_kill
        time.sleep(max(0.0, held_at[0] + HOLD_S + 0.2 - time.monotonic()))  # the held request ends, nobody waits

        child = Child(world.env, log)
        deadline = time.monotonic() + 30
        while last_bar(db) != world.rows[world.next_bar - 1][2]:
            assert child.alive() and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        for _ in range(12):
            drive(world, child, db, log)
            pos = checkpoint.decode(json.loads(db_rows(db, "SELECT value_json FROM engine_state "
                                                           "WHERE key = 'engine'")[0][0])).pos
            if pos[0, POS_SIDE] != 0:
                break
        # fill intake and the reconciler catch up: every exchange fill stored, every intent resolved
        deadline = time.monotonic() + 20                      # (not settled by then: the asserts below say why)
        while not settled(world, db) and time.monotonic() < deadline:
            assert child.alive(), log.read_text()[-3000:]
            time.sleep(0.05)
        assert child.stop() == 0, log.read_text()[-3000:]
    finally:
        if child.alive():
            child.kill9()
        world.ex.stop()

    fills = world.ex.fills(world.wallet.address)
    by_cloid: dict[str, set] = {}
    for f in fills:
        by_cloid.setdefault(f["cloid"], set()).add(f["oid"])
    assert all(len(oids) == 1 for oids in by_cloid.values()), by_cloid   # never two orders for one cloid
    assert killed_cloid in by_cloid
    statuses = db_rows(db, "SELECT status, client_order_id FROM oms_intents WHERE action != 'PROTECT'")
    assert not [s for s, _ in statuses if s in ("NEW", "UNKNOWN", "SENT")], statuses
    assert [c for _, c in statuses].count(killed_cloid) == 1
    resolved = db_rows(db, "SELECT kind, result, client_order_id FROM oms_reconcile_events WHERE kind LIKE 'RESOLVE%'")
    assert [(k, c) for k, _, c in resolved] == [(resolution, killed_cloid)]
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        saved = checkpoint.load(conn)
        engine_pos = checkpoint.decode(saved).pos
        db_pos = {p["symbol"]: p["size"] * (1 if p["side"] == "LONG" else -1) for p in open_positions(conn)}
        n_trades = conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0]
        n_oms = conn.execute("SELECT COUNT(*) FROM oms_fills").fetchone()[0]
    engine = {s: float(engine_pos[i, POS_SIDE] * engine_pos[i, POS_SIZE])
              for i, s in enumerate(saved["symbols"]) if engine_pos[i, POS_SIDE] != 0}
    exchange = {c: p["szi"] for c, p in world.ex.positions(world.wallet.address).items()}
    assert exchange, "the run must end holding a position"
    assert engine.keys() == exchange.keys() == db_pos.keys()
    for coin, szi in exchange.items():
        assert engine[coin] == pytest.approx(szi, abs=5e-6) and db_pos[coin] == pytest.approx(szi, abs=5e-6)
    assert n_trades == n_oms == len(fills)
    print(f"kill -9 while {held} was held: the {status_at_kill} intent resolved as {resolved[0][1]}, {len(statuses)} intents, {len(fills)} fills, "
          f"positions {exchange}")


def test_restart_waits_out_the_dead_process_late_signed_submit_never_two_orders_per_cloid(tmp_path):
    """A process slow to sign (CPU load) commits an intent, signs its order seconds later and dies while
    the exchange holds it: the intent is NEW and older than its created time + expiresAfter, yet the
    order may still land. The restarted executor must wait it out (the dead process signed before
    this one started), find it by cloid and not send a second order for that cloid."""
    import threading

    import eth_account
    from test_oms import T0, req, write_secrets

    from live.hl_broker import HyperliquidBroker
    from live.live_gates import SendGate
    from live.oms import Oms, OrderExecutor
    from live.sandbox import AssetSpec, SandboxExchange
    from live.trading_db import open_trading_db

    class Past:  # the dead process committed the intent 3 s ago
        def now_ms(self) -> int:
            return int(time.time() * 1000) - 3_000

    wallet = eth_account.Account.create()
    bars = [(T0 + i * HOUR, 30_000.0, 30_050.0, 29_950.0, 30_000.0, 10.0) for i in range(20)]
    ex = SandboxExchange([AssetSpec("BTC", 5, 50)], {"BTC": bars}, {wallet.address: 10_000.0}, start_bar=5).start()
    secrets = write_secrets(tmp_path / "s.json", wallet)
    env = {"AI_QUANT_MODE": "live", "AI_QUANT_LIVE_ENABLE": "1",
           "AI_QUANT_LIVE_CONFIRM": "I_UNDERSTAND_THIS_CAN_LOSE_MONEY"}
    conn = open_trading_db(tmp_path / "live.db")
    try:
        dead, _ = Oms(conn, clock=Past()).create_intent(symbol="BTC", action="OPEN", side="BUY", size=0.01,
                                                         notional=300.0, decision_ts_ms=T0 + 5 * HOUR, seq=0,
                                                         leverage=5, meta={"tif": "Ioc"})
        # its last act: the order, signed now (expires in 1 s), held 0.6 s by the exchange
        arrived = hold_next(ex, "order", 0.6)
        slow = HyperliquidBroker(ex.base_url, secrets, timeout_s=5.0, expires_s=1.0)
        in_flight = threading.Thread(target=slow.submit, args=("BTC", True, 0.01, 31_000.0),
                                     kwargs={"reduce_only": False, "cloid": dead.client_order_id}, daemon=True)
        in_flight.start()
        end = time.monotonic() + 10
        while not arrived:
            assert time.monotonic() < end, "the dead process's order never reached the exchange"
            time.sleep(0.005)

        broker = HyperliquidBroker(ex.base_url, secrets, timeout_s=5.0, expires_s=1.0)
        restarted = OrderExecutor(Oms(conn), broker, SendGate("live", env), audit=lambda *a: None,
                                  still_valid=lambda intent: True, poll_s=0.05)
        got = restarted.execute(req())
        in_flight.join(10)
        fills = ex.fills(wallet.address)
    finally:
        conn.close()
        ex.stop()
    assert {f["oid"] for f in fills if f["cloid"] == dead.client_order_id} == {got.intent.exchange_order_id and
                                                                               int(got.intent.exchange_order_id)}
    assert got.intent.intent_id == dead.intent_id and got.status == "FILLED"
