"""The market-data service against the sandbox exchange: real candle DBs, real HTTP and WebSocket."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hyperliquid.info import Info
from rich.console import Console
from typer.testing import CliRunner

from live.cli import app
from live.clock import ManualClock
from live.env import EnvError
from live.market_service import (
    BboSampler,
    CandleKeeper,
    MarketDataService,
    MarketDataSettings,
    last_closed_bar,
)
from live.sandbox import AssetSpec, SandboxExchange
from marketdata.candles import write_candles
from marketdata.hl_candles import InfoClient, candle_chunks, fetch_candles

HOUR = 3_600_000
T0 = 1_700_002_800_000 // HOUR * HOUR
REPO = Path(__file__).resolve().parents[1]


def path(px: float, n: int) -> list[tuple]:
    return [(T0 + i * HOUR, px + i % 7, px + i % 7 + 5, px - 5, px + i % 5, 3.0 + i % 3) for i in range(n)]


class SandboxClock:
    """The service's 'now' is the sandbox's (bars only close when the test advances it)."""

    def __init__(self, ex: SandboxExchange) -> None:
        self.ex = ex

    def now_ms(self) -> int:
        return self.ex.now_ms

    def monotonic(self) -> float:
        return time.monotonic()


def settings(ex: SandboxExchange, db_dir: Path, **kw) -> MarketDataSettings:
    base = dict(symbols=("BTC", "ETH"), intervals=("1h",), candles_db_dir=db_dir, base_url=ex.base_url,
                close_delay_ms=0, rest_min_gap_ms=0, verify_s=0.1, ws_enable=False, health_s=3600)
    base.update(kw)
    return MarketDataSettings(**base)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def rows(db: Path, symbol: str = "BTC") -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT t, t_close, o, h, l, c, v FROM candles WHERE symbol=? ORDER BY t", (symbol,)).fetchall()


def dupes(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM (SELECT symbol, interval, t, COUNT(*) AS cnt FROM candles "
                            "GROUP BY symbol, interval, t HAVING cnt > 1)").fetchone()[0]


def wait_until(pred, timeout=10.0, why=lambda: ""):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"timed out {why()}"
        time.sleep(0.02)


@pytest.fixture
def small():
    ex = SandboxExchange([AssetSpec("BTC", 5), AssetSpec("ETH", 4)],
                         {"BTC": path(30_000.0, 60), "ETH": path(2_000.0, 60)}, {}, start_bar=20).start()
    yield ex
    ex.stop()


# ---- settings ----------------------------------------------------------------------------

def test_settings_from_env_defaults_and_errors(tmp_path):
    s = MarketDataSettings.from_env({"AI_QUANT_SIDECAR_SYMBOLS": "BTC, ETH,BTC", "AI_QUANT_SIDECAR_INTERVALS": "5m,1H",
                                     "AI_QUANT_CANDLES_DB_DIR": str(tmp_path)})
    assert s.symbols == ("BTC", "ETH") and s.intervals == ("5m", "1h") and s.prune_disable == {"3m", "5m"}
    assert s.db_path("1h") == tmp_path / "candles_1h.db" and s.bbo_db_path == tmp_path / "bbo_snapshots.db"
    assert s.horizon_ms("1h") == 120 * 86_400_000 and s.horizon_ms("5m") == 7 * 86_400_000
    assert s.buffer_ms("5m") == 16.8 * HOUR and s.buffer_ms("1h") == 7 * 86_400_000
    assert (s.bbo_sample_ms, s.bbo_max_queue, s.bbo_retention_hours, s.bbo_sweep_s) == (1000, 20000, 24.0, 600.0)
    env = {"AI_QUANT_SYMBOLS": "SOL", "AI_QUANT_CANDLE_PRUNE_DISABLE_INTERVALS": "",
           "AI_QUANT_CANDLE_HORIZON_1H_D": "2", "AI_QUANT_SIDECAR_CANDLE_LIMIT": "10",
           "AI_QUANT_BBO_SNAPSHOTS_RETENTION_SWEEP_SECS": "5"}
    s = MarketDataSettings.from_env(env)
    assert s.symbols == ("SOL",) and s.prune_disable == frozenset() and s.horizon_ms("1h") == 2 * 86_400_000
    assert s.bbo_sweep_s == 30.0  # minimum 30
    bad = [({}, "AI_QUANT_SIDECAR_SYMBOLS is empty"),
           ({"AI_QUANT_SYMBOLS": "BTC", "AI_QUANT_SIDECAR_INTERVALS": "7x"}, "AI_QUANT_SIDECAR_INTERVALS: unknown interval"),
           ({"AI_QUANT_SYMBOLS": "BTC", "AI_QUANT_BBO_SNAPSHOTS_ENABLE": "1"}, "needs AI_QUANT_WS_ENABLE_BBO=1"),
           ({"AI_QUANT_SYMBOLS": "BTC", "AI_QUANT_CANDLE_VERIFY_SECS": "soon"}, "AI_QUANT_CANDLE_VERIFY_SECS='soon'"),
           ({"AI_QUANT_SYMBOLS": "BTC", "AI_QUANT_HL_BASE_URL": "ftp://x"}, "AI_QUANT_HL_BASE_URL")]
    for env, text in bad:
        with pytest.raises(EnvError, match=text.replace("(", r"\(")):
            MarketDataSettings.from_env(env)


def test_chunks_overlap_by_one_bar():
    assert candle_chunks(0, 10 * HOUR, HOUR, chunk_bars=4) == [(0, 3 * HOUR), (3 * HOUR, 6 * HOUR),
                                                               (6 * HOUR, 9 * HOUR), (9 * HOUR, 10 * HOUR)]
    assert last_closed_bar(T0 + 7 * HOUR, HOUR) == T0 + 6 * HOUR
    assert last_closed_bar(T0 + 7 * HOUR + 1_000, HOUR, delay_ms=2_000) == T0 + 5 * HOUR


# ---- REST backfill -----------------------------------------------------------------------

def test_backfill_writes_exactly_what_the_exchange_has(tmp_path):
    ex = SandboxExchange([AssetSpec("BTC", 5)], {"BTC": path(100.0, 5_100)}, {}, start_bar=5_050).start()
    try:
        truth = Info(ex.base_url, skip_ws=True).candles_snapshot("BTC", "1h", 0, ex.now_ms + 10 * HOUR)
        assert len(truth) == 5_000  # the exchange's cap
        s = settings(ex, tmp_path, symbols=("BTC",), candle_limit=5_000)  # horizon 5000 bars > 120 days
        keeper = CandleKeeper(s, InfoClient(ex.base_url), SandboxClock(ex), quiet())
        keeper.verify_all()
        db = s.db_path("1h")
        got = rows(db)
        assert got == [(c["t"], c["T"], *(float(c[k]) for k in "ohlcv")) for c in truth]
        assert got[0][0] == T0 + 51 * HOUR and got[-1][:2] == (T0 + 5_050 * HOUR, T0 + 5_051 * HOUR - 1)
        # 5001-bar window (one bar of slack) in chunks of 1500 with a one-bar overlap: 4 requests
        assert keeper.stats.requests == 4 and keeper.stats.full_backfills == 1 and keeper.keys[("BTC", "1h")].ready

        # a restart re-verifies: complete already, so only the newest closed bar is re-polled
        again = CandleKeeper(s, InfoClient(ex.base_url), SandboxClock(ex), quiet())
        again.verify_all()
        assert again.stats.full_backfills == 0 and again.stats.requests == 1
        # and a forced second full backfill changes nothing
        again._full(again.keys[("BTC", "1h")], ex.now_ms, last_closed_bar(ex.now_ms, HOUR), HOUR)
        assert rows(db) == got and dupes(db) == 0

        ex.advance(1)
        again.verify_all()
        new = rows(db)
        t, o, h, lo, c, v = path(100.0, 5_100)[5_051]
        assert len(new) == 5_001 and new[-1] == (t, t + HOUR - 1, o, h, lo, c, v)
        assert again.stats.tail_polls == 2 and again.stats.requests == 2 + 4
        again.verify_all()  # nothing new closed: no request
        assert again.stats.requests == 6
    finally:
        ex.stop()


def test_rest_retries_on_429_and_reports_hard_failures(small):
    client = InfoClient(small.base_url)
    small.faults.fail_next("candleSnapshot", status=429, n=2)
    got = fetch_candles(client, "BTC", "1h", T0, small.now_ms, sleep=lambda s: None)
    assert got.requests == 1 and len(got.rows) == 21
    small.faults.fail_next("candleSnapshot", status=400)
    with pytest.raises(Exception, match=r"candleSnapshot BTC 1h .*HTTP 400"):
        fetch_candles(client, "BTC", "1h", T0, small.now_ms, sleep=lambda s: None)


def test_exchange_errors_do_not_stop_the_keeper(small, tmp_path):
    s = settings(small, tmp_path)
    out = io.StringIO()
    keeper = CandleKeeper(s, InfoClient(small.base_url), SandboxClock(small), Console(file=out, width=300))
    small.faults.fail_next("candleSnapshot", status=400)
    keeper.verify_all()
    assert keeper.stats.errors == 1 and "candles BTC 1h: candleSnapshot BTC 1h" in out.getvalue()
    assert keeper.keys[("ETH", "1h")].ready and len(rows(s.db_path("1h"), "ETH")) == 21
    keeper.keys[("BTC", "1h")].full_at = None  # the retry wait has passed
    keeper.verify_all()
    assert keeper.ready_count() == 2 and len(rows(s.db_path("1h"))) == 21


def test_ws_candles_persisted_on_new_bar_and_never_over_a_final_bar(tmp_path):
    clock = ManualClock(now_ms=T0 + 10 * HOUR)
    s = MarketDataSettings(symbols=("BTC",), intervals=("1h",), candles_db_dir=tmp_path, ws_candle_persist_s=60.0)
    keeper = CandleKeeper(s, InfoClient("http://127.0.0.1:9"), clock, quiet())
    keeper.keys[("BTC", "1h")].final_t = T0 + 8 * HOUR  # the REST close poll already wrote bar 8

    def frame(t, c):
        return {"t": t, "T": t + HOUR - 1, "s": "BTC", "i": "1h", "o": "10", "h": "12", "l": "9", "c": str(c),
                "v": "1.5", "n": 3}

    assert keeper.persist_ws([frame(T0 + 8 * HOUR, 99.0)]) == 0  # late frame of a final bar: ignored
    assert keeper.persist_ws([frame(T0 + 9 * HOUR, 11.0), {"s": "DOGE", "i": "1h"}, frame(T0 + 9 * HOUR, 11.5)]) == 1
    clock.advance(61.0)
    assert keeper.persist_ws([frame(T0 + 9 * HOUR, 11.8)]) == 1  # same bar again after the persist period
    assert rows(s.db_path("1h")) == [(T0 + 9 * HOUR, T0 + 10 * HOUR - 1, 10.0, 12.0, 9.0, 11.8, 1.5)]


# ---- pruning -----------------------------------------------------------------------------

def test_pruning_honours_disable_list(tmp_path):
    now = T0 + 400 * 86_400_000
    s = MarketDataSettings(symbols=("BTC",), intervals=("1h", "5m", "15m"), candles_db_dir=tmp_path,
                           prune_disable=frozenset({"5m"}), candle_limit=10)
    old_t = now - 200 * 86_400_000
    for iv, step in (("1h", HOUR), ("5m", 300_000), ("15m", 900_000)):
        bars = [{"symbol": "BTC", "t": (old_t // step) * step + i * step, "o": 1.0, "h": 2.0, "l": 0.5, "c": 1.5, "v": 1.0}
                for i in range(3)]
        bars += [{"symbol": "BTC", "t": ((now - HOUR) // step) * step, "o": 1.0, "h": 2.0, "l": 0.5, "c": 1.5, "v": 1.0}]
        write_candles(s.db_path(iv), bars, iv)
    keeper = CandleKeeper(s, InfoClient("http://127.0.0.1:9"), ManualClock(now_ms=now), quiet())
    deleted = keeper.prune()
    assert deleted == {"1h": 3, "15m": 3}  # 1h horizon 120 d + 2x7 d buffer; 15m 30 d + 2x3 d
    assert len(rows(s.db_path("1h"))) == 1 and len(rows(s.db_path("15m"))) == 1
    assert len(rows(s.db_path("5m"))) == 4  # append-only (AQC-203)


# ---- the service loop --------------------------------------------------------------------

def run_in_thread(service: MarketDataService) -> threading.Thread:
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    return thread


def test_no_missing_bar_across_ws_drop(small, tmp_path):
    s = settings(small, tmp_path, ws_enable=True, ws_candles=True, ws_candle_persist_s=0.0)
    log = io.StringIO()
    service = MarketDataService(s, clock=SandboxClock(small), console=Console(file=log, width=300))
    thread = run_in_thread(service)
    try:
        db = s.db_path("1h")
        why = lambda: f"{service.ws.health()} {log.getvalue()} {rows(db)[-3:]} {rows(db, 'ETH')[-3:]}"  # noqa: E731
        wait_until(lambda: service.ws.health()["ok"] and service.candles.ready_count() == 2, why=why)
        small.advance(1)
        wait_until(lambda: rows(db)[-1][0] == T0 + 21 * HOUR, why=why)
        small.faults.drop_ws()
        small.advance(3)  # revealed while the socket is down or resubscribing
        wait_until(lambda: service.ws.health()["reconnects"] >= 1, why=why)
        small.advance(1)
        wait_until(lambda: rows(db, "ETH")[-1][0] == T0 + 25 * HOUR and rows(db)[-1][0] == T0 + 25 * HOUR, why=why)
        for sym in ("BTC", "ETH"):
            ts = [r[0] for r in rows(db, sym)]
            assert ts == list(range(T0, T0 + 26 * HOUR, HOUR)), why()  # every bar, no hole
        t, o, h, lo, c, v = path(30_000.0, 60)[24]
        assert rows(db)[24] == (t, t + HOUR - 1, o, h, lo, c, v)
        assert dupes(db) == 0
        wait_until(lambda: service.ws.mid("BTC") == small.mid("BTC"), why=why)
        wait_until(lambda: "ws reconnected (connect #2, 3 subscriptions re-sent)" in log.getvalue(), why=why)
        assert "ws disconnect #1: ConnectionClosed" in log.getvalue()
    finally:
        service.stop()
        thread.join(5)
    assert not thread.is_alive()


def test_bbo_snapshots_sampled_and_swept(small, tmp_path):
    s = settings(small, tmp_path, ws_enable=True, ws_bbo=True, bbo_snapshots=True,
                 bbo_db_path=tmp_path / "bbo.db", bbo_sample_ms=400, bbo_retention_hours=24.0, bbo_sweep_s=0.2)
    service = MarketDataService(s, clock=SandboxClock(small), console=quiet())
    thread = run_in_thread(service)
    try:
        wait_until(lambda: service.bbo_store.written == 2)  # subscribe snapshots: one per coin
        for _ in range(5):
            small.advance(1)  # five BBO frames per coin inside one sample period
        time.sleep(0.45)
        small.advance(1)
        wait_until(lambda: service.bbo_store.written == 4)
        time.sleep(0.3)
        assert service.sampler.sampled == 4 and service.sampler.dropped == 0
        with sqlite3.connect(s.bbo_db_path) as conn:
            got = conn.execute("SELECT symbol, ts_ms, bid, ask, mid FROM bbo_snapshots ORDER BY ts_ms, symbol").fetchall()
        assert [g[0] for g in got] == ["BTC", "ETH", "BTC", "ETH"]
        btc = got[2]
        assert btc[1] == small.now_ms and btc[2] < btc[4] < btc[3] and btc[4] == pytest.approx(small.mid("BTC"))
        with sqlite3.connect(s.bbo_db_path) as conn:
            conn.execute("INSERT INTO bbo_snapshots VALUES ('BTC', ?, 1, 2, 1.5, 'x')", (small.now_ms - 25 * HOUR,))
        wait_until(lambda: service.bbo_store.swept == 1)  # older than the 24 h retention: swept by the loop
        with sqlite3.connect(s.bbo_db_path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM bbo_snapshots").fetchone()[0] == 4
    finally:
        service.stop()
        thread.join(5)


def test_bbo_queue_is_bounded():
    clock = ManualClock()
    sampler = BboSampler(sample_ms=1000, max_queue=2, clock=clock)
    assert sampler.offer("BTC", 1.0, 3.0) and not sampler.offer("BTC", 1.0, 3.0)  # throttled
    assert sampler.offer("ETH", 1.0, 3.0)
    assert not sampler.offer("SOL", 1.0, 3.0) and sampler.dropped == 1  # queue full: dropped
    rows_ = sampler.drain()
    assert [r[0] for r in rows_] == ["BTC", "ETH"] and rows_[0][4] == 2.0 and sampler.queued() == 0
    clock.advance(1.0)
    assert sampler.offer("BTC", None, 3.0) and sampler.drain()[0][4] is None


# ---- CLI ---------------------------------------------------------------------------------

def test_cli_help_and_bad_input(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["market-data", "--help"], env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert res.exit_code == 0 and "--max-runtime-s" in res.output and "AI_QUANT_SIDECAR_SYMBOLS" in res.output
    res = runner.invoke(app, ["market-data", "--symbols", "BTC", "--intervals", "7x", "--db-dir", str(tmp_path)])
    assert res.exit_code == 1 and "AI_QUANT_SIDECAR_INTERVALS: unknown interval '7x'" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    res = runner.invoke(app, ["market-data", "--symbols", "BTC", "--max-runtime-s", "0"])
    assert res.exit_code == 2 and "--max-runtime-s must be > 0" in res.output


def cli_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AI_QUANT_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update(extra)
    return env


def test_cli_short_real_run_against_sandbox(tmp_path):
    ex = SandboxExchange([AssetSpec("BTC", 5)], {"BTC": path(30_000.0, 60)}, {}, start_bar=30, shift_to_now=True).start()
    try:
        cmd = [sys.executable, "-m", "live.cli", "market-data", "--symbols", "BTC", "--intervals", "1h",
               "--db-dir", str(tmp_path), "--base-url", ex.base_url, "--bbo", "--bbo-snapshots",
               "--max-runtime-s", "1.5", "--health-secs", "1"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=40, cwd=REPO, env=cli_env())
        assert res.returncode == 0, res.stderr
        assert "candles BTC 1h: backfilled 31 bars" in res.stderr and "market-data running: candles ready 1/1" in res.stderr
        assert "market-data stopped" in res.stderr and "Traceback" not in res.stderr
        got = rows(tmp_path / "candles_1h.db")
        assert len(got) == 31 and got[-1][0] + HOUR == ex.now_ms
        with sqlite3.connect(tmp_path / "bbo_snapshots.db") as conn:
            assert conn.execute("SELECT COUNT(*) FROM bbo_snapshots WHERE symbol='BTC'").fetchone()[0] >= 1
    finally:
        ex.stop()


def test_cli_sigterm_exits_cleanly_with_systemd_notify(tmp_path):
    ex = SandboxExchange([AssetSpec("BTC", 5), AssetSpec("ETH", 4)],
                         {"BTC": path(30_000.0, 60), "ETH": path(2_000.0, 60)}, {}, start_bar=20, shift_to_now=True).start()
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(0.05)
    cmd = [sys.executable, "-m", "live.cli", "market-data", "--db-dir", str(tmp_path), "--base-url", ex.base_url]
    env = cli_env(AI_QUANT_SIDECAR_SYMBOLS="BTC,ETH", AI_QUANT_SIDECAR_INTERVALS="1h",
                  NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="200000")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "market-data running" in line:
                break
        time.sleep(0.4)  # a few watchdog periods of the idle loop
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=10)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
        ex.stop()
    assert proc.returncode == 0, "".join(lines) + rest
    assert "market-data stopped" in rest and "Traceback" not in rest
    states = []
    with contextlib.suppress(TimeoutError):
        while True:
            states.append(sock.recv(4096).decode())
    sock.close()
    assert states[0].startswith("READY=1") and states[-1] == "STOPPING=1"
    assert states.count("WATCHDOG=1") >= 2 and any(st.startswith("STATUS=candles ready 2/2") for st in states)
