"""The monitor's aiq_ Prometheus metrics against real trading DBs (issue 16, item 4).

The DB is written by the trader's own code paths: fills through live.trading_db.insert_trade, the
engine checkpoint through live.checkpoint.save, audit rows through live.trading_db.audit, the
heartbeat and the alert outcome lines through a RuntimeLogger fed by a real Alerter posting to an
HTTP receiver on 127.0.0.1. /metrics is read from a real MonitorServer and parsed with
prometheus_client's own parser; every figure is compared with what the DB says.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_monitor import HB, desk_factory  # noqa: F401 - `desk_factory` is a fixture

import live.checkpoint as checkpoint
from cpu_replay.engine import EngineState
from live.alerts import Alerter, AlertSettings
from live.runtime_log import RuntimeLogger
from live.trading_db import audit, insert_trade, iso_utc, now_ms, open_positions, open_trading_db
from strategy.layout import NACCT, NPOS, POS_LAST_CLOSE, POS_SIDE

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana" / "openclaw-ai-quant.json"
MONITOR_DOC = ROOT / "docs" / "MONITOR.md"
SYMBOLS = ["BTC", "ETH", "SOL"]
MARKS = {"BTC": 61_000.0, "ETH": 2_900.0, "SOL": 150.0}
FILLS = [("BTC", "LONG", "OPEN", 60_000.0, 0.1, 0.0, 3.0), ("SOL", "LONG", "OPEN", 150.0, 10.0, 0.0, 0.75),
         ("SOL", "LONG", "CLOSE", 160.0, 10.0, 100.0, 0.8), ("ETH", "SHORT", "OPEN", 3_000.0, 1.0, 0.0, 1.5),
         ("ETH", "SHORT", "REDUCE", 2_950.0, 0.4, 20.0, 0.6)]
REJECTIONS = [("ORDER_REJECTED", "BTC"), ("ORDER_REJECTED", "BTC"), ("ORDER_BLOCKED", "ETH")]


# ------------------------------------------------------------------ the DB, written by the trader's code
def write_fills(conn, fills, balance: float = 10_000.0) -> float:
    t0 = now_ms() - 3_600_000
    for i, (sym, side, action, px, size, pnl, fee) in enumerate(fills):
        balance += pnl - fee
        insert_trade(conn, {"timestamp": iso_utc(t0 + i * 60_000), "symbol": sym, "type": side, "action": action,
                            "price": px, "size": size, "notional": px * size, "pnl": pnl, "fee_usd": fee,
                            "balance": balance})
    return balance


def save_engine_checkpoint(conn, last_bar_t: int) -> None:
    """live.checkpoint.save, as the daemon calls it after a bar: marks are each symbol's last close."""
    pos = np.zeros((len(SYMBOLS), NPOS))
    pos[:, POS_LAST_CLOSE] = [MARKS[s] for s in SYMBOLS]
    pos[0, POS_SIDE], pos[1, POS_SIDE] = 1.0, -1.0
    state = EngineState(np.zeros((len(SYMBOLS), 1)), np.zeros((len(SYMBOLS), 1)), pos, np.zeros(NACCT))
    checkpoint.save(conn, state, last_bar_t=last_bar_t, symbols=SYMBOLS, windows=np.array([], dtype=np.int64),
                    config_id="cfg-metrics", epoch=checkpoint.new_epoch())


class Receiver:
    """An alert receiver on 127.0.0.1: /ok answers 200, /fail 500, /slow 200 after a pause."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/slow"):
                    time.sleep(0.4)
                self.send_response(500 if self.path.startswith("/fail") else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def alerter(receiver: Receiver, log: RuntimeLogger, targets: str, **env: str) -> Alerter:
    base = {"AI_QUANT_ALERT_TARGETS": targets, "AI_QUANT_ALERT_RETRIES": "0", "AI_QUANT_ALERT_BACKOFF_S": "0",
            "AI_QUANT_ALERT_SEND_TIMEOUT_S": "5"}
    return Alerter(AlertSettings.from_env({**base, **env}), log=log)


def send_alerts(path: Path, receiver: Receiver) -> dict[str, int]:
    """A healthy and a dead target (sent and failed lines), then a one-slot queue behind a slow one
    (a drop line); returns the Alerters' own counters."""
    with RuntimeLogger(path, "paper", echo=None) as log:
        log.heartbeat(**HB)
        a = alerter(receiver, log, f"webhook:{receiver.url}/ok,webhook:{receiver.url}/fail")
        a.send("kill", "paper: halt_all (manual)")
        a.send("order_rejected", "paper: BTC: error=margin")
        assert a.flush(10.0)
        a.close(1.0)
        b = alerter(receiver, log, f"webhook:{receiver.url}/slow", AI_QUANT_ALERT_QUEUE_MAX="1")
        for i in range(4):  # the first is posted (or queued), the others find the one slot taken
            b.send("data_lag", f"paper: lag {i}")
        assert b.flush(10.0)
        b.close(1.0)
        return {"sent": a.sent + b.sent, "failed": a.failed + b.failed, "dropped": b.dropped}


def build_db(path: Path, receiver: Receiver) -> dict:
    conn = open_trading_db(path)
    balance = write_fills(conn, FILLS)
    last_bar_t = (now_ms() // 3_600_000 - 1) * 3_600_000
    save_engine_checkpoint(conn, last_bar_t)
    for event, sym in REJECTIONS:
        audit(conn, event, sym, "warning", {"action": "OPEN", "error": "margin"})
    audit(conn, "ORDER_WOULD_SEND", "BTC", "info", {"size": 0.1})  # not a rejection
    conn.close()
    return {"balance": balance, "last_bar_t": last_bar_t, "alerts": send_alerts(path, receiver)}


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def paper_db(tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return build_db(tmp_path / "paper.db", receiver)


# ------------------------------------------------------------------ reading /metrics
def scrape(desk, path: str = "/metrics") -> dict:
    """{family name: family} through prometheus_client's own parser."""
    status, headers, body = desk.get(path)
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def samples(families: dict, family: str, **labels: str) -> dict[tuple, float]:
    """The family's samples matching `labels`, keyed by their other label values (sorted by name)."""
    out = {}
    for s in families[family].samples:
        if all(s.labels.get(k) == v for k, v in labels.items()):
            out[tuple(v for k, v in sorted(s.labels.items()) if k not in labels)] = s.value
    return out


def one(families: dict, family: str, **labels: str) -> float:
    found = samples(families, family, **labels)
    assert len(found) == 1, (family, labels, found)
    return next(iter(found.values()))


def db_fill_counts(path: Path) -> dict[tuple, float]:
    conn = open_trading_db(path)
    rows = conn.execute("SELECT action, symbol, COUNT(*) FROM trades GROUP BY action, symbol").fetchall()
    conn.close()
    return {(a, s): float(n) for a, s, n in rows}


def db_equity(path: Path) -> tuple[float, float]:
    """(balance, unrealised) from the DB: the last fill's balance; open positions (the trader's own
    replay) marked at the checkpoint's last close."""
    conn = open_trading_db(path)
    balance = conn.execute("SELECT balance FROM trades ORDER BY id DESC LIMIT 1").fetchone()[0]
    data = checkpoint.load(conn)
    marks = dict(zip(data["symbols"], checkpoint.decode(data).pos[:, POS_LAST_CLOSE], strict=True))
    unrealised = sum((marks[p["symbol"]] - p["entry_price"]) * p["size"] * (1 if p["side"] == "LONG" else -1)
                     for p in open_positions(conn))
    conn.close()
    return balance, unrealised


# ------------------------------------------------------------------ the tests
def test_metrics_equal_the_trading_db(paper_db, tmp_path, desk_factory):  # noqa: F811
    db = tmp_path / "paper.db"
    m = scrape(desk_factory())
    assert samples(m, "aiq_fills", mode="paper") == db_fill_counts(db)  # (action, symbol) -> count
    balance, unrealised = db_equity(db)
    assert one(m, "aiq_balance_usd", mode="paper") == pytest.approx(balance) == paper_db["balance"]
    assert one(m, "aiq_unrealised_pnl_usd", mode="paper") == pytest.approx(unrealised) == pytest.approx(160.0)
    assert one(m, "aiq_equity_usd", mode="paper") == pytest.approx(balance + unrealised)
    assert one(m, "aiq_open_positions", mode="paper") == 2.0
    assert one(m, "aiq_kill_level", mode="paper") == 1.0  # HB: close_only
    assert one(m, "aiq_engine_up", mode="paper") == 1.0 and one(m, "aiq_db_up", mode="paper") == 1.0
    assert 0.0 <= one(m, "aiq_heartbeat_age_seconds", mode="paper") < 30.0
    # last bar per symbol: the checkpoint's last bar, the same for every symbol
    bar_s = paper_db["last_bar_t"] / 1000.0
    assert samples(m, "aiq_last_bar_timestamp_seconds", mode="paper") == {(s,): bar_s for s in SYMBOLS}
    for (sym,), age in samples(m, "aiq_last_bar_age_seconds", mode="paper").items():
        assert age == pytest.approx(time.time() - bar_s, abs=5.0), sym
    assert samples(m, "aiq_order_rejections", mode="paper") == {("ORDER_BLOCKED", "ETH"): 1.0,
                                                                ("ORDER_REJECTED", "BTC"): 2.0}


def test_alert_counters_match_what_the_alerter_logged(paper_db, desk_factory):  # noqa: F811
    m = scrape(desk_factory())
    counts = paper_db["alerts"]
    assert samples(m, "aiq_alerts_sent", mode="paper") == {("kill",): 1.0, ("order_rejected",): 1.0,
                                                           ("data_lag",): counts["sent"] - 2.0}
    assert samples(m, "aiq_alerts_failed", mode="paper") == {("kill",): 1.0, ("order_rejected",): 1.0}
    assert sum(samples(m, "aiq_alerts_failed", mode="paper").values()) == counts["failed"]
    # the Alerter logs one drop line a minute with its running total: a lower bound, never more
    assert one(m, "aiq_alerts_dropped", mode="paper") == 1.0 <= counts["dropped"]


def test_counters_fold_new_rows_and_restart_on_a_replaced_db(paper_db, tmp_path, desk_factory):  # noqa: F811
    db = tmp_path / "paper.db"
    desk = desk_factory()
    scrape(desk)
    conn = open_trading_db(db)
    write_fills(conn, [("BTC", "LONG", "ADD", 61_000.0, 0.1, 0.0, 3.0), ("BTC", "LONG", "CLOSE", 62_000.0, 0.2, 300.0, 6.0)],
                balance=paper_db["balance"])
    audit(conn, "ORDER_REJECTED", "SOL", "warning", {"error": "tick"})
    conn.close()
    m = scrape(desk)
    assert samples(m, "aiq_fills", mode="paper") == db_fill_counts(db)
    assert one(m, "aiq_order_rejections", mode="paper", symbol="SOL") == 1.0
    assert one(m, "aiq_open_positions", mode="paper") == 1.0

    db.unlink()
    conn = open_trading_db(db)
    write_fills(conn, FILLS[:1])
    conn.close()
    m = scrape(desk)
    assert samples(m, "aiq_fills", mode="paper") == {("OPEN", "BTC"): 1.0}
    assert samples(m, "aiq_order_rejections", mode="paper") == {}
    assert "aiq_equity_usd" in m and samples(m, "aiq_equity_usd") == {}  # open BTC, no checkpoint: unknown


def test_missing_db_and_mode_filter(paper_db, desk_factory):  # noqa: F811
    desk = desk_factory()
    m = scrape(desk)
    assert one(m, "aiq_db_up", mode="live") == 0.0 and one(m, "aiq_engine_up", mode="live") == 0.0
    assert math.isinf(one(m, "aiq_heartbeat_age_seconds", mode="live"))  # an age alert fires
    for family in ("aiq_kill_level", "aiq_equity_usd", "aiq_open_positions", "aiq_fills", "aiq_alerts_dropped"):
        assert samples(m, family, mode="live") == {}, family  # unknown is left out, never 0
    m = scrape(desk, "/metrics?mode=paper")
    assert {s.labels["mode"] for f in m.values() for s in f.samples} == {"paper"}
    # the deprecated unprefixed gauges keep their values
    assert one(m, "kill_mode", mode="paper") == one(m, "aiq_kill_level", mode="paper")
    assert one(m, "balance_usd", mode="paper") == one(m, "aiq_balance_usd", mode="paper")


def test_last_bar_age_per_symbol_from_the_candles_db(paper_db, tmp_path, desk_factory):  # noqa: F811
    from marketdata.candles import write_candles

    candles = tmp_path / "candles_1h.db"
    hour = 3_600_000
    last = (now_ms() // hour - 1) * hour
    write_candles(candles, [dict(symbol="BTC", t=last, o=1.0, h=1.0, l=1.0, c=1.0, v=1.0),
                            dict(symbol="ETH", t=last - 3 * hour, o=1.0, h=1.0, l=1.0, c=1.0, v=1.0)], "1h")
    m = scrape(desk_factory(AIQ_MONITOR_CANDLES_DB=str(candles)), "/metrics?mode=paper")
    c = sqlite3.connect(candles)
    closes = {s: (t + 1) / 1000.0 for s, t in c.execute("SELECT symbol, MAX(t_close) FROM candles GROUP BY symbol")}
    c.close()
    assert samples(m, "aiq_last_bar_timestamp_seconds", mode="paper") == {(s,): t for s, t in closes.items()}
    ages = samples(m, "aiq_last_bar_age_seconds", mode="paper")
    assert ages[("ETH",)] - ages[("BTC",)] == pytest.approx(3 * 3600, abs=0.2)
    assert ages[("BTC",)] == pytest.approx(time.time() - closes["BTC"], abs=5.0)


# ------------------------------------------------------------------ the dashboard and the docs
PROMQL_WORDS = {"sum", "by", "without", "rate", "irate", "increase", "max", "min", "avg", "count", "and", "or",
                "unless", "on", "ignoring", "bool", "offset", "time", "absent", "changes", "delta", "topk"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, ranges and grouping removed)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    return {n for n in re.findall(r"(?<![\w$.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr) if n not in PROMQL_WORDS}


def exposed_names(families: dict) -> set[str]:
    return {s.name for f in families.values() for s in f.samples}


def dashboard_exprs(dash: dict) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        exprs += [re.sub(r"label_values\((\w+),.*\)", r"\1", var["query"]["query"])]
    return exprs


def test_dashboard_and_alert_rules_read_only_exposed_metrics(paper_db, desk_factory):  # noqa: F811
    m = scrape(desk_factory())
    aiq = {name: f for name, f in m.items() if name.startswith("aiq_")}
    assert all(f.samples for f in aiq.values()), [n for n, f in aiq.items() if not f.samples]
    exposed = exposed_names(m)
    dash = json.loads(DASHBOARD.read_text())
    used = set().union(*(metric_names(e) for e in dashboard_exprs(dash)))
    assert used and all(n.startswith("aiq_") for n in used), used
    assert used <= exposed, used - exposed
    for needed in ("aiq_equity_usd", "aiq_unrealised_pnl_usd", "aiq_fills_total", "aiq_order_rejections_total",
                   "aiq_kill_level", "aiq_last_bar_age_seconds", "aiq_heartbeat_age_seconds"):
        assert needed in used, needed
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] and "${DS_PROMETHEUS}" in json.dumps(dash["panels"])

    rules = [r for block in re.findall(r"```yaml\n(.*?)```", MONITOR_DOC.read_text(), re.S)
             for g in (yaml.safe_load(block) or {}).get("groups", []) for r in g["rules"]]
    assert len(rules) >= 5
    for rule in rules:
        assert metric_names(rule["expr"]) <= exposed, rule


def test_metric_names_reads_promql():
    expr = 'sum by (mode, symbol) (rate(aiq_fills_total{mode=~"$mode"}[$__rate_interval])) * 3600 > aiq_x'
    assert metric_names(expr) == {"aiq_fills_total", "aiq_x"}
    assert metric_names("time() - aiq_last_bar_timestamp_seconds > 7200") == {"aiq_last_bar_timestamp_seconds"}
