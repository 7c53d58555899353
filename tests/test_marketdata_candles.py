"""Candle stores: multi-source merge, gaps kept as gaps, one-line errors, demo data."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from marketdata.candles import load_candles, load_market_data, resolve_sources, write_candles
from marketdata.demo import ensure_demo_data
from marketdata.intervals import MarketDataError, interval_ms, normalize_interval

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_5M = DATA / "candles_5m.db"
H = 3_600_000
T0 = 1_700_000_000_000 // H * H


def need_real_data() -> Path:
    if not REAL_5M.is_file():
        pytest.skip(f"../shared/data absent: {REAL_5M} not found")
    return REAL_5M


def bars(symbol: str, n: int, start: int = T0, step: int = H, price: float = 100.0) -> list[dict]:
    return [{"symbol": symbol, "t": start + i * step, "o": price + i, "h": price + i + 1,
             "l": price + i - 1, "c": price + i + 0.5, "v": 10.0 + i} for i in range(n)]


def assert_one_line_error(exc: pytest.ExceptionInfo, *needles: str) -> None:
    text = str(exc.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, text


def test_interval_names():
    assert interval_ms("5m") == 300_000
    assert interval_ms("1H") == interval_ms("1hr") == 3_600_000
    assert normalize_interval(" 15MIN ") == "15m"
    assert interval_ms("1d") == 86_400_000
    with pytest.raises(MarketDataError) as exc:
        interval_ms("7m")
    assert_one_line_error(exc, "unknown interval '7m'")


def test_write_is_an_upsert_and_db_is_wal(tmp_path):
    db = tmp_path / "candles_1h.db"
    write_candles(db, bars("BTC", 3), "1h")
    write_candles(db, [dict(bars("BTC", 1)[0], c=123.25, h=124.0)], "1H")
    df = load_candles(str(db), "1h")
    assert df.height == 3
    assert df["c"].to_list() == [123.25, 101.5, 102.5]
    assert df["t_close"][0] == T0 + H - 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_first_source_wins_and_overlap_is_returned_once(tmp_path):
    hot, part_dir = tmp_path / "candles_1h.db", tmp_path / "partitions" / "1h"
    write_candles(hot, bars("BTC", 10, start=T0 + 5 * H, price=200.0), "1h")  # t = 5..14
    write_candles(part_dir / "candles_1h_2023-11.db", bars("BTC", 8, price=100.0), "1h")  # t = 0..7
    df = load_candles(f"{hot},{part_dir}", "1h")
    assert df["t"].to_list() == [T0 + i * H for i in range(15)]
    assert df.filter(pl.col("t") == T0 + 5 * H)["o"][0] == 200.0  # hot DB listed first wins
    assert df.filter(pl.col("t") == T0 + 4 * H)["o"][0] == 104.0
    reversed_df = load_candles(f"{part_dir},{hot}", "1h")
    assert reversed_df.filter(pl.col("t") == T0 + 5 * H)["o"][0] == 105.0


def test_real_overlap_hot_db_plus_partition_dir(tmp_path):
    real = need_real_data()
    part_dir = tmp_path / "partitions" / "5m"
    part_dir.mkdir(parents=True)
    partition = part_dir / "candles_5m_2018-01.db"
    shutil.copy(real, partition)
    with sqlite3.connect(partition) as conn:
        conn.execute("UPDATE candles SET o = o * 2, h = h * 2, l = l * 2, c = c * 2 WHERE symbol='ETH'")
    alone = load_market_data(str(real), "5m")
    merged = load_market_data(f"{real},{part_dir}", "5m")
    assert merged.symbols == alone.symbols
    np.testing.assert_array_equal(merged.valid, alone.valid)
    np.testing.assert_array_equal(merged.close, alone.close)  # first source's ETH closes, not doubled


def test_real_gap_stays_masked():
    real = need_real_data()
    md = load_market_data(str(real), "5m")
    with sqlite3.connect(real) as conn:
        counts = dict(conn.execute("SELECT symbol, COUNT(*) FROM candles WHERE interval='5m' GROUP BY symbol"))
    assert md.symbols == sorted(counts)
    for i, symbol in enumerate(md.symbols):
        assert md.valid[i].sum() == counts[symbol]
    ada, eth = md.symbol_index("ADA"), md.symbol_index("ETH")
    assert md.valid[eth].sum() - md.valid[ada].sum() == 40
    holes = ~md.valid[ada]
    assert np.isnan(md.close[ada, holes]).all() and np.isnan(md.volume[ada, holes]).all()
    assert np.isfinite(md.close[ada, ~holes]).all()
    assert (np.diff(md.times) == 300_000).all()
    assert md.times.dtype == np.int64 and md.close.dtype == np.float64


def test_real_load_is_fast():
    real = need_real_data()
    load_market_data(str(real), "5m")
    started = time.perf_counter()
    md = load_market_data(str(real), "5m")
    elapsed = time.perf_counter() - started
    assert md.close.shape == (6, 5760)
    assert elapsed < 1.0, f"{elapsed:.3f} s"


def test_symbol_and_time_filters(tmp_path):
    db = tmp_path / "c.db"
    write_candles(db, bars("BTC", 10) + bars("ETH", 10, price=5.0), "1h")
    md = load_market_data(str(db), "1h", symbols=["ETH"], start_ms=T0 + 2 * H, end_ms=T0 + 5 * H)
    assert md.symbols == ["ETH"]
    assert md.times.tolist() == [T0 + i * H for i in range(2, 6)]
    assert md.open[0].tolist() == [7.0, 8.0, 9.0, 10.0]


@pytest.mark.parametrize("case", ["missing", "no_table", "no_rows", "unknown_symbol", "start_after_end",
                                  "null_price", "negative_price", "high_below_low"])
def test_bad_inputs_give_one_line_errors(tmp_path, case):
    db = tmp_path / "candles_1h.db"
    write_candles(db, bars("BTC", 5), "1h")
    kwargs, needles = {}, []
    if case == "missing":
        db, needles = tmp_path / "nope.db", ["candles source not found", "nope.db"]
    elif case == "no_table":
        db = tmp_path / "empty.db"
        sqlite3.connect(db).execute("CREATE TABLE other(x)").connection.close()
        needles = ["no candles table in", "empty.db"]
    elif case == "no_rows":
        kwargs["interval"], needles = "5m", ["no 5m candles in", str(db)]
    elif case == "unknown_symbol":
        kwargs["symbols"], needles = ["FOO", "BTC"], ["unknown symbol(s) FOO: not in", str(db)]
    elif case == "start_after_end":
        kwargs.update(start_ms=T0 + 5 * H, end_ms=T0)
        needles = ["is after end"]
    else:
        column, value = {"null_price": ("c", None), "negative_price": ("o", -1.0),
                         "high_below_low": ("h", 1.0)}[case]
        with sqlite3.connect(db) as conn:
            conn.execute(f"UPDATE candles SET {column}=? WHERE t=?", (value, T0 + 2 * H))
        needles = ["corrupt candle row:", str(db), "BTC", f"t={T0 + 2 * H}"]
    with pytest.raises(MarketDataError) as exc:
        load_market_data(str(db), kwargs.pop("interval", "1h"), **kwargs)
    assert_one_line_error(exc, *needles)


@pytest.mark.parametrize(("column", "value", "shown"), [
    ("c", "abc", "column c is 'text' ('abc')"), ("o", b"xx", "column o is 'blob' (X'7878')"),
    ("v", "n/a", "column v is 'text' ('n/a')"), ("t_close", "soon", "column t_close is 'text' ('soon')")])
def test_non_numeric_cell_is_one_line_error_not_a_polars_crash(tmp_path, column, value, shown):
    db = tmp_path / "candles_1h.db"
    write_candles(db, bars("BTC", 5) + bars("ETH", 5), "1h")
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE candles SET {column}=? WHERE symbol='ETH' AND t=?", (value, T0 + 3 * H))
    for kwargs in ({}, {"symbols": ["ETH"], "start_ms": T0 + H}):
        with pytest.raises(MarketDataError) as exc:
            load_market_data(str(db), "1h", **kwargs)
        assert_one_line_error(exc, f"corrupt candle row: {db} ETH 2023-11-15T01:00:00Z (t={T0 + 3 * H}): {shown}")
    assert load_candles(str(db), "1h", symbols=["BTC"]).height == 5  # the clean symbol still loads
    assert load_candles(str(db), "1h", end_ms=T0 + 2 * H).height == 6  # and so does a window before it


def test_resolve_sources_sorts_partition_files(tmp_path):
    part = tmp_path / "p"
    for month in ("2024-02", "2023-12", "2024-01"):
        write_candles(part / f"candles_5m_{month}.db", bars("BTC", 1, step=300_000), "5m")
    (part / "notes.txt").write_text("ignored")
    names = [p.name for p in resolve_sources(f" {part} ,")]
    assert names == ["candles_5m_2023-12.db", "candles_5m_2024-01.db", "candles_5m_2024-02.db"]


def test_demo_data_is_deterministic_realistic_and_labelled(tmp_path):
    started = time.perf_counter()
    first = ensure_demo_data(tmp_path / "a")
    elapsed = time.perf_counter() - started
    second = ensure_demo_data(tmp_path / "b")
    assert elapsed < 10.0
    assert ensure_demo_data(tmp_path / "a") == first  # idempotent
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".demo-build")]
    for iv, days in (("1h", 240), ("5m", 45)):
        a = load_market_data(str(first[f"candles_{iv}"]), iv)
        b = load_market_data(str(second[f"candles_{iv}"]), iv)
        for field in ("times", "open", "high", "low", "close", "volume", "valid"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert len(a.symbols) >= 20 and {"BTC", "ETH"} <= set(a.symbols)
        assert a.nbar == days * 86_400_000 // interval_ms(iv)
        assert (~a.valid).sum() > 0, "demo data must contain gaps"
        assert a.valid[a.symbol_index("BTC")].all()
        first_close = np.array([a.close[i][a.valid[i]][0] for i in range(a.nsym)])
        assert first_close.min() < 0.1 and first_close.max() > 50_000
        hi, lo = a.high[a.valid], a.low[a.valid]
        assert (hi >= np.maximum(a.open[a.valid], a.close[a.valid])).all() and (lo > 0).all()
    btc = load_market_data(str(first["candles_1h"]), "1h", symbols=["BTC"])
    ret = np.abs(np.diff(np.log(btc.close[0])))
    assert np.corrcoef(ret, btc.volume[0, 1:])[0, 1] > 0.3  # volume follows |return|
    assert np.corrcoef(ret[1:], ret[:-1])[0, 1] > 0.05  # volatility clusters
    with sqlite3.connect(first["funding"]) as conn:
        assert dict(conn.execute("SELECT key, value FROM demo_meta"))["synthetic"] == "true"
        rates = np.array([r[0] for r in conn.execute("SELECT funding_rate FROM funding_rates WHERE symbol='BTC' ORDER BY time")])
    assert rates.size == 240 * 24
    assert abs(rates.mean() - 1e-5) < 2e-5 and 1e-5 < rates.std() < 6e-5
    assert np.corrcoef(rates[1:], rates[:-1])[0, 1] > 0.8
