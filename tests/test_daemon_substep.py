"""The paper trader steps every 5m exit sub-bar as soon as it closes (1h signals, 5m exits, real
candles): catch-up and trading on the clock both book exactly the fills `backtester replay
--trades` books, each right after the sub-bar that triggers it, and a trader killed mid-hour goes
on with the next sub-bar, none redone or skipped."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_daemon_paper import CONFIG, copy_candles, db_fills

from live.clock import ManualClock
from live.daemon import TraderDaemon
from live.env import load_settings
from live.trading_db import iso_utc

REPO = Path(__file__).resolve().parents[1]
H, M5, GRACE = 3_600_000, 300_000, 2_000
SUB_CONFIG = CONFIG.replace("engine: {interval: 15m}", "engine: {interval: 1h, exit_interval: 5m}")
ENTRY_SUB_CONFIG = CONFIG.replace("engine: {interval: 15m}", "engine: {interval: 1h, exit_interval: 5m, entry_interval: 5m}")


def hours(shared: Path) -> list[int]:
    with sqlite3.connect(shared / "candles_1h.db") as conn:
        return [r[0] for r in conn.execute("SELECT DISTINCT t FROM candles ORDER BY t")]


def world(tmp_path: Path, shared: Path, *, before_ms: int, config: str = SUB_CONFIG) -> dict:
    """Candle DBs holding the 5m bars that opened before `before_ms` and the 1h bars complete by
    then, a config and a paper env."""
    dbs = tmp_path / "candles_dbs"
    copy_candles(shared / "candles_1h.db", dbs / "candles_1h.db", before_ms=before_ms - H + M5)
    copy_candles(shared / "candles_5m.db", dbs / "candles_5m.db", before_ms=before_ms)
    (tmp_path / "cfg.yaml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_QUANT_")}
    env.update({"AI_QUANT_STRATEGY_YAML": str(tmp_path / "cfg.yaml"), "AI_QUANT_CANDLES_DB_DIR": str(dbs),
                "AI_QUANT_DB_PATH": str(tmp_path / "paper.db"), "AI_QUANT_LOCK_PATH": str(tmp_path / "paper.lock"),
                "AI_QUANT_RISK_MAX_DAILY_LOSS_PCT": "0", "AI_QUANT_RISK_SAFE_MODE_DRAWDOWN_PCT": "0",
                "AI_QUANT_MODE": "paper", "AI_QUANT_LOOP_TARGET_SECS": "0.5", "AI_QUANT_HEARTBEAT_SECS": "1",
                "AI_QUANT_CANDLE_CLOSE_GRACE_MS": str(GRACE)})
    return env


def reveal(tmp_path: Path, shared: Path, *, from_ms: int, before_ms: int) -> None:
    """Bars that opened in [from_ms, before_ms) reach the candle DBs (the market-data service's job);
    an hour's candle is there once its last 5m bar is."""
    dbs = tmp_path / "candles_dbs"
    for name, lo, hi in (("candles_5m.db", from_ms, before_ms), ("candles_1h.db", from_ms - H + M5, before_ms - H + M5)):
        with sqlite3.connect(shared / name) as src:
            rows = src.execute("SELECT symbol, interval, t, t_close, o, h, l, c, v, n FROM candles WHERE t >= ? "
                               "AND t < ?", (lo, hi)).fetchall()
        if rows:
            dst = sqlite3.connect(dbs / name)
            dst.execute("PRAGMA synchronous=OFF")   # a test DB: no fsync per 5m bar
            dst.executemany("INSERT OR IGNORE INTO candles VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            dst.commit()
            dst.close()


def replay(tmp_path: Path, env: dict) -> list[tuple]:
    """`backtester replay --trades` on the same DBs: (symbol, action, time, price, size, fee, pnl)."""
    dbs, out = tmp_path / "candles_dbs", tmp_path / "replay.json"
    proc = subprocess.run([sys.executable, "-m", "tools.backtester", "replay", "--candles-db", str(dbs / "candles_1h.db"),
                           "--exit-candles-db", str(dbs / "candles_5m.db"), "--config", str(tmp_path / "cfg.yaml"),
                           "--trades", "--output", str(out)], env=env, capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [(f["symbol"], f["action"], iso_utc(f["t_ms"]), f["price"], f["size"], f["fee"], f["pnl"])
            for f in json.loads(out.read_text())["fills"] if f["reason"] != "end_of_data"]


def paper(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT symbol, action, timestamp, price, size, fee_usd, pnl FROM trades "
                            "ORDER BY id").fetchall()


def cursor_of(db: Path) -> tuple[int | None, int | None]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT value_json FROM engine_state WHERE key = 'engine'").fetchone()
    except sqlite3.Error:
        return None, None
    if row is None:
        return None, None
    data = json.loads(row[0])
    return data["last_bar_t"], data.get("last_sub_t")


@pytest.mark.parametrize("config", [pytest.param(SUB_CONFIG, marks=pytest.mark.slow), ENTRY_SUB_CONFIG],
                         ids=["5m exits", "5m exits and entries"])
def test_paper_catch_up_with_5m_sub_bars_equals_replay_fill_for_fill(tmp_path, shared_data, config):
    end = hours(shared_data)[-1]          # the last hour lacks its 04:55 bar: stop before it
    env = world(tmp_path, shared_data, before_ms=end, config=config)
    proc = subprocess.run([sys.executable, "-m", "live", "--mode", "paper", "--until-caught-up"], env=env,
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got, want = paper(tmp_path / "paper.db"), replay(tmp_path, env)
    inside = {a for _, a, t, *_ in want if not t.endswith(":00:00.000+00:00")}
    assert len(want) > 30 and {"CLOSE"} <= inside, "the replay must book some exits on 5m bars inside the hour"
    if config == ENTRY_SUB_CONFIG:
        assert "OPEN" in inside, "... and entries"
    assert got == want
    assert re.search(r"caught up: \d+ bar\(s\) \S+ \.\. \S+; \d+ sub-bar\(s\) from ", proc.stderr)
    assert cursor_of(tmp_path / "paper.db") == (end - H, None)


class ClockWorld:
    """A paper trader in this process on a ManualClock: every 5 minutes a 5m bar closes (and at
    the hour its 1h bar), the candle DBs get it, the clock moves to its close + the grace, and the
    daemon runs one loop."""

    def __init__(self, tmp_path: Path, shared: Path, live_from: int, end: int):
        self.tmp, self.shared, self.next, self.end = tmp_path, shared, live_from, end
        self.env = world(tmp_path, shared, before_ms=live_from, config=ENTRY_SUB_CONFIG)
        self.wall = ManualClock(now_ms=live_from + GRACE)
        self.seen: dict[int, int] = {}   # trades.id -> the clock when the row appeared
        self.daemon = None

    def start(self) -> TraderDaemon:
        self.daemon = TraderDaemon(load_settings(self.env), wall=self.wall)
        self.daemon._start()
        self.note(self.daemon.loop_once())
        return self.daemon

    def tick(self) -> int:
        reveal(self.tmp, self.shared, from_ms=self.next, before_ms=self.next + M5)
        self.wall.set_wall_ms(self.next + M5 + GRACE)
        self.next += M5
        return self.note(self.daemon.loop_once())

    def note(self, processed: int) -> int:
        for (tid,) in self.daemon.conn.execute("SELECT id FROM trades"):
            self.seen.setdefault(tid, self.wall.now_ms())
        return processed

    def crash(self) -> None:
        """The process is gone: handles close, nothing more is written."""
        self.daemon.close()
        self.daemon = None


@pytest.mark.parametrize("n_hours", [30, pytest.param(100, marks=pytest.mark.slow)])
def test_paper_on_the_clock_steps_each_5m_bar_once_and_books_every_fill_right_after_it(tmp_path, shared_data,
                                                                                       n_hours):
    """5m exits and entries; the trader also dies mid-hour (after a 10:20 bar) and is restarted."""
    times = hours(shared_data)
    live_from, end = times[-n_hours], times[-1]
    w = ClockWorld(tmp_path, shared_data, live_from, end)
    daemon = w.start()
    assert daemon.steps.cursor.last_bar_t == live_from - H
    steps = []
    while w.next < end:
        if w.next == live_from + n_hours // 2 * H + 5 * M5:   # mid-hour: the trader dies after its 10:20 bar
            w.crash()
            w.start()   # nothing was due at restart: the checkpoint holds 10:20
            assert w.daemon.steps.cursor.last_sub_t == w.next - M5
        steps.append(w.tick())
    # one step per 5m bar, and at the hour also the main close: never two sub-bars at once
    assert steps == [2 if (t + M5) % H == 0 else 1 for t in range(live_from, end, M5)]
    got, want = paper(tmp_path / "paper.db"), replay(tmp_path, w.env)
    assert got == want
    live = [(tid, ts) for tid, ts in w.daemon.conn.execute("SELECT id, timestamp FROM trades ORDER BY id")
            if w.seen[tid] > live_from + GRACE]
    assert len(live) > 5
    late = [(ts, w.seen[tid]) for tid, ts in live if iso_utc(w.seen[tid] - GRACE) != ts]
    assert late == [], "every fill is booked in the loop right after its (sub-)bar closed"
    assert any(not ts.endswith(":00:00.000+00:00") for _, ts in live), "some live exits inside the hour"
    w.crash()


def test_sigkill_mid_hour_then_restart_goes_on_with_the_next_5m_bar(tmp_path, shared_data):
    """A real kill -9 of `python -m live --mode paper` after the 10:20 bar of an hour: the restart's
    first step is 10:25, and the run still books what the replay books."""
    times = hours(shared_data)
    hour = times[-60]
    env = world(tmp_path, shared_data, before_ms=hour + 5 * M5)   # 10:00 .. 10:20 of `hour` are in
    db = tmp_path / "paper.db"
    for upto in (4, 9):
        log = (tmp_path / f"run{upto}.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "live", "--mode", "paper"], env=env, cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while cursor_of(db) != (hour - H, hour + upto * M5):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / f"run{upto}.log").read_text()[-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        log.close()
        reveal(tmp_path, shared_data, from_ms=hour + (upto + 1) * M5, before_ms=hour + (upto + 6) * M5)
    second = (tmp_path / "run9.log").read_text()
    assert f"5 sub-bar(s) from {iso_utc(hour + 5 * M5)}" in second, second[-2000:]
    reveal(tmp_path, shared_data, from_ms=hour + 10 * M5, before_ms=times[-1])
    proc = subprocess.run([sys.executable, "-m", "live", "--mode", "paper", "--until-caught-up"], env=env,
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"sub-bar(s) from {iso_utc(hour + 10 * M5)}" in proc.stderr
    assert paper(db) == replay(tmp_path, env)
    got = db_fills(db)
    assert len(got) == len(set(got)), "a fill row was booked twice"


def test_halt_all_mid_hour_then_cleared_mid_hour_keeps_the_sub_bar_order(tmp_path, shared_data):
    """halt_all from 10:20 through 11:10 (no order at all, the 10:00 bar closes untraded after five
    traded 5m bars, 11:00 .. 11:10 pass without a decision), then cleared: the engine takes 11:15 and
    everything after in order, one step per 5m bar, and trades again."""
    times = hours(shared_data)
    live_from, end = times[-12], times[-1]
    w = ClockWorld(tmp_path, shared_data, live_from, end)
    kill = tmp_path / "kill"
    w.env["AI_QUANT_KILL_SWITCH_FILE"] = str(kill)
    w.start()
    halt_from, halt_to = live_from + H + 4 * M5, live_from + 2 * H + 3 * M5
    steps, during = [], []
    while w.next < end:
        if w.next == halt_from:
            kill.write_text("halt_all\n")
        if w.next == halt_to:
            kill.unlink()
        n_before = len(paper(tmp_path / "paper.db"))
        steps.append(w.tick())
        if halt_from <= w.next - M5 < halt_to:
            during.append(len(paper(tmp_path / "paper.db")) - n_before)
    assert steps == [2 if (t + M5) % H == 0 else 1 for t in range(live_from, end, M5)]
    assert during and set(during) == {0}, "halt_all: no fill at all"
    assert w.daemon.steps.cursor.last_bar_t == end - H and w.daemon.engine.sub_position[1] == 0
    assert any(w.seen[tid] > halt_to for (tid,) in w.daemon.conn.execute("SELECT id FROM trades")), \
        "trading resumes after the clear"
    w.crash()


def test_without_the_5m_candle_db_the_trader_refuses_to_start_in_one_line(tmp_path, shared_data):
    env = world(tmp_path, shared_data, before_ms=hours(shared_data)[50])
    (tmp_path / "candles_dbs" / "candles_5m.db").unlink()
    proc = subprocess.run([sys.executable, "-m", "live", "--mode", "paper", "--until-caught-up"], env=env,
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "candles_5m.db" in lines[0] and "AI_QUANT_SIDECAR_INTERVALS=1h,5m" in lines[0], lines
    assert not (tmp_path / "paper.db").exists()
