"""`python -m live.sandbox` as an operator runs it: a real process on 127.0.0.1."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

from hyperliquid.info import Info

HOUR = 3_600_000
T0 = 1_750_000_000_000 // HOUR * HOUR


def make_db(path, n=400):
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE candles (symbol TEXT NOT NULL, interval TEXT NOT NULL, t INTEGER NOT NULL, "
                "t_close INTEGER NOT NULL, o REAL NOT NULL, h REAL NOT NULL, l REAL NOT NULL, c REAL NOT NULL, "
                "v REAL NOT NULL, n INTEGER, PRIMARY KEY (symbol, interval, t))")
    rows = [("BTC", "1h", T0 + i * HOUR, T0 + (i + 1) * HOUR - 1, 100_000.0 + i, 100_050.0 + i, 99_950.0 + i,
             100_000.0 + i, 5.0, 100) for i in range(n)]
    rows += [("ETH", "1h", T0 + i * HOUR, T0 + (i + 1) * HOUR - 1, 3_000.0, 3_010.0, 2_990.0, 3_000.0, 50.0, None)
             for i in range(0, n, 2)]  # ETH has gaps
    con.executemany("INSERT INTO candles VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    con.commit()
    con.close()


def run_cli(*args, timeout=20):
    return subprocess.run([sys.executable, "-m", "live.sandbox", *args], capture_output=True, text=True, timeout=timeout)


def test_missing_db_is_one_line_error():
    got = run_cli("--port", "0", "--candles-db", "/nonexistent/candles_1h.db")
    assert got.returncode == 2
    assert got.stderr.strip() == "error: /nonexistent/candles_1h.db: candles DB not found"
    assert "Traceback" not in got.stderr


def test_bad_interval_and_account_rejected(tmp_path):
    db = tmp_path / "candles_1h.db"
    make_db(db, n=10)
    got = run_cli("--port", "0", "--candles-db", str(db), "--interval", "7m")
    assert got.returncode == 2 and got.stderr.strip() == "error: --interval: unknown value '7m'"
    got = run_cli("--port", "0", "--candles-db", str(db), "--account", "0x12=5")
    assert got.returncode == 2 and "address must be 0x + 40 hex" in got.stderr


def test_serves_and_replays_db(tmp_path):
    db = tmp_path / "candles_1h.db"
    make_db(db)
    proc = subprocess.Popen([sys.executable, "-m", "live.sandbox", "--port", "0", "--candles-db", str(db),
                             "--start-bar", "300", "--speed", "36000", "--no-shift-to-now"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        assert "2 assets [BTC, ETH]" in banner, banner + proc.stderr.read()
        base_url = banner.split(" on ")[1].split(" ")[0]
        info = Info(base_url, skip_ws=True)
        assert info.asset_to_sz_decimals == {0: 5, 1: 4}
        first = float(info.all_mids()["BTC"])
        time.sleep(0.5)  # 1h bars at 36000x: one bar per 0.1 s
        later = float(info.all_mids()["BTC"])
        assert later > first and (later - first) % 1 == 0
        candles = info.candles_snapshot("ETH", "1h", 0, T0 + 1000 * HOUR)
        assert all(c["t"] % (2 * HOUR) == T0 % (2 * HOUR) for c in candles) and len(candles) >= 150
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0
