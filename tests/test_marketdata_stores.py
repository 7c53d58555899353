"""Funding and universe stores, and parsing of real Hyperliquid replies."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from marketdata.candles import load_market_data, write_candles
from marketdata.funding import funding_matrix, load_funding, write_funding
from marketdata.hl_fetch import call_with_retry, fetch_funding_pages, is_retryable, parse_funding_rows
from marketdata.intervals import MarketDataError
from marketdata.universe import apply_snapshot, listings, universe_filter

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
H = 3_600_000
T0 = 1_700_000_000_000 // H * H


def make_md(tmp_path, interval="1h", step=H, n=6):
    db = tmp_path / f"candles_{interval}.db"
    rows = [{"symbol": s, "t": T0 + i * step, "o": 1.0, "h": 2.0, "l": 0.5, "c": 1.5, "v": 1.0}
            for s in ("BTC", "ETH") for i in range(n)]
    write_candles(db, rows, interval)
    return load_market_data(str(db), interval)


def test_funding_matrix_sums_rates_inside_each_bar(tmp_path):
    fdb = tmp_path / "funding_rates.db"
    inserted = write_funding(fdb, [
        ("BTC", T0 + 12, 1e-5, None), ("BTC", T0 + H + 7, 2e-5, 1e-6), ("ETH", T0 + 3 * H, -4e-5, None),
        ("BTC", T0 - 1, 9.0, None), ("BTC", T0 + 6 * H, 9.0, None), ("SOL", T0, 9.0, None),
    ])
    assert inserted == 6
    assert write_funding(fdb, [{"symbol": "BTC", "time": T0 + 12, "funding_rate": 5.0}]) == 0  # ignored
    md = make_md(tmp_path)
    fm = funding_matrix(fdb, md)
    expected = np.zeros((2, 6))
    expected[0, 0], expected[0, 1], expected[1, 3] = 1e-5, 2e-5, -4e-5
    np.testing.assert_array_equal(fm, expected)
    md5 = make_md(tmp_path, "5m", 300_000, n=24)  # two hours of 5m bars: funding lands in one bar each
    fm5 = funding_matrix(fdb, md5)
    assert fm5[0, 0] == 1e-5 and fm5[0, 12] == 2e-5 and fm5.sum() == pytest.approx(3e-5)
    np.testing.assert_array_equal(funding_matrix(None, md), np.zeros((2, 6)))
    with pytest.raises(MarketDataError, match="funding DB not found: .*nope.db"):
        funding_matrix(tmp_path / "nope.db", md)
    df = load_funding(fdb, ["BTC"], T0, T0 + 2 * H)
    assert df["time"].to_list() == [T0 + 12, T0 + H + 7]
    assert df["premium"].to_list() == [None, 1e-6]


def test_funding_matrix_on_real_hyperliquid_btc():
    candles, funding = DATA / "hyperliquid" / "candles_1h.db", DATA / "hyperliquid" / "funding_rates.db"
    if not funding.is_file():
        pytest.skip(f"../shared/data absent: {funding} not found")
    md = load_market_data(str(candles), "1h")
    fm = funding_matrix(funding, md)
    with sqlite3.connect(funding) as conn:
        total, count = conn.execute("SELECT SUM(funding_rate), COUNT(*) FROM funding_rates").fetchone()
    assert fm.shape == (1, 1832)
    assert fm.sum() == pytest.approx(total, rel=1e-12)
    assert (fm != 0).sum() <= count


def test_universe_bounds_are_idempotent_and_order_independent(tmp_path):
    snaps = [(3_000, ["btc", "ETH ", "", "SOL"]), (1_000, ["BTC", "ETH", "ETH"]), (2_000, ["BTC", "DOGE"])]
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    for ts, names in snaps:
        apply_snapshot(a, ts, names)
    for ts, names in reversed(snaps + snaps):
        apply_snapshot(b, ts, names)
    expected = {"BTC": (1_000, 3_000), "ETH": (1_000, 3_000), "SOL": (3_000, 3_000), "DOGE": (2_000, 2_000)}
    assert listings(a) == listings(b) == expected
    with sqlite3.connect(b) as conn:
        assert conn.execute("SELECT COUNT(*) FROM universe_snapshots").fetchone()[0] == 7
    assert universe_filter(["BTC", "DOGE", "SOL", "XRP"], a, 0, 1_500) == ["BTC"]
    assert universe_filter(["BTC", "DOGE", "SOL", "XRP"], a, 2_000, 2_500) == ["BTC", "DOGE"]
    assert universe_filter(["sol"], a, 3_000, 9_000) == ["sol"]
    with pytest.raises(MarketDataError, match="universe DB not found"):
        universe_filter(["BTC"], tmp_path / "missing.db", 0, 1)


def recorded_funding_reply() -> list[dict]:
    path = DATA / "hl_protocol" / "test_get_funding_history[None].yaml"
    if not path.is_file():
        pytest.skip(f"../shared/data absent: {path} not found")
    text = path.read_text()
    match = re.search(r"string: '(\[\{\"coin\":\"BTC\",\"fundingRate\".*?\])'", text, re.S)
    return json.loads(match.group(1).replace("''", "'"))


def test_parse_real_funding_reply_and_insert_idempotently(tmp_path):
    reply = recorded_funding_reply()
    rows = parse_funding_rows("BTC", reply)
    assert len(rows) == len(reply) > 100
    assert rows[0] == ("BTC", 1683849600048, -0.00061334, -0.00091334)
    db = tmp_path / "funding_rates.db"
    assert write_funding(db, rows) == len(rows)
    assert write_funding(db, rows) == 0
    assert load_funding(db).height == len(rows)


def test_parse_skips_bad_rows_and_premium_is_optional():
    rows = parse_funding_rows("ETH", [
        {"time": 10, "fundingRate": "0.0001"}, {"time": 11, "fundingRate": "nan"}, {"time": "x", "fundingRate": "1"},
        {"fundingRate": "0.1"}, "junk", {"time": 12, "fundingRate": "-2e-5", "premium": "bad"},
    ])
    assert rows == [("ETH", 10, 0.0001, None), ("ETH", 12, -2e-5, None)]
    assert parse_funding_rows("ETH", {"error": "x"}) == []


class HttpError(Exception):
    def __init__(self, status_code, message=""):
        super().__init__(status_code, message)
        self.status_code = status_code


def test_retry_only_429_and_503():
    assert is_retryable(HttpError(429)) and is_retryable(HttpError(503))
    assert is_retryable(Exception("server said 503 Service Unavailable"))
    assert not is_retryable(Exception("error 5030")) and not is_retryable(HttpError(500))
    sleeps, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise HttpError(429)
        return "ok"

    assert call_with_retry(flaky, sleep=sleeps.append) == "ok"
    assert sleeps == [0.5, 1.0]
    sleeps.clear()
    with pytest.raises(HttpError):
        call_with_retry(lambda: (_ for _ in ()).throw(HttpError(503)), sleep=sleeps.append)
    assert sleeps == [0.5, 1.0, 2.0]
    with pytest.raises(HttpError):
        call_with_retry(lambda: (_ for _ in ()).throw(HttpError(400)), sleep=sleeps.append)
    assert sleeps == [0.5, 1.0, 2.0]


class PagedFunding:
    """Answers like /info fundingHistory: at most `page` items from startTime on."""

    def __init__(self, times, page):
        self.times, self.page, self.calls = times, page, []

    def funding_history(self, name, start, end):
        self.calls.append(start)
        hits = [t for t in self.times if start <= t <= end][: self.page]
        return [{"coin": name, "time": t, "fundingRate": "0.00001", "premium": "0"} for t in hits]


def test_funding_pages_follow_the_last_time():
    times = [T0 + i * H for i in range(7)]
    info = PagedFunding(times, page=3)
    rows = fetch_funding_pages(info, "BTC", T0, T0 + 100 * H, sleep=lambda s: None)
    assert [r[1] for r in rows] == times
    assert info.calls == [T0, T0 + 2 * H + 1, T0 + 5 * H + 1, T0 + 6 * H + 1]
