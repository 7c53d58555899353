"""Runbook data tools run as subprocesses on real SQLite files in temp dirs."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from marketdata.candles import load_market_data, write_candles
from marketdata.checks import check_candle_dbs, check_funding_db
from marketdata.funding import write_funding

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
H = 3_600_000
M5 = 300_000
NOW = 1_754_000_000_000 // H * H + 10_000  # 10 s after an hour boundary


def run_tool(name: str, *args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "tools" / name), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def assert_same_market_data(a, b):
    assert a.symbols == b.symbols
    for field in ("times", "open", "high", "low", "close", "volume", "valid"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


# ------------------------------------------------------------------ partition_candles_db.py

def test_partition_real_db_then_hot_plus_partitions_loads_the_same_bars(tmp_path):
    real = DATA / "candles_5m.db"
    if not real.is_file():
        pytest.skip(f"../shared/data absent: {real} not found")
    hot = tmp_path / "candles_5m.db"
    shutil.copy(real, hot)
    hot.chmod(0o644)
    before = load_market_data(str(hot), "5m")
    now_ms = 1_517_288_100_000  # 2018-01-30 05:55 UTC; keep 10 days -> rows before 2018-01-20 archived
    dry = run_tool("partition_candles_db.py", "--interval", "5m", "--src-db", hot, "--keep-days", 10,
                   "--now-ms", now_ms)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["mode"] == "dry-run" and plan["months"][0]["month"] == "2018-01"
    assert not (tmp_path / "partitions").exists()
    done = run_tool("partition_candles_db.py", "--interval", "5m", "--src-db", hot, "--keep-days", 10,
                    "--now-ms", now_ms, "--apply", "--delete", "--vacuum")
    assert done.returncode == 0, done.stderr
    month = json.loads(done.stdout)["months"][0]
    assert month["verified"] and month["deleted"] == month["rows"] == plan["rows_to_archive"] > 10_000
    part_dir = tmp_path / "partitions" / "5m"
    with sqlite3.connect(hot) as conn:
        assert conn.execute("SELECT MIN(t) FROM candles").fetchone()[0] >= plan["cutoff_ms"]
    assert_same_market_data(before, load_market_data(f"{hot},{part_dir}", "5m"))
    again = run_tool("partition_candles_db.py", "--interval", "5m", "--src-db", hot, "--keep-days", 10,
                     "--now-ms", now_ms, "--apply", "--delete")
    assert again.returncode == 0 and json.loads(again.stdout)["rows_to_archive"] == 0


def test_partition_spans_months_and_never_deletes_unverified_rows(tmp_path):
    hot = tmp_path / "candles_1h.db"
    start = 1_704_067_200_000  # 2024-01-01
    rows = [{"symbol": s, "t": start + i * H, "o": 1 + i, "h": 2 + i, "l": 0.5 + i, "c": 1.5 + i, "v": 1.0}
            for s in ("BTC", "ETH") for i in range(24 * 75)]  # to mid-March
    write_candles(hot, rows, "1h")
    before = load_market_data(str(hot), "1h")
    part_dir = tmp_path / "partitions" / "1h"
    bad = part_dir / "candles_1h_2024-02.db"  # a stale archive disagreeing with the hot DB for one bar
    write_candles(bad, [dict(rows[24 * 40], c=999.0, h=1000.0)], "1h")
    now_ms = start + 75 * 24 * H
    res = run_tool("partition_candles_db.py", "--interval", "1hr", "--src-db", hot, "--keep-days", 30,
                   "--now-ms", now_ms, "--apply", "--delete")
    assert res.returncode == 1, res.stderr
    months = {m["month"]: m for m in json.loads(res.stdout)["months"]}
    assert sorted(months) == ["2024-01", "2024-02"]
    assert months["2024-01"]["verified"] and months["2024-01"]["deleted"] == 2 * 31 * 24
    assert not months["2024-02"]["verified"] and months["2024-02"]["deleted"] == 0
    with sqlite3.connect(hot) as conn:
        assert conn.execute("SELECT COUNT(*) FROM candles WHERE t < ?", (start + 31 * 24 * H,)).fetchone()[0] == 0
    assert_same_market_data(before, load_market_data(f"{hot},{part_dir}", "1h"))


@pytest.mark.parametrize("args, code, needle", [
    (["--keep-days", 0], 2, "--keep-days must be >= 1"),
    (["--delete"], 2, "--delete needs --apply"),
    (["--apply", "--vacuum"], 2, "--vacuum needs --apply --delete"),
    (["--interval", "7m"], 2, "unknown interval"),
])
def test_partition_bad_flags(tmp_path, args, code, needle):
    hot = tmp_path / "candles_5m.db"
    write_candles(hot, [{"symbol": "BTC", "t": 0, "o": 1, "h": 1, "l": 1, "c": 1, "v": 1}], "5m")
    base = ["--src-db", hot] + ([] if "--interval" in args else ["--interval", "5m"])
    res = run_tool("partition_candles_db.py", *base, *args)
    assert res.returncode == code and needle in res.stderr and "Traceback" not in res.stderr


def test_partition_missing_source_exits_3(tmp_path):
    res = run_tool("partition_candles_db.py", "--interval", "5m", "--src-db", tmp_path / "nope.db")
    assert res.returncode == 3 and "source DB not found" in res.stderr


# ------------------------------------------------------------------ check_candle_dbs.py

def write_recent_window(db: Path, now_ms: int, hours: int = 30, step: int = M5) -> list[int]:
    last_closed = (now_ms - 5_000 - step) // step * step
    times = [last_closed - i * step for i in range(hours * H // step)][::-1]
    rows = [{"symbol": s, "t": t, "o": 10.0, "h": 11.0, "l": 9.0, "c": 10.5, "v": 3.0}
            for s in ("BTC", "ETH") for t in times]
    write_candles(db, rows, "5m")
    return times


def test_check_candle_dbs_passes_complete_window_and_flags_deleted_bar(tmp_path):
    db = tmp_path / "candles_5m.db"
    times = write_recent_window(db, NOW)
    args = ["--db-glob", tmp_path / "candles_*.db", "--lookback-hours", 24, "--now-ms", NOW]
    ok = run_tool("check_candle_dbs.py", *args)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["overall_status"] == "OK" and "[OK]" in ok.stderr
    window = report["dbs"][0]["intervals"][0]["symbols"][0]["lookback"]
    assert window["bars"] == window["expected_bars"] == 287 and window["missing_bars"] == 0
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM candles WHERE symbol='ETH' AND t=?", (times[-100],))
    warn = run_tool("check_candle_dbs.py", *args, "--gap-fail-bars", 3)
    assert warn.returncode == 0 and json.loads(warn.stdout)["overall_status"] == "WARN"
    assert run_tool("check_candle_dbs.py", *args, "--gap-fail-bars", 3, "--fail-on-warn").returncode == 1
    fail = run_tool("check_candle_dbs.py", *args)  # by default one missing bar in the window is a FAIL
    assert fail.returncode == 2, fail.stderr
    eth = json.loads(fail.stdout)["dbs"][0]["intervals"][0]["symbols"][1]
    assert eth["symbol"] == "ETH" and eth["status"] == "FAIL"
    assert eth["lookback"]["gap_ranges"] == [{"bars": 1, "start_ms": times[-100], "end_ms": times[-100],
                                              "start_utc": eth["lookback"]["gap_ranges"][0]["start_utc"]}]


def test_check_candle_dbs_stale_and_no_match_fail(tmp_path):
    db = tmp_path / "candles_5m.db"
    write_recent_window(db, NOW - 2 * H, hours=1)
    stale = check_candle_dbs(str(db), 24, now=NOW)
    sym = stale["dbs"][0]["intervals"][0]["symbols"][0]
    assert stale["overall_status"] == "FAIL" and sym["freshness"]["status"] == "FAIL"
    assert sym["freshness"]["staleness_bars"] > 20
    res = run_tool("check_candle_dbs.py", "--db-glob", tmp_path / "none_*.db", "--now-ms", NOW)
    assert res.returncode == 2 and json.loads(res.stdout)["overall_status"] == "FAIL"
    bad = run_tool("check_candle_dbs.py", "--db-glob", db, "--gap-warn-bars", 5, "--gap-fail-bars", 2)
    assert bad.returncode == 2 and "exceeds the fail threshold" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(("column", "value", "problem"), [
    ("c", "abc", "column c is 'text' ('abc')"), ("h", 1.0, "h=1.0 < l=9.0"), ("o", None, "column o is NULL"),
    ("l", 0.0, "l=0.0 <= 0"), ("v", b"x", "column v is 'blob' (X'78')")])
def test_check_candle_dbs_fails_every_row_the_engine_refuses(tmp_path, column, value, problem):
    from marketdata.candles import load_candles
    from marketdata.intervals import MarketDataError

    db = tmp_path / "candles_5m.db"
    times = write_recent_window(db, NOW)
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE candles SET {column}=? WHERE symbol='ETH' AND t=?", (value, times[-7]))
    with pytest.raises(MarketDataError, match="corrupt candle row"):
        load_candles(str(db), "5m", start_ms=times[0])
    report = check_candle_dbs(str(db), 24, now=NOW)
    btc, eth = report["dbs"][0]["intervals"][0]["symbols"]
    assert report["overall_status"] == "FAIL" and btc["status"] == "OK" and eth["status"] == "FAIL"
    assert eth["rows"] == {"bad_rows": 1, "examples": [{"t": times[-7], "problem": problem}], "status": "FAIL"}
    assert eth["lookback"]["missing_bars"] == 0 and eth["freshness"]["status"] == "OK"


def test_check_candle_dbs_lists_first_bad_rows_and_survives_text_keys(tmp_path):
    db = tmp_path / "candles_5m.db"
    times = write_recent_window(db, NOW)
    with sqlite3.connect(db) as conn:
        conn.executemany("UPDATE candles SET c='abc' WHERE symbol='BTC' AND t=?", [(t,) for t in times[-9:]])
        conn.execute("UPDATE candles SET t_close='later', t='x' WHERE symbol='ETH' AND t=?", (times[-1],))
    res = run_tool("check_candle_dbs.py", "--db-glob", db, "--now-ms", NOW, "--max-bad-rows-per-symbol", 3)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    btc, eth = json.loads(res.stdout)["dbs"][0]["intervals"][0]["symbols"]
    assert btc["rows"]["bad_rows"] == 9 and [r["t"] for r in btc["rows"]["examples"]] == times[-9:-6]
    assert eth["rows"]["examples"] == [{"t": "x", "problem": "column t is 'text' ('x')"}]
    assert f"corrupt_rows=9 (t={times[-9]}: column c is 'text' ('abc');" in res.stderr
    assert "bad_rows=10" in res.stderr


def test_check_candle_dbs_counts_duplicate_keys_the_runbook_sql_miscounts(tmp_path):
    db = tmp_path / "candles_5m.db"
    times = write_recent_window(db, NOW, hours=25)
    runbook_sql = ("SELECT COUNT(*) AS dupes FROM (SELECT symbol, interval, t, COUNT(*) AS c FROM candles "
                   "GROUP BY symbol, interval, t HAVING c > 1)")
    with sqlite3.connect(db) as conn:
        assert conn.execute(runbook_sql).fetchone()[0] == 2 * len(times)  # `c` is the close price here
    clean = check_candle_dbs(str(db), 24, now=NOW)["dbs"][0]["intervals"][0]
    assert clean["duplicates"]["keys"] == 0 and clean["duplicates"]["enforced_by_unique_index"]
    # a merged/foreign DB without the primary key
    foreign = tmp_path / "candles_merged.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute(f"ATTACH '{db}' AS src")
        conn.execute("CREATE TABLE candles AS SELECT * FROM src.candles")
        conn.execute("INSERT INTO candles SELECT * FROM src.candles WHERE symbol='BTC' AND t>=?", (times[-3],))
    same = check_candle_dbs(str(foreign), 24, now=NOW)["dbs"][0]
    dupes = same["intervals"][0]["duplicates"]
    assert same["status"] == "WARN" and same["intervals"][0]["summary"]["duplicate_keys"] == 3
    assert (dupes["keys"], dupes["extra_rows"], dupes["conflicting_keys"]) == (3, 3, 0)
    assert same["intervals"][0]["symbols"][0]["lookback"]["bars"] == 287  # duplicates are not extra bars
    with sqlite3.connect(foreign) as conn:
        conn.execute("INSERT INTO candles (symbol, interval, t, t_close, o, h, l, c, v) "
                     "VALUES ('ETH', '5m', ?, ?, 10, 12, 9, 11.5, 1)", (times[-2], times[-2] + M5 - 1))
    res = run_tool("check_candle_dbs.py", "--db-glob", foreign, "--now-ms", NOW)
    dupes = json.loads(res.stdout)["dbs"][0]["intervals"][0]["duplicates"]
    assert res.returncode == 2 and dupes["status"] == "FAIL" and dupes["conflicting_keys"] == 1
    assert dupes["examples"] == [{"symbol": "ETH", "t": times[-2], "rows": 2, "versions": 2}]
    assert "4 duplicate keys (1 with differing values): ETH" in res.stderr
    assert "reports false dupes" in " ".join(run_tool("check_candle_dbs.py", "--help").stdout.split())


# ------------------------------------------------------------------ check_funding_rates_db.py

def write_hourly_funding(db: Path, hours: int = 96, skip=(), rate=lambda i: 1e-5) -> None:
    base = (NOW // H) * H
    write_funding(db, [("BTC", base - i * H + 42, rate(i), None) for i in range(hours) if i not in skip])


def test_funding_check_pass_gap_fail_and_fail_on_warn(tmp_path):
    db = tmp_path / "funding_rates.db"
    write_hourly_funding(db)
    args = ["--db", db, "--lookback-hours", 72, "--max-gap-hours", 4, "--now-ms", NOW]
    ok = run_tool("check_funding_rates_db.py", *args)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["status"] == "OK" and report["summary"]["journal_mode"] == "wal"
    assert report["symbols"]["BTC"]["rows_lookback"] == 72
    gap_db = tmp_path / "gap.db"
    write_hourly_funding(gap_db, skip=range(10, 15))  # 6 h between two stored rates
    gap = run_tool("check_funding_rates_db.py", *args[:1], gap_db, *args[2:])
    assert gap.returncode == 2
    issues = json.loads(gap.stdout)["issues"]
    assert [(i["type"], i["severity"], i["hours"]) for i in issues] == [("gap", "FAIL", 6.0)]
    warn_db = tmp_path / "warn.db"
    write_hourly_funding(warn_db, rate=lambda i: 0.015 if i == 5 else 1e-5)
    spike = check_funding_db(warn_db, now=NOW)
    assert spike["status"] == "WARN"
    assert sorted(i["type"] for i in spike["issues"]) == ["abs_rate", "delta_rate", "delta_rate"]
    assert run_tool("check_funding_rates_db.py", "--db", warn_db, "--now-ms", NOW).returncode == 0
    assert run_tool("check_funding_rates_db.py", "--db", warn_db, "--now-ms", NOW, "--fail-on-warn").returncode == 1
    strict = run_tool("check_funding_rates_db.py", "--db", warn_db, "--now-ms", NOW, "--abs-rate-fail", 0.012)
    assert strict.returncode == 2


def test_funding_check_missing_db_and_symbol(tmp_path):
    missing = check_funding_db(tmp_path / "nope.db", now=NOW)
    assert missing["status"] == "FAIL" and "funding DB not found" in missing["errors"][0]
    db = tmp_path / "funding_rates.db"
    write_hourly_funding(db)
    report = check_funding_db(db, ["BTC", "ETH"], now=NOW)
    assert report["status"] == "FAIL" and report["symbols"]["ETH"]["status"] == "FAIL"
    assert report["symbols"]["BTC"]["status"] == "OK"


def test_tools_have_help():
    for name in ("check_candle_dbs.py", "partition_candles_db.py", "check_funding_rates_db.py",
                 "sync_universe_history.py", "fetch_funding_rates.py"):
        res = run_tool(name, "--help")
        assert res.returncode == 0 and "Usage" in res.stdout, name


# ------------------------------------------------------------------ exchange tools vs a local /info server

class InfoServer:
    """A real HTTP server on 127.0.0.1 answering the /info requests the SDK's Info client makes."""

    def __init__(self, universe, funding, throttle_first=0):
        import http.server
        import threading

        self.universe, self.funding, self.throttle_left, self.requests = universe, funding, throttle_first, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                status, reply = outer.answer(body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def answer(self, body):
        kind = body["type"]
        if kind == "spotMeta":
            return 200, {"tokens": [], "universe": []}
        if kind == "meta":
            return 200, {"universe": [{"name": n, "szDecimals": 2, "maxLeverage": 20, **extra}
                                      for n, extra in self.universe]}
        if kind == "fundingHistory":
            if self.throttle_left:
                self.throttle_left -= 1
                return 429, None
            hits = [r for r in self.funding if r["coin"] == body["coin"] and body["startTime"] <= r["time"]]
            return 200, hits[:500]
        return 400, {"error": kind}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_sync_universe_history_against_local_info_server(tmp_path):
    server = InfoServer([("BTC", {}), ("ETH", {}), ("kPEPE", {}), ("OLD", {"isDelisted": True})], [])
    db = tmp_path / "dbs" / "universe_history.db"
    try:
        res = run_tool("sync_universe_history.py", "--db", db, "--ts-ms", 5_000, "--base-url", server.url)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout) == {"db": str(db), "symbols": 3, "ts_ms": 5_000}
        run_tool("sync_universe_history.py", "--db", db, "--ts-ms", 2_000, "--base-url", server.url)
        server.universe = []
        empty = run_tool("sync_universe_history.py", "--db", db, "--ts-ms", 9_000, "--base-url", server.url)
        assert empty.returncode == 4 and "empty perp universe" in empty.stderr
    finally:
        server.close()
    from marketdata.universe import listings

    assert listings(db) == {"BTC": (2_000, 5_000), "ETH": (2_000, 5_000), "KPEPE": (2_000, 5_000)}
    down = run_tool("sync_universe_history.py", "--db", db, "--base-url", server.url, "--timeout-s", 1)
    assert down.returncode == 3 and "fetch from" in down.stderr and "Traceback" not in down.stderr


def test_fetch_funding_rates_pages_retries_and_is_idempotent(tmp_path):
    import time as _time

    now = int(_time.time() * 1000) // H * H
    funding = [{"coin": "BTC", "time": now - i * H + 7, "fundingRate": "0.0000125", "premium": "-0.0001"}
               for i in range(1, 24 * 30)][::-1]
    server = InfoServer([("BTC", {}), ("ETH", {})], funding, throttle_first=1)
    db = tmp_path / "funding_rates.db"
    try:
        res = run_tool("fetch_funding_rates.py", "--days", 30, "--db", db, "--symbols", "btc,ETH",
                       "--base-url", server.url)
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)["symbols"]
        assert out["BTC"]["inserted"] == len(funding) and out["ETH"]["inserted"] == 0
        btc_calls = [r for r in server.requests if r.get("coin") == "BTC"]
        assert len(btc_calls) == 4  # one 429 retried, then two pages (500 + 219), then an empty page
        again = run_tool("fetch_funding_rates.py", "--days", 30, "--db", db, "--symbols", "BTC",
                         "--base-url", server.url)
        assert json.loads(again.stdout)["symbols"]["BTC"] == {"fetched": 0, "inserted": 0,
                                                              "start_ms": funding[-1]["time"] + 1}
    finally:
        server.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), MIN(premium) FROM funding_rates").fetchone() == (len(funding), -0.0001)


def test_check_candle_dbs_as_of_end_of_data_judges_a_historical_db_fairly(shared_data, tmp_path):
    db = tmp_path / "candles_1h.db"
    db.write_bytes((shared_data / "candles_1h.db").read_bytes())
    now = run_tool("check_candle_dbs.py", "--db-glob", str(db))
    assert now.returncode == 2 and "stale_bars=" in now.stderr  # judged against today: years stale
    end = run_tool("check_candle_dbs.py", "--db-glob", str(db), "--as-of", "end-of-data")
    assert end.returncode == 0, end.stderr
    assert json.loads(end.stdout)["overall_status"] == "OK"
    bad = run_tool("check_candle_dbs.py", "--db-glob", str(db), "--as-of", "yesterday")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "ISO time" in bad.stderr
    both = run_tool("check_candle_dbs.py", "--db-glob", str(db), "--as-of", "end-of-data", "--now-ms", "1")
    assert both.returncode == 2 and "not both" in both.stderr
