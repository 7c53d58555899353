"""Poisoned candles (issue 10, item 2): one rule for every reader, one line naming the row.

Bad values are written into real SQLite files with sqlite3 (float('inf') is stored as REAL Inf,
NaN as NULL), then read through load_candles / load_market_data, check_candle_dbs and the
`backtester replay` / `sweep` CLIs as subprocesses.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketdata.candles import find_corrupt_rows, load_candles, load_market_data, write_candles
from marketdata.checks import check_candle_dbs
from marketdata.hl_candles import parse_candles
from marketdata.intervals import MarketDataError
from marketdata.sanity import (
    MAX_PRICE_ENV,
    MAX_T_MS,
    MIN_T_MS,
    BadCandle,
    bad_row_line,
    candle_problem,
    max_candle_price,
    problem_sql,
)
from marketdata.sqlite_store import CANDLES_DDL

REPO = Path(__file__).resolve().parents[1]
H = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
BAD_T = T0 + 27 * H  # 2024-01-02T03:00:00Z
BAD_ISO = "2024-01-02T03:00:00Z"
INF = float("inf")


def bars(symbol: str, n: int = 60, price: float = 100.0) -> list[dict]:
    """A small random walk whose every bar is sane (o, c inside [l, h])."""
    rng = np.random.default_rng(len(symbol))
    close = price * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    rows = []
    for i, c in enumerate(close):
        o = close[i - 1] if i else price
        rows.append({"symbol": symbol, "t": T0 + i * H, "o": float(o), "h": float(max(o, c) * 1.004),
                     "l": float(min(o, c) * 0.996), "c": float(c), "v": 10.0 + i})
    return rows


def make_db(path: Path, n: int = 60) -> Path:
    write_candles(path, bars("BTC", n, 40_000.0) + bars("ETH", n, 2_000.0), "1h")
    return path


def poison(db: Path, sql: str, *args) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute(sql, args).rowcount == 1


def assert_one_line(text: str, *needles: str) -> None:
    assert "\n" not in text.strip(), text
    for needle in needles:
        assert needle in text, text


# ------------------------------------------------------------------ the rule for one bar

SANE = (T0, 100.0, 101.0, 99.0, 100.5, 5.0)


@pytest.mark.parametrize(("change", "problem"), [
    ({1: INF}, "o=inf is not finite"), ({2: INF}, "h=inf is not finite"), ({3: -INF}, "l=-inf is not finite"),
    ({4: math.nan}, "c=nan is not finite"), ({5: INF}, "v=inf is not finite"), ({5: None}, "column v is NULL"),
    ({4: 1e300}, "c=1e+300 is above the price bound 1e+07"), ({4: 0.0}, "c=0.0 <= 0"),
    ({5: -1.0}, "v=-1.0 < 0"), ({2: 98.0}, "h=98.0 < l=99.0"), ({4: 101.5}, "c=101.5 is outside [l=99.0, h=101.0]"),
    ({1: 98.5}, "o=98.5 is outside [l=99.0, h=101.0]"), ({0: -H}, f"t={-H} is not positive"),
    ({0: 0}, "t=0 is not positive"), ({0: 1_700_000_000}, "t=1700000000 is before 2009-01-01T00:00:00Z"),
    ({0: MIN_T_MS - H}, "is before 2009"), ({0: MAX_T_MS}, "is not before 2100-01-01T00:00:00Z"),
    ({4: "100.5"}, "column c is 'str' ('100.5')"), ({1: True}, "column o is 'bool'"),
])
def test_candle_problem_names_the_first_broken_rule(change, problem):
    row = list(SANE)
    for i, value in change.items():
        row[i] = value
    assert candle_problem(*SANE) is None
    assert problem in (candle_problem(*row) or "")


def test_candle_problem_edges_are_sane():
    assert candle_problem(MIN_T_MS, 5e-8, 5e-8, 5e-8, 5e-8, 0.0) is None  # flat bar, tiny BTC-quoted price
    assert candle_problem(MAX_T_MS - H, 1e7, 1e7, 1e7, 1e7, 0) is None  # the bound itself is allowed
    assert candle_problem(T0, 10, 12, 9, 11, 1, t_close_ms=T0 + H - 1) is None
    assert candle_problem(T0, 10, 12, 9, 11, 1, t_close_ms=T0 - 1) == f"t_close={T0 - 1} < t"


def test_price_bound_knob(monkeypatch):
    monkeypatch.delenv(MAX_PRICE_ENV, raising=False)
    assert max_candle_price() == 1e7
    monkeypatch.setenv(MAX_PRICE_ENV, "1e5")
    assert max_candle_price() == 1e5
    assert "above the price bound 100000" in candle_problem(T0, 2e5, 2e5, 2e5, 2e5, 1.0)
    assert candle_problem(T0, 2e5, 2e5, 2e5, 2e5, 1.0, max_price=1e6) is None  # the argument wins
    for bad in ("nan", "inf", "-1", "0", "lots"):
        monkeypatch.setenv(MAX_PRICE_ENV, bad)
        with pytest.raises(MarketDataError, match=MAX_PRICE_ENV) as exc:
            candle_problem(*SANE)
        assert_one_line(str(exc.value))


# The SQL the stores use and the Python the trader uses must refuse exactly the same rows.
_numbers = st.one_of(
    st.floats(min_value=1e-9, max_value=2e7), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 0.0, -0.0, -1.0, 1e300, INF, -INF, math.nan, None, 1e7, 99.0, 101.0, 100.0]),
    st.integers(-5, 10**8))
_times = st.one_of(st.integers(-10**13, 5 * 10**12), st.sampled_from([0, -1, MIN_T_MS - 1, MIN_T_MS, MAX_T_MS - 1, MAX_T_MS]))


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(t=_times, o=_numbers, h=_numbers, low=_numbers, c=_numbers, v=_numbers)
def test_sql_and_python_rules_agree(t, o, h, low, c, v):
    conn = sqlite3.connect(":memory:")
    conn.executescript(CANDLES_DDL)
    conn.execute("INSERT INTO candles (symbol, interval, t, t_close, o, h, l, c, v) VALUES ('X', '1h', ?, ?, ?, ?, ?, ?, ?)",
                 (t, t + H - 1, o, h, low, c, v))
    (sql,) = conn.execute(f"SELECT {problem_sql()} FROM candles").fetchone()
    # SQLite stores NaN as NULL: judge what the store holds
    stored = conn.execute("SELECT t, o, h, l, c, v FROM candles").fetchone()
    python = candle_problem(*stored, t_close_ms=t + H - 1)
    assert (sql is None) == (python is None), (stored, sql, python)
    if sql is not None:
        assert _column(sql) == _column(python), (stored, sql, python)


def _column(problem: str) -> str:
    return problem.split()[1] if problem.startswith("column ") else problem.split("=")[0]


# ------------------------------------------------------------------ readers on real SQLite files

POISONS = {
    "inf_high": ("UPDATE candles SET h=? WHERE symbol='BTC' AND t=?", (INF, BAD_T), "h=inf is not finite"),
    "minus_inf_low": ("UPDATE candles SET l=? WHERE symbol='BTC' AND t=?", (-INF, BAD_T), "l=-inf is not finite"),
    "nan_close_stored_as_null": ("UPDATE candles SET c=? WHERE symbol='BTC' AND t=?", (math.nan, BAD_T),
                                 "column c is NULL"),
    "huge_close": ("UPDATE candles SET c=? WHERE symbol='BTC' AND t=?", (1e300, BAD_T),
                   "c=1.0e+300 is above the price bound 1e+07"),
    "close_above_high": ("UPDATE candles SET c=h*1.5 WHERE symbol='BTC' AND t=?", (BAD_T,), "is outside [l="),
    "open_below_low": ("UPDATE candles SET o=l/2 WHERE symbol='BTC' AND t=?", (BAD_T,), "is outside [l="),
    "inf_volume": ("UPDATE candles SET v=? WHERE symbol='BTC' AND t=?", (INF, BAD_T), "v=inf is not finite"),
    "negative_volume": ("UPDATE candles SET v=-3 WHERE symbol='BTC' AND t=?", (BAD_T,), "v=-3.0 < 0"),
}


@pytest.mark.parametrize("case", sorted(POISONS))
def test_every_poisoned_value_is_refused_naming_db_symbol_time_and_column(tmp_path, case):
    db = make_db(tmp_path / "candles_1h.db")
    sql, args, problem = POISONS[case]
    poison(db, sql, *args)
    for load in (load_candles, load_market_data):
        with pytest.raises(MarketDataError) as exc:
            load(str(db), "1h")
        assert_one_line(str(exc.value), f"corrupt candle row: {db} BTC {BAD_ISO} (t={BAD_T}): ", problem)
    assert load_candles(str(db), "1h", symbols=["ETH"]).height == 60  # the clean symbol still loads
    assert load_candles(str(db), "1h", end_ms=BAD_T - H).height == 2 * 27  # and so does the window before it


@pytest.mark.parametrize(("t", "iso", "problem"), [
    (-H, "1969-12-31T23:00:00Z", f"t={-H} is not positive"),
    (0, "1970-01-01T00:00:00Z", "t=0 is not positive"),
    (1_230_764_400_000, "2008-12-31T23:00:00Z", "t=1230764400000 is before 2009-01-01T00:00:00Z"),
    (MAX_T_MS, "2100-01-01T00:00:00Z", f"t={MAX_T_MS} is not before 2100-01-01T00:00:00Z"),
])
def test_implausible_timestamps_are_refused(tmp_path, t, iso, problem):
    db = make_db(tmp_path / "candles_1h.db")
    poison(db, "UPDATE candles SET t=?, t_close=? WHERE symbol='ETH' AND t=?", t, t + H - 1, T0)
    with pytest.raises(MarketDataError) as exc:
        load_market_data(str(db), "1h")
    assert_one_line(str(exc.value), f"corrupt candle row: {db} ETH {iso} (t={t}): {problem}")


def test_price_bound_is_configurable_for_readers(tmp_path, monkeypatch):
    db = make_db(tmp_path / "candles_1h.db")
    monkeypatch.delenv(MAX_PRICE_ENV, raising=False)
    assert load_candles(str(db), "1h").height == 120
    with pytest.raises(MarketDataError, match=r"BTC .*above the price bound 30000"):
        load_candles(str(db), "1h", max_price=30_000)
    monkeypatch.setenv(MAX_PRICE_ENV, "30000")
    with pytest.raises(MarketDataError, match="above the price bound 30000 .AI_QUANT_MAX_CANDLE_PRICE"):
        load_market_data(str(db), "1h")
    assert load_candles(str(db), "1h", max_price=1e6).height == 120
    monkeypatch.setenv(MAX_PRICE_ENV, "nan")
    with pytest.raises(MarketDataError, match="AI_QUANT_MAX_CANDLE_PRICE='nan' must be a finite number > 0"):
        load_candles(str(db), "1h")


def _table_without_key(path: Path, rows: list[tuple]) -> Path:
    """A merged/foreign candle DB whose table has no primary key, so one bar can appear twice."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE candles (symbol TEXT, interval TEXT, t INTEGER, t_close INTEGER, "
                     "o REAL, h REAL, l REAL, c REAL, v REAL, n INTEGER, updated_at TEXT)")
        conn.executemany("INSERT INTO candles (symbol, interval, t, t_close, o, h, l, c, v) VALUES (?,?,?,?,?,?,?,?,?)",
                         rows)
    return path


def _row(t, c, symbol="BTC"):
    return (symbol, "1h", t, t + H - 1, 100.0, 102.0, 99.0, c, 1.0)


def test_duplicates_in_one_db_identical_merge_conflicting_refused(tmp_path):
    same = _table_without_key(tmp_path / "same.db", [_row(T0 + i * H, 100.5) for i in range(5)] + [_row(T0 + 2 * H, 100.5)])
    df = load_candles(str(same), "1h")
    assert df["t"].to_list() == [T0 + i * H for i in range(5)]
    clash = _table_without_key(tmp_path / "clash.db", [_row(T0 + i * H, 100.5) for i in range(30)]
                               + [_row(BAD_T, 101.5)])
    with pytest.raises(MarketDataError) as exc:
        load_market_data(str(clash), "1h")
    assert_one_line(str(exc.value), f"corrupt candle row: {clash} BTC {BAD_ISO} (t={BAD_T}): ",
                    "2 conflicting rows for one time (c=100.5 vs 101.5)")
    report = check_candle_dbs(str(clash), 24, now=T0 + 31 * H)
    dupes = report["dbs"][0]["intervals"][0]["duplicates"]
    assert report["overall_status"] == "FAIL" and dupes["conflicting_keys"] == 1


def test_conflicting_duplicates_across_sources_first_source_wins(tmp_path):
    hot = make_db(tmp_path / "candles_1h.db")
    part_dir = tmp_path / "partitions" / "1h"
    stale = [dict(r, o=r["o"] * 1.01, h=r["h"] * 1.01, l=r["l"] * 1.01, c=r["c"] * 1.01) for r in bars("BTC", 30, 40_000.0)]
    write_candles(part_dir / "candles_1h_2024-01.db", stale, "1h")
    alone, merged = load_candles(str(hot), "1h"), load_candles(f"{hot},{part_dir}", "1h")
    assert merged.equals(alone)
    reverse = load_candles(f"{part_dir},{hot}", "1h")
    assert reverse.filter(reverse["symbol"] == "BTC")["c"][0] == pytest.approx(stale[0]["c"])
    # a shadowed row is still read: a poisoned archive is refused even where the hot DB wins
    poison(part_dir / "candles_1h_2024-01.db", "UPDATE candles SET h=? WHERE t=?", INF, BAD_T)
    with pytest.raises(MarketDataError, match=r"candles_1h_2024-01.db BTC 2024-01-02T03:00:00Z .*h=inf"):
        load_candles(f"{hot},{part_dir}", "1h")


def test_skipped_mode_leaves_poisoned_bars_out_for_the_trader(tmp_path):
    db = make_db(tmp_path / "candles_1h.db")
    poison(db, "UPDATE candles SET h=? WHERE symbol='BTC' AND t=?", INF, BAD_T)
    poison(db, "UPDATE candles SET c=h*2 WHERE symbol='ETH' AND t=?", T0 + 5 * H)
    with pytest.raises(MarketDataError) as strict:
        load_market_data(str(db), "1h")
    skipped: list[BadCandle] = []
    md = load_market_data(str(db), "1h", skipped=skipped)
    assert [(b.symbol, b.t) for b in sorted(skipped, key=lambda b: b.symbol)] == [("BTC", BAD_T), ("ETH", T0 + 5 * H)]
    btc, eth = md.symbol_index("BTC"), md.symbol_index("ETH")
    assert not md.valid[btc, 27] and not md.valid[eth, 5] and md.valid.sum() == 118
    assert np.isnan(md.high[btc, 27]) and np.isfinite(md.high[md.valid]).all()
    assert next(b for b in skipped if b.symbol == "BTC").line() == str(strict.value)


def test_find_corrupt_rows_counts_every_bad_row(tmp_path):
    db = make_db(tmp_path / "candles_1h.db")
    poison(db, "UPDATE candles SET h=? WHERE symbol='BTC' AND t=?", INF, BAD_T)
    poison(db, "UPDATE candles SET c=? WHERE symbol='ETH' AND t=?", 1e300, T0)
    with sqlite3.connect(db) as conn:
        count, rows = find_corrupt_rows(conn, "interval=?", ["1h"])
    assert count == 2
    assert rows == [("BTC", BAD_T, "h=inf is not finite"),
                    ("ETH", T0, "c=1.0e+300 is above the price bound 1e+07 (AI_QUANT_MAX_CANDLE_PRICE)")]


def test_exchange_candles_breaking_the_rule_are_never_written():
    good = {"t": BAD_T, "T": BAD_T + H - 1, "s": "BTC", "i": "1h", "o": "10", "h": "12", "l": "9", "c": "11", "v": "1"}
    bad = [dict(good, h="Infinity"), dict(good, c="13"), dict(good, o="1e300", h="1e300"), dict(good, t=-H, T=-1),
           dict(good, v="-1"), dict(good, T=BAD_T - 1)]
    rows, skipped = parse_candles([good, *bad], "BTC", "1h")
    assert [r["t"] for r in rows] == [BAD_T] and skipped == len(bad)


# ------------------------------------------------------------------ check_candle_dbs reports the same rows

def run_tool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_check_candle_dbs_counts_and_prints_the_rows_readers_refuse(tmp_path):
    db = make_db(tmp_path / "candles_1h.db")
    clean = run_tool("tools/check_candle_dbs.py", "--db-glob", db, "--now-ms", T0 + 60 * H + 10_000)
    assert clean.returncode == 0, clean.stderr
    poison(db, "UPDATE candles SET h=? WHERE symbol='BTC' AND t=?", INF, BAD_T)  # long before the 24 h window
    poison(db, "UPDATE candles SET c=h*1.5 WHERE symbol='ETH' AND t=?", T0 + 58 * H)
    with pytest.raises(MarketDataError) as exc:
        load_candles(str(db), "1h")
    res = run_tool("tools/check_candle_dbs.py", "--db-glob", db, "--now-ms", T0 + 60 * H + 10_000)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "bad_rows=2" in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("corrupt candle row:")]
    assert len(lines) == 2 and lines[0] == str(exc.value)
    assert lines[1].startswith(f"corrupt candle row: {db} ETH 2024-01-03T10:00:00Z (t={T0 + 58 * H}): c=")
    summary = json.loads(res.stdout)["dbs"][0]["intervals"][0]["summary"]
    assert summary["bad_rows"] == 2 and summary["status"] == "FAIL"
    tight = run_tool("tools/check_candle_dbs.py", "--db-glob", tmp_path / "none_*.db", "--max-price", "nan")
    assert tight.returncode == 2 and "must be a finite number > 0" in tight.stderr and "Traceback" not in tight.stderr


# ------------------------------------------------------------------ the CLIs: one line, non-zero, no traceback

def test_backtester_replay_and_sweep_refuse_one_inf_high_in_one_line(tmp_path):
    db = make_db(tmp_path / "candles_1h.db", n=300)
    poison(db, "UPDATE candles SET h=? WHERE symbol='BTC' AND t=?", INF, BAD_T)
    cfg = tmp_path / "strategy.yaml"
    cfg.write_text((REPO / "config" / "strategy_overrides.yaml.example").read_text())
    expected = f"corrupt candle row: {db} BTC {BAD_ISO} (t={BAD_T}): h=inf is not finite"
    replay = run_tool("-m", "tools.backtester", "replay", "--candles-db", db, "--interval", "1h", "--config", cfg)
    lines = [ln for ln in replay.stderr.splitlines() if ln.strip()]
    assert replay.returncode != 0 and len(lines) == 1 and expected in lines[0], replay.stderr
    sweep = run_tool("-m", "tools.backtester", "sweep", "--sweep-spec", REPO / "config" / "sweeps" / "smoke.yaml",
                     "--candles-db", db, "--interval", "1h", "--config", cfg, "--backend", "cpu",
                     "--output", tmp_path / "out.jsonl", "--no-progress")
    assert sweep.returncode != 0 and "Traceback" not in sweep.stderr, sweep.stderr
    assert [ln for ln in sweep.stderr.splitlines() if "corrupt candle row" in ln] == [f"error: {expected}"]
    assert not (tmp_path / "out.jsonl").exists()


# ------------------------------------------------------------------ no false positives on real data

def test_real_data_loads_and_checks_clean(shared_data, tmp_path):
    dbs = {"candles_5m.db": "5m", "candles_15m.db": "15m", "candles_1h.db": "1h", "hyperliquid/candles_1h.db": "1h"}
    for name, iv in dbs.items():
        skipped: list[BadCandle] = []
        md = load_market_data(str(shared_data / name), iv, skipped=skipped)
        assert skipped == [] and np.isfinite(md.close[md.valid]).all()
        with sqlite3.connect(shared_data / name) as conn:
            assert find_corrupt_rows(conn, "1=1", [])[0] == 0
    copy = tmp_path / "candles_5m.db"
    shutil.copy(shared_data / "candles_5m.db", copy)
    report = check_candle_dbs(str(copy), 24 * 30, now=1517288100000 + 10_000, gap_fail_bars=10**6,
                              missing_fail_bars=10**6, missing_warn_bars=10**6, gap_warn_bars=10**6)
    assert report["dbs"][0]["intervals"][0]["summary"]["bad_rows"] == 0, report


def test_bad_row_line_survives_unrepresentable_times():
    assert bad_row_line("/x.db", "BTC", "x", "column t is 'text' ('x')") == \
        "corrupt candle row: /x.db BTC ? (t=x): column t is 'text' ('x')"
    assert "? (t=99999999999999999999)" in bad_row_line("/x.db", "BTC", 99999999999999999999, "p")


# ------------------------------------------------------------------ funding, the other market input of every engine

@pytest.mark.parametrize(("rate", "problem"), [
    (INF, "funding_rate=inf is not finite"), (-INF, "funding_rate=-inf is not finite"),
    (5.0, "funding_rate=5.0 is beyond +-1 per event"), ("abc", "column funding_rate is text ('abc')"),
    (None, "column funding_rate is NULL")])
def test_poisoned_funding_rate_is_refused_in_one_line(tmp_path, rate, problem):
    from marketdata.funding import funding_matrix, write_funding

    db = make_db(tmp_path / "candles_1h.db")
    funding = tmp_path / "funding_rates.db"
    write_funding(funding, [("BTC", T0 + i * H, 1e-5, None) for i in range(60)])
    md = load_market_data(str(db), "1h")
    assert funding_matrix(funding, md)[md.symbol_index("BTC")].sum() == pytest.approx(60e-5)
    with sqlite3.connect(funding) as conn:
        if rate is None:  # the shipped table says NOT NULL: a foreign copy without the constraint
            conn.execute("ALTER TABLE funding_rates RENAME TO shipped")
            conn.execute("CREATE TABLE funding_rates AS SELECT * FROM shipped")
        conn.execute("UPDATE funding_rates SET funding_rate=? WHERE time=?", (rate, BAD_T))
    with pytest.raises(MarketDataError) as exc:
        funding_matrix(funding, md)
    assert_one_line(str(exc.value), f"corrupt funding row: {funding} BTC {BAD_ISO} (time={BAD_T}): {problem}")


def test_another_schema_is_one_line_for_readers_and_the_check(tmp_path):
    from marketdata.funding import load_funding

    db = tmp_path / "candles_1h.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE candles (symbol TEXT, t INTEGER, price REAL)")
        conn.execute("CREATE TABLE funding_rates (symbol TEXT, rate REAL)")
    with pytest.raises(MarketDataError) as exc:
        load_candles(str(db), "1h")
    assert_one_line(str(exc.value), f"{db}: candles table lacks column(s) interval, t_close, o, h, l, c, v")
    with pytest.raises(MarketDataError, match="cannot read funding rates from .*no such column"):
        load_funding(db)
    res = run_tool("tools/check_candle_dbs.py", "--db-glob", db)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "candles table lacks column(s)" in res.stderr
