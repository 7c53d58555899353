"""`python -m live.sandbox` as an operator runs it: a real process on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
import time

import pytest
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


# ---- bad options and bad data: one line on stderr, exit 2, never a traceback ---------------

def assert_one_line(got, needle: str) -> None:
    assert got.returncode == 2, got.stderr
    assert "Traceback" not in got.stderr and len(got.stderr.strip().splitlines()) == 1, got.stderr
    assert got.stderr.startswith("error: ") and needle in got.stderr, got.stderr


@pytest.mark.parametrize("args, needle", [
    (["--port", "70000"], "Invalid value for '--port': Input should be less than or equal to 65535"),
    (["--port", "-1"], "Invalid value for '--port'"),
    (["--speed", "-1"], "Invalid value for '--speed'"),
    (["--speed", "inf"], "Invalid value for '--speed': inf is not a finite number"),
    (["--speed", "nan"], "Invalid value for '--speed'"),
    (["--half-spread-bps", "-0.5"], "Invalid value for '--half-spread-bps'"),
    (["--half-spread-bps", "20000"], "Invalid value for '--half-spread-bps'"),
    (["--start-bar", "-3"], "Invalid value for '--start-bar'"),
    (["--level-notional", "0"], "Invalid value for '--level-notional': 0.0 must be > 0"),
    (["--level-notional", "-5"], "Invalid value for '--level-notional'"),
    (["--account", "0x" + "ab" * 20 + "=-100"], "balance must be a finite number >= 0"),
    (["--account", "0x" + "ab" * 20 + "=inf"], "balance must be a finite number >= 0"),
])
def test_bad_options_are_one_line(tmp_path, args, needle):
    db = tmp_path / "candles_1h.db"
    make_db(db, n=10)
    assert_one_line(run_cli("--port", "0", "--candles-db", str(db), *args), needle)


def test_port_70000_is_refused_before_any_db_is_read():
    """The port is checked by the option parser, so even a missing DB is not reached (no traceback)."""
    assert_one_line(run_cli("--port", "70000", "--candles-db", "/nonexistent/candles_1h.db"), "'--port'")


def lax_db(path, bad_row: tuple) -> None:
    """A candle DB whose schema does not forbid NULLs (as a hand-made or foreign DB may)."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE candles (symbol TEXT, interval TEXT, t INTEGER, t_close INTEGER, o REAL, h REAL, "
                "l REAL, c REAL, v REAL, n INTEGER)")
    rows = [("BTC", "1h", T0 + i * HOUR, T0 + (i + 1) * HOUR - 1, 100.0, 101.0, 99.0, 100.0, 5.0, 1)
            for i in range(10)]
    rows[6] = ("BTC", "1h", *bad_row)
    con.executemany("INSERT INTO candles VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    con.commit()
    con.close()


T6 = T0 + 6 * HOUR


@pytest.mark.parametrize("bad_row, needle", [
    ((T6, T6 + HOUR - 1, None, 101.0, 99.0, 100.0, 5.0, 1), f"BTC t={T6} (" + "{iso}): o is NULL"),
    ((T6, T6 + HOUR - 1, 100.0, 101.0, 99.0, float("nan"), 5.0, 1), "c is NULL"),  # SQLite stores NaN as NULL
    ((T6, T6 + HOUR - 1, 100.0, float("inf"), 99.0, 100.0, 5.0, 1), "h=inf is not finite"),
    ((T6, T6 + HOUR - 1, 100.0, 101.0, 99.0, -100.0, 5.0, 1), "c=-100.0 is not a price"),
    ((T6, T6 + HOUR - 1, 100.0, 101.0, 0.0, 100.0, 5.0, 1), "l=0.0 is not a price"),
    ((T6, T6 + HOUR - 1, 100.0, 1e300, 99.0, 100.0, 5.0, 1), "h=1e+300 is not a price"),
    ((T6, T6 + HOUR - 1, 100.0, 101.0, 99.0, 100.0, -5.0, 1), "v=-5.0 is negative"),
    ((T6, T6 + HOUR - 1, 100.0, 101.0, 99.0, 150.0, 5.0, 1), "o=100.0/c=150.0 outside [l=99.0, h=101.0]"),
    ((T6, T6 + HOUR - 1, "abc", 101.0, 99.0, 100.0, 5.0, 1), "o='abc' is not a number"),
    ((-HOUR, 0, 100.0, 101.0, 99.0, 100.0, 5.0, 1), "t=-3600000 is not a positive whole number"),
])
def test_bad_candle_rows_are_refused_naming_the_row(tmp_path, bad_row, needle):
    db = tmp_path / "candles_1h.db"
    lax_db(db, bad_row)
    got = run_cli("--port", "0", "--candles-db", str(db))
    iso = dt.datetime.fromtimestamp(T6 / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
    assert_one_line(got, needle.format(iso=iso))
    assert f"error: {db}: BTC" in got.stderr


def test_bad_funding_row_is_refused_naming_the_row(tmp_path):
    db = tmp_path / "candles_1h.db"
    make_db(db, n=10)
    fdb = tmp_path / "funding.db"
    con = sqlite3.connect(fdb)
    con.execute("CREATE TABLE funding_rates (symbol TEXT, time INTEGER, funding_rate REAL, premium REAL)")
    con.executemany("INSERT INTO funding_rates VALUES (?,?,?,?)",
                    [("BTC", T0 + HOUR, 0.0001, None), ("BTC", T0 + 2 * HOUR, None, 0.0)])
    con.commit()
    con.close()
    got = run_cli("--port", "0", "--candles-db", str(db), "--funding-db", str(fdb))
    assert_one_line(got, f"{fdb}: BTC time={T0 + 2 * HOUR} (")
    assert got.stderr.strip().endswith("funding_rate is NULL")
