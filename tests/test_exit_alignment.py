"""Exit alignment (factory.exit_alignment): live exits read from a real trading DB, matched with the
replay's exits of the same position, their delays and adverse price differences, medians, worsts
and limits. The expected numbers are worked by hand from the rows below."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from factory import exit_alignment as ea
from live.trading_db import insert_trade, iso_utc, open_trading_db

IV = 3_600_000
M = 60_000
T0 = 1_750_000_000_000 // IV * IV
LIMITS = ea.default_limits(5 * M, 2_000, 100.0, 20.0)   # 5m exit sub-bars, 2 s grace, 1 % cap, 20 bps stress


def live_db(path, rows):
    """rows: (t_ms, symbol, type, action, price, size, reason, meta) -> a trading DB the trader's way."""
    con = open_trading_db(path)
    for t, sym, side, action, price, size, reason, meta in rows:
        insert_trade(con, {"timestamp": iso_utc(t), "symbol": sym, "type": side, "action": action, "price": price,
                           "size": size, "reason": reason, "meta_json": meta, "balance": 10_000.0})
    con.commit()
    con.close()
    return path


def rfill(t, sym, side, action, price, size, reason):
    return {"t_ms": t, "symbol": sym, "side": side, "action": action, "price": price, "size": size, "reason": reason}


# the replay: what the canonical engine books, at the (sub-)bar closes
REPLAY_FILLS = [
    rfill(T0, "BTC", "LONG", "OPEN", 100.0, 1.0, "signal"),
    rfill(T0, "ETH", "SHORT", "OPEN", 50.0, 2.0, "signal"),
    rfill(T0, "DOGE", "LONG", "OPEN", 0.2, 1000.0, "signal"),
    rfill(T0 + 15 * M, "BTC", "LONG", "REDUCE", 101.5, 0.5, "take_profit_partial"),
    rfill(T0 + 20 * M, "AVAX", "LONG", "CLOSE", 30.0, 3.0, "trailing_stop"),       # held before the replay
    rfill(T0 + 45 * M, "DOGE", "LONG", "REDUCE", 0.205, 500.0, "take_profit_partial"),  # live never made it
    rfill(T0 + IV, "ETH", "SHORT", "CLOSE", 49.0, 2.0, "take_profit"),
    rfill(T0 + IV, "SOL", "LONG", "OPEN", 20.0, 5.0, "signal"),
    rfill(T0 + IV + 30 * M, "BTC", "LONG", "CLOSE", 103.0, 0.5, "trailing_stop"),
    rfill(T0 + 2 * IV, "DOGE", "LONG", "CLOSE", 0.21, 500.0, "signal_flip"),
    rfill(T0 + 2 * IV + 10 * M, "SOL", "LONG", "CLOSE", 19.0, 5.0, "stop_loss"),
    rfill(T0 + 3 * IV, "SOL", "LONG", "OPEN", 19.5, 5.0, "signal"),
    rfill(T0 + 3 * IV, "SOL", "LONG", "CLOSE", 19.5, 5.0, "end_of_data"),
]
REPLAY_TRADES = [{"symbol": "AVAX", "entry_time_ms": T0 - 3 * IV}, {"symbol": "ETH", "entry_time_ms": T0}]

# the trader: fills a few seconds after each close, except where noted
LIVE_ROWS = [
    (T0 - 3 * IV + 4_000, "AVAX", "LONG", "OPEN", 28.0, 3.0, "signal", None),
    (T0 + 3_000, "BTC", "LONG", "OPEN", 100.02, 1.0, "signal", None),
    (T0 + 2_000, "ETH", "SHORT", "OPEN", 50.01, 2.0, "signal", None),
    (T0 + 5_000, "DOGE", "LONG", "OPEN", 0.2, 1000.0, "signal", None),
    (T0 + 4_000, "XRP", "SHORT", "OPEN", 0.5, 100.0, "signal", None),              # the replay has no XRP
    (T0 + 15 * M + 4_000, "BTC", "LONG", "REDUCE", 101.0, 0.5, "take_profit_partial", {"intent_id": "i1"}),
    (T0 + 20 * M + 3_000, "AVAX", "LONG", "CLOSE", 30.0, 3.0, "trailing_stop", {"intent_id": "i2"}),
    (T0 + IV + 1_000, "LTC", "LONG", "CLOSE", 80.0, 1.0, "signal", None),          # no OPEN recorded
    (T0 + IV + 2_000, "XRP", "SHORT", "CLOSE", 0.49, 100.0, "take_profit", None),
    (T0 + IV + 3_000, "SOL", "LONG", "OPEN", 20.01, 5.0, "signal", None),
    (T0 + IV + 20 * M, "ETH", "SHORT", "CLOSE", 49.1, 2.0, "take_profit", None),    # 20 min late
    # one close filled in three parts by the exchange: one exit
    (T0 + IV + 30 * M + 2_000, "BTC", "LONG", "REDUCE", 103.2, 0.2, "trailing_stop", {"cloid": "c2", "oid": 7}),
    (T0 + IV + 30 * M + 4_000, "BTC", "LONG", "REDUCE", 103.0, 0.1, "trailing_stop", {"cloid": "c2", "oid": 7}),
    (T0 + IV + 30 * M + 6_000, "BTC", "LONG", "CLOSE", 102.9, 0.2, "trailing_stop", {"cloid": "c2", "oid": 7}),
    (T0 + 2 * IV + 3_000, "DOGE", "LONG", "CLOSE", 0.21, 1000.0, "signal_flip", None),
    # the exchange's protective stop closed SOL, 263 bps below the replay's stop-loss close
    (T0 + 2 * IV + 10 * M + 1_000, "SOL", "LONG", "CLOSE", 18.5, 5.0, "protective_stop", {"oid": 99}),
]


def compare(tmp_path, limits=LIMITS, live_rows=LIVE_ROWS):
    live = ea.read_live_exits(live_db(tmp_path / "live.db", live_rows))
    replay = ea.replay_exits(REPLAY_FILLS, REPLAY_TRADES)
    return ea.compare_exits(live, replay, entry_grid_ms=IV, interval_ms=IV, lo=T0 + IV, hi=T0 + 3 * IV, limits=limits)


def by(res, symbol, action):
    (row,) = [x for x in res["exits"] if x["symbol"] == symbol and x["action"] == action and x["status"] == "matched"]
    return row


def test_default_limits_follow_the_sub_bar_grace_slippage_cap_and_stress():
    assert LIMITS == ea.Limits(max_delay_ms=302_000, max_median_delay_ms=152_000, max_adverse_bps=100.0,
                               max_median_adverse_bps=20.0)


def test_each_exit_is_matched_on_its_position_and_measured(tmp_path):
    res = compare(tmp_path)
    assert res["matched"] == 6 and res["exits_total"] == 9
    btc_r, btc_c = by(res, "BTC", "REDUCE"), by(res, "BTC", "CLOSE")
    assert btc_r["delay_ms"] == 4_000 and btc_r["adverse_bps"] == pytest.approx(0.5 / 101.5 * 1e4)   # 49.26
    # the three parts: 0.5 units at (0.2*103.2 + 0.1*103.0 + 0.2*102.9) / 0.5 = 103.04, done 6 s late
    assert btc_c["live"]["size"] == pytest.approx(0.5) and btc_c["live"]["price"] == pytest.approx(103.04)
    assert btc_c["delay_ms"] == 6_000 and btc_c["adverse_bps"] == pytest.approx(-0.04 / 103 * 1e4)   # better: -3.88
    assert btc_c["live"]["ref"] == "trades id 12,13,14"
    eth = by(res, "ETH", "CLOSE")   # a short buys back: paying more is adverse
    assert eth["delay_ms"] == 20 * M and eth["adverse_bps"] == pytest.approx(0.1 / 49 * 1e4)  # 20.41
    assert eth["breaks"] == ["max_delay_ms"]
    sol = by(res, "SOL", "CLOSE")   # matched on the position, not the reason
    assert (sol["replay"]["reason"], sol["live"]["reason"]) == ("stop_loss", "protective_stop")
    assert sol["delay_ms"] == 1_000 and sol["adverse_bps"] == pytest.approx(0.5 / 19 * 1e4)   # 263.16
    assert sol["breaks"] == ["max_adverse_bps"]
    avax = by(res, "AVAX", "CLOSE")  # held before the replay: entry from its trade record
    assert avax["delay_ms"] == 3_000 and avax["adverse_bps"] == 0.0 and avax["entry_ms"] == T0 - 3 * IV
    assert by(res, "DOGE", "CLOSE")["delay_ms"] == 3_000


def test_median_and_worst(tmp_path):
    res = compare(tmp_path)
    # delays 1000, 3000, 3000, 4000, 6000, 1_200_000 ms; adverse -3.88, 0, 0, 20.41, 49.26, 263.16 bps
    assert res["delay_ms"] == {"median": 3_500.0, "worst": 1_200_000.0}
    assert res["adverse_bps"]["median"] == pytest.approx((0.1 / 49 * 1e4) / 2)                     # 10.20
    assert res["adverse_bps"]["worst"] == pytest.approx(0.5 / 19 * 1e4)


def test_exits_on_one_side_only_are_reported_and_fail(tmp_path):
    res = compare(tmp_path)
    lonely = sorted((x["status"], x["symbol"], x["action"]) for x in res["exits"] if x["status"] != "matched")
    assert lonely == [("live_only", "LTC", "CLOSE"), ("live_only", "XRP", "CLOSE"), ("replay_only", "DOGE", "REDUCE")]
    assert (res["live_only"], res["replay_only"]) == (2, 1)
    assert res["reason_codes"] == ["exit_unmatched", "exit_delay_limit_exceeded", "exit_price_limit_exceeded"]
    assert not res["ok"]
    ltc = [x for x in res["exits"] if x["symbol"] == "LTC"][0]
    assert ltc["entry_ms"] is None and ltc["breaks"] == ["unmatched"]
    text = ea.text_table(res)
    assert "\nlive_only   LTC      LONG  ?" in text and "verdict: FAIL: exit_unmatched, exit_delay" in text
    sol_line = [line for line in text.splitlines() if line.startswith("matched     SOL")][0]
    assert "263.16" in sol_line and "stop_loss / protective_stop" in sol_line and sol_line.endswith("max_adverse_bps")


def test_limits_decide_the_verdict(tmp_path):
    matched_only = [r for r in LIVE_ROWS if r[1] not in ("XRP", "LTC")]
    loose = ea.Limits(max_delay_ms=1_200_000, max_median_delay_ms=3_500, max_adverse_bps=263.2,
                      max_median_adverse_bps=10.3)
    rows_no_doge_reduce = compare(tmp_path, loose, matched_only)
    assert rows_no_doge_reduce["reason_codes"] == ["exit_unmatched"]   # only DOGE's missing partial close
    # just under the worst delay / the median delay / the worst price / the median price: each fails alone
    for field, value, code in (("max_delay_ms", 1_199_999, "exit_delay_limit_exceeded"),
                               ("max_median_delay_ms", 3_499, "exit_delay_limit_exceeded"),
                               ("max_adverse_bps", 263.1, "exit_price_limit_exceeded"),
                               ("max_median_adverse_bps", 10.2, "exit_price_limit_exceeded")):
        tight = ea.Limits(**{**loose.__dict__, field: value})
        (tmp_path / "live.db").unlink()
        assert compare(tmp_path, tight, matched_only)["reason_codes"] == ["exit_unmatched", code], field


def test_a_clean_trader_passes_and_the_table_says_so(tmp_path):
    clean = [r for r in LIVE_ROWS if r[1] not in ("XRP", "LTC", "ETH", "SOL")]
    replay = [f for f in REPLAY_FILLS if f["symbol"] not in ("ETH", "SOL")
              and not (f["symbol"] == "DOGE" and f["action"] == "REDUCE")]
    live = ea.read_live_exits(live_db(tmp_path / "live.db", clean))
    res = ea.compare_exits(live, ea.replay_exits(replay, REPLAY_TRADES), entry_grid_ms=IV, interval_ms=IV,
                           lo=T0 + IV, hi=T0 + 3 * IV, limits=LIMITS)
    assert res["ok"] and res["matched"] == 4 and res["reason_codes"] == []
    text = ea.text_table(res)
    assert "verdict: PASS" in text and text.count("\nmatched ") == 4
    assert "delay median 3.5 s worst 6.0 s" in ea.summary_line(res)


def test_scope_is_the_window_bars(tmp_path):
    """An exit the replay booked before the window's first bar is the previous window's to judge, even
    when the trader filled it inside this window (ETH: booked at T0+1h, filled 20 min later)."""
    live = ea.read_live_exits(live_db(tmp_path / "live.db", LIVE_ROWS))
    replay = ea.replay_exits(REPLAY_FILLS, REPLAY_TRADES)
    res = ea.compare_exits(live, replay, entry_grid_ms=IV, interval_ms=IV, lo=T0 + 2 * IV, hi=T0 + 3 * IV,
                           limits=LIMITS)   # bars closing T0+2h and T0+3h: exits after T0+1h
    assert sorted((x["symbol"], x["action"], x["status"]) for x in res["exits"]) == [
        ("BTC", "CLOSE", "matched"), ("DOGE", "CLOSE", "matched"), ("LTC", "CLOSE", "live_only"),
        ("SOL", "CLOSE", "matched"), ("XRP", "CLOSE", "live_only")]


@pytest.mark.parametrize("column, value, message", [
    ("price", None, "exit price None is not a positive number"),
    ("price", "abc", "exit price 'abc' is not a positive number"),
    ("size", -1.0, "exit size -1.0 is not a positive number"),
    ("timestamp", "yesterday", "timestamp 'yesterday' is not a time"),
    ("type", "FLAT", "type 'FLAT' is not LONG or SHORT"),
    ("meta_json", "{broken", "meta_json is not JSON"),
])
def test_a_corrupt_exit_row_is_named(tmp_path, column, value, message):
    db = live_db(tmp_path / "live.db", LIVE_ROWS)
    with sqlite3.connect(db) as con:
        con.execute(f"UPDATE trades SET {column} = ? WHERE id = 7", (value,))
    with pytest.raises(ea.ExitDataError) as err:
        ea.read_live_exits(db)
    assert str(err.value) == f"{db}: trades id 7: {message}"


def test_unreadable_trading_dbs(tmp_path):
    with pytest.raises(ea.ExitDataError, match="trading DB not found"):
        ea.read_live_exits(tmp_path / "nope.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ea.ExitDataError, match="trades table unreadable: file is not a database"):
        ea.read_live_exits(junk)
    other = tmp_path / "candles.db"
    sqlite3.connect(other).execute("CREATE TABLE candles (t INTEGER)").connection.close()
    with pytest.raises(ea.ExitDataError, match="no trades table"):
        ea.read_live_exits(other)


def test_limits_cannot_be_disabled():
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="must be a finite number >= 0"):
            ea.Limits(bad, 1.0, 1.0, 1.0).check()


# --- the scheduled gate, for real -------------------------------------------------------------
def gate(tmp_path, env_over: dict, *flags: str, now_ms: int):
    import json
    import os
    import subprocess
    import sys

    from tests.test_promotion_replay_gate import TOOL

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AI_QUANT_", "HL_"))}
    env.update({"AI_QUANT_REPLAY_GATE_BUNDLE_ROOT": str(tmp_path / "gate"),
                "AI_QUANT_REPLAY_GATE_BLOCKER_FILE": str(tmp_path / "gate" / "release_blocker.json"), **env_over})
    res = subprocess.run([sys.executable, str(TOOL), "--now-ms", str(now_ms), *flags], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    blocker = json.loads((tmp_path / "gate" / "release_blocker.json").read_text())
    report = json.loads((tmp_path / "gate" / "release_blocker.json").parent.joinpath(
        blocker["report_path"]).read_text())
    return res, blocker, report


def test_cli_a_corrupt_exit_row_blocks_in_one_line(tmp_path):
    from tests.test_promotion_replay_gate import _inputs

    env = _inputs(tmp_path, b"")
    with sqlite3.connect(env["AI_QUANT_REPLAY_GATE_PAPER_DB"]) as con:
        con.execute("INSERT INTO trades (timestamp, symbol, type, action, price, size) "
                    "VALUES ('2025-06-15T11:00:05', 'BTC', 'LONG', 'CLOSE', NULL, 1.0)")
    res, blocker, report = gate(tmp_path, env, now_ms=T0 + 2 * M)
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert blocker["blocked"] is True and blocker["reason_codes"] == ["state_initialisation_gap"]
    assert blocker["detail"].endswith("trades id 2: exit price None is not a positive number")
    assert report["blocked"] is True and "exit_alignment" not in report and "exit_alignment" not in blocker
    text = (tmp_path / "gate").glob("bundle_*/alignment_report.txt").__next__().read_text()
    assert text.startswith("Replay alignment gate: BLOCKED (state_initialisation_gap)")


@pytest.mark.parametrize("flags, env, message", [
    (("--max-exit-delay-s", "abc"), {}, "--max-exit-delay-s 'abc' is not a number"),
    (("--max-exit-adverse-bps", "-5"), {}, "--max-exit-adverse-bps=-5.0 must be a finite number >= 0"),
    ((), {"AI_QUANT_REPLAY_GATE_MAX_MEDIAN_EXIT_DELAY_S": "nan"},
     "AI_QUANT_REPLAY_GATE_MAX_MEDIAN_EXIT_DELAY_S=nan must be a finite number >= 0"),
])
def test_cli_a_bad_exit_limit_blocks_in_one_line(tmp_path, flags, env, message):
    from tests.test_promotion_replay_gate import _inputs

    res, blocker, _ = gate(tmp_path, {**_inputs(tmp_path, b""), **env}, *flags, now_ms=T0 + 2 * M)
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1
    assert blocker["blocked"] is True and blocker["reason_codes"] == ["scheduler_unhandled_exception"]
    assert message in blocker["detail"]


def _trader_db(path, fills, late: dict[int, tuple[int, float]], drop: set[int]):
    """A paper-style trading DB of the replay's fills; fill i gets (delay ms, adverse bps) from `late`
    (default 5 s, 0 bps) and is left out when in `drop`."""
    con = open_trading_db(path)
    insert_trade(con, {"timestamp": iso_utc(fills[0]["t_ms"] - 7 * IV), "symbol": "SYSTEM", "action": "SYSTEM",
                       "balance": 10_000.0})
    for i, f in enumerate(fills):
        if i in drop:
            continue
        delay, bps = late.get(i, (5_000, 0.0))
        worse = -1 if (f["side"] == "LONG") == (f["action"] in ("REDUCE", "CLOSE")) else 1
        insert_trade(con, {"timestamp": iso_utc(f["t_ms"] + delay), "symbol": f["symbol"], "type": f["side"],
                           "action": f["action"], "price": f["price"] * (1 + worse * bps / 1e4), "size": f["size"],
                           "reason": f["reason"], "balance": f["balance"], "entry_atr": f["atr"]})
    con.commit()
    con.close()
    return path


def test_cli_reports_exit_delays_and_prices_on_real_candles(tmp_path, shared_data):
    """Real Hyperliquid BTC candles, the canonical replay, and trading DBs made of its fills: one
    faithful (5 s late, same prices) passes with the exit table in the report; one with an exit
    50 bps worse, one 4 min late and one missing fails with the figures worked out below."""
    from cpu_replay.api import run_replay
    from marketdata.candles import load_market_data
    from strategy.config import config_from_dict

    candles = shared_data / "hyperliquid" / "candles_1h.db"
    md = load_market_data(str(candles), "1h")
    fills = [f for f in run_replay(config_from_dict({"global": {"engine": {"interval": "1h"}}}), md)["fills"]
             if f["action"] != "FUNDING"]
    # a flat moment followed, within ten bars, by at least three exits
    held, lo = set(), None
    for i, f in enumerate(fills[:-1]):
        held.symmetric_difference_update({f["symbol"]} if f["action"] in ("OPEN", "CLOSE") else set())
        nxt = fills[i + 1]["t_ms"]
        if not held and sum(nxt <= g["t_ms"] <= nxt + 9 * IV and g["action"] in ("REDUCE", "CLOSE") for g in fills) >= 3:
            lo = nxt
            break
    assert lo is not None
    hi = lo + 9 * IV
    window = [f for f in fills if f["t_ms"] <= hi]
    exits = [i for i, f in enumerate(window) if lo <= f["t_ms"] and f["action"] in ("REDUCE", "CLOSE")]
    (tmp_path / "cfg.yaml").write_text("global:\n  engine:\n    interval: 1h\n")
    env = {"AI_QUANT_REPLAY_GATE_CANDLES_DB": str(candles), "AI_QUANT_REPLAY_GATE_CONFIG": str(tmp_path / "cfg.yaml"),
           "AI_QUANT_REPLAY_GATE_WARMUP_BARS": "5000", "AI_QUANT_REPLAY_GATE_WINDOW_MINUTES": "600"}

    db = _trader_db(tmp_path / "faithful.db", window, {}, set())
    res, blocker, report = gate(tmp_path, {**env, "AI_QUANT_REPLAY_GATE_PAPER_DB": str(db)}, now_ms=hi + 2 * M)
    assert res.returncode == 0, res.stderr
    ex = report["exit_alignment"]
    assert ex["ok"] and ex["matched"] == ex["exits_total"] == len(exits) >= 3
    assert ex["delay_ms"] == {"median": 5_000.0, "worst": 5_000.0} and ex["adverse_bps"]["worst"] == pytest.approx(0)
    assert ex["limits"]["max_delay_ms"] == IV + 2_000       # no exit interval: one main bar + 2 s grace
    assert blocker["exit_alignment"]["matched"] == len(exits) and "exits" not in blocker["exit_alignment"]
    assert f"exits {len(exits)}/{len(exits)} matched, delay median 5.0 s worst 5.0 s" in res.stdout

    first, second, third = exits[:3]
    db = _trader_db(tmp_path / "drifted.db", window, {first: (5_000, 50.0), second: (240_000, 0.0)}, {third})
    res, blocker, report = gate(tmp_path, {**env, "AI_QUANT_REPLAY_GATE_PAPER_DB": str(db)},
                                "--max-exit-delay-s", "120", now_ms=hi + 2 * M)
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1
    ex = report["exit_alignment"]
    # matched: 5 s / 50 bps, 240 s / 0 bps (+ any later exits at 5 s / 0): the missing one fails on its own
    delays = sorted([5_000, 240_000] + [5_000] * (len(exits) - 3))
    assert ex["matched"] == len(exits) - 1 and ex["replay_only"] == 1
    assert ex["delay_ms"]["worst"] == 240_000 and ex["adverse_bps"]["worst"] == pytest.approx(50.0)
    assert ex["delay_ms"]["median"] == pytest.approx(sorted(delays)[len(delays) // 2] if len(delays) % 2 else
                                                     (delays[len(delays) // 2 - 1] + delays[len(delays) // 2]) / 2)
    assert ex["limits"]["max_delay_ms"] == 120_000
    assert {"exit_unmatched", "exit_delay_limit_exceeded"} <= set(blocker["reason_codes"])
    assert ("exit_price_limit_exceeded" in blocker["reason_codes"]) == (len(exits) == 3)  # median 25 bps > 20
    missing = [x for x in ex["exits"] if x["status"] == "replay_only"]
    assert [x["replay"]["t_ms"] for x in missing] == [window[third]["t_ms"]]
    text = (Path(blocker["bundle_dir"]) / "alignment_report.txt").read_text()
    assert "replay_only" in text and "max_delay_ms" in text and "verdict: FAIL" in text


def test_two_positions_on_one_entry_boundary_are_both_judged(tmp_path):
    """Entries 1 s and 10 min after T0 both round to T0 on the 1h grid: the second position's close
    counts as the position's 2nd CLOSE, so it is reported (live_only), never silently dropped."""
    live = ea.read_live_exits(live_db(tmp_path / "live.db", [
        (T0 + 1_000, "BTC", "LONG", "OPEN", 100.0, 1.0, "signal", None),
        (T0 + 5 * M, "BTC", "LONG", "CLOSE", 99.0, 1.0, "stop_loss", None),
        (T0 + 10 * M, "BTC", "LONG", "OPEN", 99.5, 1.0, "signal", None),
        (T0 + 20 * M, "BTC", "LONG", "CLOSE", 99.0, 1.0, "stop_loss", None)]))
    replay = ea.replay_exits([rfill(T0, "BTC", "LONG", "OPEN", 100.0, 1.0, "signal"),
                              rfill(T0 + 5 * M, "BTC", "LONG", "CLOSE", 99.0, 1.0, "stop_loss")], [])
    res = ea.compare_exits(live, replay, entry_grid_ms=IV, interval_ms=IV, lo=T0 + IV, hi=T0 + IV, limits=LIMITS)
    assert [(x["status"], x["ordinal"], x["delay_ms"]) for x in res["exits"]] == [("matched", 1, 0), ("live_only", 2, None)]


def test_a_config_with_entry_sub_bars_only_is_judged_on_its_sub_bars(shared_data, monkeypatch):
    """The trader steps the one sub-bar grid of exit *or* entry sub-bars (marketdata.subbars): a
    config with 5m entries and 1h exits gets the 5m candles beside the main DB, and an exit delay
    limit of one 5m step + grace, not one hour."""
    import tools.run_scheduled_replay_alignment_gate as g
    from marketdata.candles import load_market_data
    from strategy.config import config_from_dict

    monkeypatch.setenv("AI_QUANT_REPLAY_GATE_CANDLES_DB", str(shared_data / "candles_1h.db"))
    s = g.settings_from_env()
    cfg = config_from_dict({"global": {"engine": {"interval": "1h", "entry_interval": "5m"}}})
    assert g.exit_limits(s, cfg, IV).max_delay_ms == 5 * M + 2_000
    md = load_market_data(str(shared_data / "candles_1h.db"), "1h", symbols=["ETH"])
    md = load_market_data(str(shared_data / "candles_1h.db"), "1h", symbols=["ETH"], start_ms=int(md.times[0]),
                          end_ms=int(md.times[0]) + 3 * IV - 1)
    sub = g._exit_candles(s, cfg, md)
    assert sub is not None and sub.interval_ms == 5 * M and md.times[0] <= sub.times[0] < md.times[0] + IV
    bad = config_from_dict({"global": {"engine": {"interval": "1h", "entry_interval": "5m", "exit_interval": "15m"}}})
    with pytest.raises(g.GateInputError, match="one grid"):
        g._exit_candles(s, bad, md)
