"""The monitor over real trading DBs, served by the real server on 127.0.0.1 (ephemeral ports)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import live.monitor.server as monitor_server
from live.monitor.metrics import render
from live.monitor.server import MonitorServer, RateLimiter
from live.monitor.settings import load_monitor_settings
from live.monitor.snapshot import (
    STATUS_MISSING,
    STATUS_UNREADABLE,
    build_snapshot,
    kill_state,
    open_readonly,
    utc_day_start_ms,
)
from live.runtime_log import RuntimeLogger, format_heartbeat
from live.trading_db import (
    audit,
    insert_trade,
    iso_utc,
    now_ms,
    open_trading_db,
    save_engine_state,
    upsert_position_state,
)

HB = dict(loops=812, errors=1, symbols=3, open_pos=2, loop=0.37, ws_connected=True, kill="close_only",
          kill_reason="daily_loss:today", strategy_mode="fallback", config_id="cfg0123abcd", version="0.1.0")
HB_AGE_S = 42.0
DAY = 86_400_000
H = 3_600_000

# (offset from today's UTC midnight in ms, trade row): three fills yesterday, five today.
FILLS = [
    (-5 * H, dict(symbol="BTC", type="LONG", action="OPEN", price=60000, size=0.1, pnl=0, fee_usd=3.0, balance=9997.0)),
    (-4 * H, dict(symbol="BTC", type="LONG", action="CLOSE", price=61000, size=0.1, pnl=100, fee_usd=3.05,
                  balance=10093.95)),
    (-3 * H, dict(symbol="ETH", type="SHORT", action="OPEN", price=3000, size=1.0, pnl=0, fee_usd=1.5,
                  balance=10092.45)),
    (1000, dict(symbol="BTC", type="LONG", action="OPEN", price=62000, size=0.05, pnl=0, fee_usd=1.55,
                balance=10090.90)),
    (2000, dict(symbol="BTC", type="LONG", action="ADD", price=64000, size=0.05, pnl=0, fee_usd=1.6, balance=10089.30)),
    (3000, dict(symbol="SOL", type="LONG", action="OPEN", price=150, size=10, pnl=0, fee_usd=0.75, balance=10088.55)),
    (4000, dict(symbol="SOL", type="LONG", action="CLOSE", price=140, size=10, pnl=-100, fee_usd=0.7,
                balance=9987.85)),
    (5000, dict(symbol="ETH", type="SHORT", action="REDUCE", price=2900, size=0.4, pnl=40, fee_usd=0.58,
                balance=10027.27)),
]


def log_row(conn: sqlite3.Connection, ts_ms: int, message: str) -> None:
    conn.execute("INSERT INTO runtime_logs (ts_ms, ts, pid, mode, stream, level, message) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (ts_ms, iso_utc(ts_ms), 4242, "paper", "engine", "INFO", message))


def fill_paper_db(path: Path) -> dict:
    """The paper desk: 8 fills, 2 open positions, a 42 s old close_only heartbeat, 2 audit events."""
    now = now_ms()
    day0 = utc_day_start_ms(now)
    conn = open_trading_db(path)
    ids = [insert_trade(conn, {**row, "timestamp": iso_utc(day0 + off), "notional": row["price"] * row["size"]})
           for off, row in FILLS]
    upsert_position_state(conn, "BTC", open_trade_id=ids[3], trailing_sl=61500.0, adds_count=1)
    audit(conn, "KILL_SWITCH", None, "warning", {"mode": "close_only"}, ts_ms=now - 60_000)
    audit(conn, "ORDER_WOULD_SEND", "btc", "info", {"size": 0.05}, ts_ms=now - 50_000)
    log_row(conn, now - 90_000, format_heartbeat(**{**HB, "kill": "off", "kill_reason": None}))
    log_row(conn, now - int(HB_AGE_S * 1000), format_heartbeat(**HB))
    log_row(conn, now - 10_000, "bar 2024-03-05T10:00 processed")  # newer, but not a heartbeat
    conn.close()
    return {"now": now}


def live_db_with_fresh_halt(path: Path) -> None:
    """The live desk: no fills, a heartbeat written through RuntimeLogger just now, kill=halt_all."""
    open_trading_db(path).close()
    with RuntimeLogger(path, "live", echo=None) as log:
        log.heartbeat(**{**HB, "kill": "halt_all", "kill_reason": "manual", "open_pos": 0})


def settings_for(tmp_path: Path, **env: str):
    base = {"AIQ_MONITOR_PAPER_DB": str(tmp_path / "paper.db"), "AIQ_MONITOR_LIVE_DB": str(tmp_path / "live.db"),
            "AIQ_MONITOR_PORT": "0", "AIQ_MONITOR_SNAPSHOT_CACHE_MS": "0"}
    return load_monitor_settings({**base, **env})


class Desk:
    def __init__(self, settings, log_stream=None) -> None:
        self.server = MonitorServer(settings, log_stream=log_stream or open(os.devnull, "w"))
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def get(self, path: str, headers: dict | None = None, method: str = "GET", data: bytes | None = None):
        req = urllib.request.Request(self.server.url + path, headers=headers or {}, method=method, data=data)
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                return res.status, dict(res.headers), res.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, path: str, headers: dict | None = None):
        status, _, body = self.get(path, headers)
        return status, json.loads(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def desk_factory(tmp_path):
    desks = []

    def make(**env: str) -> Desk:
        desks.append(Desk(settings_for(tmp_path, **env)))
        return desks[-1]

    yield make
    for d in desks:
        d.close()


@pytest.fixture
def paper(tmp_path):
    return fill_paper_db(tmp_path / "paper.db")


# ------------------------------------------------------------------ snapshot numbers
def test_health_and_snapshot_numbers(paper, desk_factory):
    desk = desk_factory()
    status, health = desk.json("/health")
    assert status == 200 and health["ok"] is True and health["modes"] == ["paper", "live"]

    status, s = desk.json("/api/snapshot?mode=paper")
    assert status == 200 and s["db"]["status"] == "ok"
    assert s["balance"] == pytest.approx(10027.27)
    assert s["peak_balance"] == pytest.approx(10093.95)
    assert s["drawdown_pct"] == pytest.approx((10093.95 - 10027.27) / 10093.95 * 100, abs=1e-6)
    assert s["max_drawdown_pct"] == pytest.approx((10093.95 - 9987.85) / 10093.95 * 100, abs=1e-6)
    pnl = s["pnl_today"]
    assert pnl["fills"] == 5 and pnl["realised"] == pytest.approx(-60.0)
    assert pnl["fees"] == pytest.approx(5.18) and pnl["net"] == pytest.approx(-65.18)
    assert pnl["day_start_balance"] == pytest.approx(10092.45)
    assert pnl["net"] == pytest.approx(s["balance"] - pnl["day_start_balance"])  # fills explain the balance

    pos = {p["symbol"]: p for p in s["open_positions"]}
    assert sorted(pos) == ["BTC", "ETH"]
    assert pos["BTC"]["side"] == "LONG" and pos["BTC"]["size"] == pytest.approx(0.1)
    assert pos["BTC"]["entry_price"] == pytest.approx(63000.0) and pos["BTC"]["adds_count"] == 1
    assert pos["BTC"]["trailing_sl"] == 61500.0 and pos["BTC"]["notional"] == pytest.approx(6300.0)
    assert pos["ETH"]["side"] == "SHORT" and pos["ETH"]["size"] == pytest.approx(0.6)
    assert pos["ETH"]["entry_price"] == 3000.0

    assert [t["action"] for t in s["recent_trades"]][:3] == ["REDUCE", "CLOSE", "OPEN"]
    assert len(s["recent_trades"]) == 8
    assert [a["event"] for a in s["recent_audit"]] == ["ORDER_WOULD_SEND", "KILL_SWITCH"]
    assert s["recent_audit"][0]["data"] == {"size": 0.05} and s["recent_audit"][0]["symbol"] == "BTC"

    hb = s["heartbeat"]
    assert hb["status"] == "ok" and s["engine_up"] is True
    assert hb["age_s"] == pytest.approx(HB_AGE_S, abs=3.0)
    assert hb["fields"]["loops"] == 812 and hb["fields"]["config_id"] == "cfg0123abcd"
    assert s["kill"] == {"mode": "close_only", "level": 1, "reason": "daily_loss:today", "source": "heartbeat"}
    assert s["warnings"] == []


def test_api_health_summarises_both_modes(paper, tmp_path, desk_factory):
    live_db_with_fresh_halt(tmp_path / "live.db")
    status, body = desk_factory().json("/api/health")
    assert status == 200
    assert body["modes"]["paper"] == {"db": "ok", "engine_up": True, "engine_status": "up", "heartbeat": "ok",
                                      "heartbeat_age_s": pytest.approx(HB_AGE_S, abs=3.0), "kill": "close_only",
                                      "kill_level": 1, "open_pos": 2, "config_id": "cfg0123abcd"}
    assert body["modes"]["live"]["kill"] == "halt_all" and body["modes"]["live"]["kill_level"] == 2
    assert body["modes"]["live"]["heartbeat_age_s"] < 5


# ------------------------------------------------------------------ Prometheus
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{mode="(paper|live)"\} (\S+)$')


def parse_prometheus(text: str) -> dict[tuple[str, str], float]:
    """A strict reader of the text format: every sample's family was declared (HELP then TYPE) first."""
    assert text.endswith("\n")
    declared: dict[str, str] = {}
    samples = {}
    for line in text.splitlines():
        if line.startswith(("aiq_", "# HELP aiq_", "# TYPE aiq_")):
            continue  # the aiq_ families (counters, per-symbol labels): tests/test_monitor_metrics.py
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in declared, f"{name} declared twice"
            declared[name] = "help"
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert declared.get(name) == "help" and kind == "gauge"
            declared[name] = kind
        else:
            m = SAMPLE.match(line)
            assert m, f"not a Prometheus sample line: {line!r}"
            assert declared.get(m.group(1)) == "gauge"
            samples[(m.group(1), m.group(2))] = float(m.group(3))  # float() reads +Inf/NaN as Prometheus does
    return samples


def test_metrics_is_prometheus_text(paper, tmp_path, desk_factory):
    desk = desk_factory()
    status, headers, body = desk.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    m = parse_prometheus(body.decode())
    assert m[("engine_up", "paper")] == 1.0 and m[("db_up", "paper")] == 1.0
    assert m[("heartbeat_age_s", "paper")] == pytest.approx(HB_AGE_S, abs=3.0)
    assert m[("open_pos", "paper")] == 2.0 and m[("kill_mode", "paper")] == 1.0
    assert m[("ws_connected", "paper")] == 1.0 and m[("heartbeat_errors", "paper")] == 1.0
    assert m[("pnl_today", "paper")] == pytest.approx(-65.18)
    assert m[("balance_usd", "paper")] == pytest.approx(10027.27)
    # the live DB does not exist yet: down, heartbeat age +Inf so an age alert fires, no invented kill state
    assert m[("db_up", "live")] == 0.0 and m[("engine_up", "live")] == 0.0
    assert math.isinf(m[("heartbeat_age_s", "live")]) and ("kill_mode", "live") not in m

    live_db_with_fresh_halt(tmp_path / "live.db")
    m = parse_prometheus(desk.get("/metrics?mode=live")[2].decode())
    assert {mode for _, mode in m} == {"live"}
    assert m[("kill_mode", "live")] == 2.0 and m[("engine_up", "live")] == 1.0 and m[("open_pos", "live")] == 0.0

    status, body = desk.json("/api/metrics?mode=paper")
    assert status == 200 and body["paper"]["kill_mode"] == 1.0 and body["paper"]["open_pos"] == 2.0


def test_kill_mode_off_and_stale_heartbeat_falls_back_to_latched_kills(tmp_path):
    path = tmp_path / "paper.db"
    conn = open_trading_db(path)
    log_row(conn, now_ms() - 1_000, format_heartbeat(**{**HB, "kill": "off", "kill_reason": None}))
    conn.close()
    s = build_snapshot("paper", path)
    assert s["kill"]["mode"] == "off" and s["kill"]["level"] == 0
    assert parse_prometheus(render([s]))[("kill_mode", "paper")] == 0.0

    # 10 minutes later the daemon is gone; the drawdown kill it latched will be restored on restart
    conn = open_trading_db(path)
    save_engine_state(conn, "risk", {"latched": {"drawdown": {"mode": "close_only", "reason": "drawdown:12%",
                                                              "since_ms": 1}}})
    conn.close()
    s = build_snapshot("paper", path, at_ms=now_ms() + 600_000, stale_after_s=120)
    assert s["engine_up"] is False and s["heartbeat"]["status"] == "stale"
    assert s["kill"] == {"mode": "close_only", "level": 1, "reason": "drawdown:12%", "source": "risk_state:drawdown"}
    assert any("heartbeat stale" in w for w in s["warnings"])
    # a fresh heartbeat no longer outranks a latched kill: a restarted daemon's first heartbeats may say
    # "off" before it has restored what it latched (issue 10 item 5), and a latched stop must show
    fresh = {"status": "ok", "fields": {"kill": "off"}}
    assert kill_state(fresh, [{"mode": "halt_all", "reason": "x", "source": "s"}])["level"] == 2
    assert kill_state(fresh, [])["mode"] == "off" and kill_state(fresh, [])["level"] == 0


# ------------------------------------------------------------------ security
def test_token_required_when_set_and_compared_in_constant_time(paper, desk_factory, monkeypatch):
    calls = []
    real = monitor_server.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(monitor_server.hmac, "compare_digest", spy)
    desk = desk_factory(AIQ_MONITOR_TOKEN="s3cret-desk-token")
    for path in ("/api/snapshot?mode=paper", "/api/health", "/metrics"):
        status, headers, body = desk.get(path)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert json.loads(body) == {"error": "bearer token required"}
    assert desk.get("/api/health", {"Authorization": "Bearer wrong-token"})[0] == 401
    assert desk.get("/api/health", {"Authorization": "Basic s3cret-desk-token"})[0] == 401
    status, body = desk.json("/api/snapshot?mode=paper", {"Authorization": "Bearer s3cret-desk-token"})
    assert status == 200 and body["balance"] == pytest.approx(10027.27)
    assert (b"wrong-token", b"s3cret-desk-token") in calls  # the check went through hmac.compare_digest
    # liveness and the page itself stay open (a proxy or the page's token prompt supplies the header)
    assert desk.get("/health")[0] == 200 and desk.get("/")[0] == 200


def test_rate_limit_returns_429_per_ip(paper, desk_factory):
    desk = desk_factory(AIQ_MONITOR_API_RATE_RPS="0.5", AIQ_MONITOR_API_RATE_BURST="3")
    codes = [desk.get("/api/health")[0] for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    status, headers, body = desk.get("/metrics")
    assert status == 429 and headers["Retry-After"] == "1" and json.loads(body)["error"] == "rate limit exceeded"
    assert desk.get("/health")[0] == 200  # liveness probes are never throttled


def test_rate_limiter_refills_and_caps_its_ip_table():
    lim = RateLimiter(rate_per_s=10, burst=2, max_ips=2)
    assert [lim.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert lim.allow("a", 0.1) is True and lim.allow("a", 0.1) is False  # 0.1 s at 10 rps = one token
    lim.allow("b", 0.2)
    lim.allow("c", 0.2)
    assert set(lim._buckets) == {"b", "c"}  # the oldest IP was evicted


def test_no_write_endpoints_body_cap_traversal_and_page(paper, desk_factory):
    desk = desk_factory(AIQ_MONITOR_MAX_POST_BODY_BYTES="1024")
    status, headers, _ = desk.get("/api/snapshot", method="POST", data=b"{}")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert desk.get("/api/snapshot", method="POST", data=b"x" * 4096)[0] == 413
    assert desk.get("/api/snapshot", method="DELETE")[0] == 405
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2fsnapshot.py", "/etc/passwd"):
        assert desk.get(path)[0] == 404, path
    status, body = desk.json("/api/snapshot?mode=paper3")
    assert status == 400 and body["error"] == "mode='paper3' is not one of paper, live"
    assert desk.json("/api/snapshot?mode=paper1")[1]["mode"] == "paper"
    status, headers, page = desk.get("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "<title>AI Quant — Live Desk</title>" in page.decode() and headers["X-Frame-Options"] == "DENY"
    status, headers, js = desk.get("/static/app.js")
    assert status == 200 and b"/api/snapshot" in js and b"innerHTML" not in js


def test_db_is_opened_read_only(paper, tmp_path, desk_factory):
    db = tmp_path / "paper.db"
    before = (db.stat().st_mtime_ns, db.stat().st_size, hashlib.sha256(db.read_bytes()).hexdigest())
    desk = desk_factory()
    for path in ("/api/snapshot?mode=paper", "/api/health", "/metrics", "/api/metrics"):
        assert desk.get(path)[0] == 200
    conn = open_readonly(db)  # the very connection the monitor uses
    for sql in ("DELETE FROM trades", "INSERT INTO audit_events (timestamp, event) VALUES ('x', 'y')",
                "CREATE TABLE evil (x)"):
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            conn.execute(sql)
    with pytest.raises(sqlite3.OperationalError):  # leaving WAL would rewrite the header: refused too
        conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    after = (db.stat().st_mtime_ns, db.stat().st_size, hashlib.sha256(db.read_bytes()).hexdigest())
    assert after == before
    wal = Path(str(db) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_missing_and_unreadable_db_are_statuses_not_500(tmp_path, desk_factory):
    (tmp_path / "paper.db").write_bytes(b"this is not a sqlite database at all" * 100)
    desk = desk_factory()
    status, s = desk.json("/api/snapshot?mode=live")
    assert status == 200 and s["db"]["status"] == STATUS_MISSING == "missing db"
    assert s["warnings"] == ["missing db: live.db does not exist"]  # no token: file names, not paths
    assert s["open_positions"] == [] and s["balance"] is None and s["engine_up"] is False
    assert not (tmp_path / "live.db").exists()  # looking never creates the file
    status, s = desk.json("/api/snapshot?mode=paper")
    assert status == 200 and s["db"]["status"] == STATUS_UNREADABLE
    status, body = desk.json("/api/health")
    assert body["modes"]["live"]["db"] == "missing db" and body["modes"]["paper"]["db"] == "unreadable db"


def test_db_of_an_older_build_loses_a_section_not_the_page(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, timestamp TEXT, symbol TEXT, type TEXT, action TEXT, "
                 "price REAL, size REAL, notional REAL, reason TEXT, confidence TEXT, pnl REAL, fee_usd REAL, "
                 "balance REAL, entry_atr REAL, leverage REAL, margin_used REAL)")
    conn.execute("INSERT INTO trades (timestamp, symbol, type, action, price, size, pnl, fee_usd, balance) "
                 "VALUES (?, 'BTC', 'LONG', 'OPEN', 100, 1, 0, 0.1, 999.9)", (iso_utc(now_ms()),))
    conn.commit()
    conn.close()
    s = build_snapshot("paper", path)
    assert s["db"]["status"] == "ok" and s["balance"] == pytest.approx(999.9)
    assert s["pnl_today"]["fees"] == pytest.approx(0.1)
    assert any(w.startswith("runtime_logs:") for w in s["warnings"])
    assert any(w.startswith("trades:") for w in s["warnings"])  # recent_trades needs config_id (newer column)


# ------------------------------------------------------------------ the CLI
def trader(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AIQ_MONITOR_")}
    return subprocess.Popen([sys.executable, "-c", "from live.cli import app; app(prog_name='trader')", *args],
                            env={**full_env, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def test_cli_refuses_token_on_clear_text_non_local_bind(tmp_path):
    p = trader("monitor", "--bind", "0.0.0.0", "--port", "0", env={"AIQ_MONITOR_TOKEN": "tok"})
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()] and "AIQ_MONITOR_TLS_TERMINATED=1" in err
    p = trader("monitor", env={"AIQ_MONITOR_PORT": "sixty"})
    _, err = p.communicate(timeout=30)
    assert p.returncode == 2 and err.strip() == "error: AIQ_MONITOR_PORT='sixty' is not an integer"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        p = trader("monitor", "--port", str(taken.getsockname()[1]))
        _, err = p.communicate(timeout=30)
    assert p.returncode == 1 and "error: cannot listen on 127.0.0.1:" in err and "Traceback" not in err


def test_cli_serves_until_sigterm(paper, tmp_path):
    p = trader("monitor", "--port", "0", env={"AIQ_MONITOR_PAPER_DB": str(tmp_path / "paper.db"),
                                              "AIQ_MONITOR_LIVE_DB": str(tmp_path / "live.db")})
    try:
        line = p.stderr.readline()
        url = re.search(r"serving (http://127\.0\.0\.1:\d+)", line).group(1)
        with urllib.request.urlopen(url + "/api/snapshot?mode=paper", timeout=10) as res:
            assert json.loads(res.read())["balance"] == pytest.approx(10027.27)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and "monitor: stopped" in err and "Traceback" not in err
    assert "token off" in line and str(tmp_path / "paper.db") in line


def test_busy_server_answers_503_past_max_active_requests(paper, desk_factory):
    desk = desk_factory(AIQ_MONITOR_MAX_ACTIVE_REQUESTS="1")
    entered, release = threading.Event(), threading.Event()
    real_get = desk.server.cache.get

    def slow_get(mode):  # a snapshot that takes as long as the test wants (a DB under a long checkpoint)
        entered.set()
        release.wait(10)
        return real_get(mode)

    desk.server.cache.get = slow_get
    first: list = []
    worker = threading.Thread(target=lambda: first.append(desk.get("/api/snapshot?mode=paper")[0]))
    worker.start()
    assert entered.wait(10)
    status, _, body = desk.get("/health")
    assert status == 503 and json.loads(body) == {"error": "too many active requests"}
    release.set()
    worker.join(10)
    assert first == [200] and desk.get("/health")[0] == 200


def test_positions_match_trading_db_replay_and_curve_is_incremental(paper, tmp_path):
    from live.monitor.snapshot import DeskReader, positions
    from live.trading_db import open_positions

    db = tmp_path / "paper.db"
    conn = open_readonly(db)
    full = [{k: v for k, v in p.items() if k != "state"} for p in open_positions(conn)]
    assert [{k: v for k, v in p.items() if k != "notional"} for p in positions(conn)] == full
    conn.close()

    reader = DeskReader("paper", db)
    assert reader.snapshot()["max_drawdown_pct"] == pytest.approx((10093.95 - 9987.85) / 10093.95 * 100, abs=1e-6)
    writer = open_trading_db(db)
    insert_trade(writer, {"symbol": "ETH", "type": "SHORT", "action": "CLOSE", "price": 3500, "size": 0.6,
                          "pnl": -300.0, "fee_usd": 1.0, "balance": 9726.27, "timestamp": iso_utc(now_ms())})
    writer.close()
    s = reader.snapshot()  # only the new fill is folded in, with the same result as a full rescan
    assert s["balance"] == pytest.approx(9726.27) and [p["symbol"] for p in s["open_positions"]] == ["BTC"]
    assert s["max_drawdown_pct"] == build_snapshot("paper", db)["max_drawdown_pct"]
    assert s["max_drawdown_pct"] == pytest.approx((10093.95 - 9726.27) / 10093.95 * 100, abs=1e-6)

    db.unlink()  # the operator starts a fresh paper DB: the folded curve must not leak into it
    fresh = open_trading_db(db)
    insert_trade(fresh, {"symbol": "BTC", "type": "LONG", "action": "OPEN", "price": 1, "size": 1, "balance": 500.0})
    fresh.close()
    s = reader.snapshot()
    assert s["balance"] == 500.0 and s["peak_balance"] == 500.0 and s["max_drawdown_pct"] == 0.0


def test_bind_policy():
    from live.env import EnvError
    from live.monitor.settings import bind_policy

    def policy(bind: str, **env: str):
        return bind_policy(load_monitor_settings(env, bind=bind))

    assert policy("127.0.0.1", AIQ_MONITOR_TOKEN="t") is None and policy("::1", AIQ_MONITOR_TOKEN="t") is None
    assert policy("localhost", AIQ_MONITOR_TOKEN="t") is None
    with pytest.raises(EnvError, match="AIQ_MONITOR_TLS_TERMINATED=1"):
        policy("10.0.0.5", AIQ_MONITOR_TOKEN="t")
    assert policy("10.0.0.5", AIQ_MONITOR_TOKEN="t", AIQ_MONITOR_TLS_TERMINATED="1") is None
    assert "not local" in policy("0.0.0.0") and "AIQ_MONITOR_TOKEN is unset" in policy("0.0.0.0")
    with pytest.raises(EnvError, match="AIQ_MONITOR_TLS_TERMINATED='maybe' is not a boolean"):
        load_monitor_settings({"AIQ_MONITOR_TLS_TERMINATED": "maybe"})
    assert "s3cret" not in repr(load_monitor_settings({"AIQ_MONITOR_TOKEN": "s3cret"}))


# ------------------------------------------------------------------ issue 10: paths, log escapes, kill state
def test_paths_hidden_without_token_and_shown_with_it(paper, tmp_path, desk_factory):
    conn = open_trading_db(tmp_path / "paper.db")
    audit(conn, "KILL_FILE", None, "warning", {"path": "/home/operator/ai-quant/kill", "note": "file:/srv/x/kill"})
    conn.close()
    (tmp_path / "live.db").write_bytes(b"not sqlite" * 100)  # unreadable: its status detail names the file
    desk = desk_factory()
    secret = str(tmp_path)
    for path in ("/api/snapshot?mode=paper", "/api/snapshot?mode=live", "/api/health", "/api/metrics", "/metrics",
                 "/", "/static/app.js", "/health"):
        status, _, body = desk.get(path)
        assert status == 200 and secret.encode() not in body and b"/home/operator" not in body, path
    status, s = desk.json("/api/snapshot?mode=paper")
    assert s["db"]["path"] == "paper.db" and s["recent_audit"][0]["data"] == {"path": "kill", "note": "file:kill"}
    status, s = desk.json("/api/snapshot?mode=live")
    assert s["db"]["path"] == "live.db" and s["db"]["detail"].startswith("live.db: ")

    auth = {"Authorization": "Bearer tok-123"}
    desk = desk_factory(AIQ_MONITOR_TOKEN="tok-123")
    status, s = desk.json("/api/snapshot?mode=live", auth)
    assert status == 200 and s["db"]["path"] == str(tmp_path / "live.db")  # the token holder sees the real path
    status, s = desk.json("/api/snapshot?mode=paper", auth)
    assert s["recent_audit"][0]["data"]["path"] == "/home/operator/ai-quant/kill"
    assert desk.get("/api/snapshot?mode=live")[0] == 401  # and without it, nothing at all


def raw_request(url: str, data: bytes) -> bytes:
    """A real TCP client that sends bytes no HTTP library would put in a request line."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_access_log_escapes_terminal_and_control_bytes(paper, tmp_path):
    import io

    log = io.StringIO()
    desk = Desk(settings_for(tmp_path), log_stream=log)
    try:
        reply = raw_request(desk.server.url, b"GET /\x1b[31mred\x07\x9b2J\\x1b HTTP/1.1\r\nHost: x\r\n"
                                             b"Connection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.0 404") or reply.startswith(b"HTTP/1.1 404")
        reply = raw_request(desk.server.url, b"\x1b]0;pwned\x07\x1b[2J garbage\r\n\r\n")
        assert b" 400 " in reply.split(b"\r\n")[0]
    finally:
        desk.close()
    text = log.getvalue()
    assert "\\x1b[31mred\\x07\\x9b2J\\\\x1b" in text  # visible escapes; a typed "\x1b" is doubled, not raw
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in text
    assert not any(ord(ch) < 0x20 and ch != "\n" or 0x7F <= ord(ch) < 0xA0 for ch in text), repr(text)
    assert all(line.startswith("monitor: 127.0.0.1 ") for line in text.splitlines())


def risk_db_with_latched_safe_mode(path: Path):
    """What a daemon that tripped safe mode leaves behind, written by the real RiskManager persistence."""
    from live.checkpoint import save_risk
    from live.clock import ManualClock
    from live.env import RiskLimits
    from live.risk import RiskManager

    conn = open_trading_db(path)
    rm = RiskManager(RiskLimits(kill_switch_file=path.parent / "no-kill-file"), ManualClock(),
                     on_persist=lambda snap: save_risk(conn, snap))
    rm.update_equity(10_000.0, now_ms())
    rm.update_equity(7_500.0, now_ms())  # 25% down: safe mode latches (default threshold 20%)
    assert rm.state()["kill"] == "close_only"
    return conn, rm


def test_kill_pill_shows_latched_safe_mode_right_after_a_restart(tmp_path, desk_factory):
    conn, rm = risk_db_with_latched_safe_mode(tmp_path / "paper.db")
    # the restarted daemon's first heartbeat says kill=off (it has not restored its risk state yet)
    log_row(conn, now_ms() - 1_000, format_heartbeat(**{**HB, "kill": "off", "kill_reason": None}))
    desk = desk_factory()
    status, s = desk.json("/api/snapshot?mode=paper")
    assert s["engine_up"] is True
    assert s["kill"] == {"mode": "close_only", "level": 1, "reason": "safe_mode", "source": "risk_state:safe_mode"}
    health = desk.json("/api/health?mode=paper")[1]["modes"]["paper"]
    assert health["kill"] == "close_only" and health["kill_level"] == 1
    assert parse_prometheus(desk.get("/metrics?mode=paper")[2].decode())[("kill_mode", "paper")] == 1.0

    rm.clear(by="test")  # an explicit clear persists an empty latch set: the heartbeat's "off" is true again
    s = desk.json("/api/snapshot?mode=paper")[1]
    assert s["kill"] == {"mode": "off", "level": 0, "reason": None, "source": "heartbeat"}
    conn.close()


@pytest.mark.parametrize("risk_json", ["{not json", '{"latched": ["safe_mode"]}', '"off"'])
def test_unreadable_kill_state_is_unknown_never_off(tmp_path, desk_factory, risk_json):
    conn = open_trading_db(tmp_path / "paper.db")
    log_row(conn, now_ms() - 1_000, format_heartbeat(**{**HB, "kill": "off", "kill_reason": None}))
    conn.execute("INSERT INTO engine_state (key, value_json) VALUES ('risk', ?)", (risk_json,))
    conn.close()
    desk = desk_factory()
    s = desk.json("/api/snapshot?mode=paper")[1]
    assert s["kill"]["mode"] == "unknown" and s["kill"]["level"] is None and s["kill"]["source"] == "risk_state"
    assert any(w.startswith("engine_state:") for w in s["warnings"])
    assert desk.json("/api/health?mode=paper")[1]["modes"]["paper"]["kill_level"] is None
    assert ("kill_mode", "paper") not in parse_prometheus(desk.get("/metrics?mode=paper")[2].decode())


def test_no_heartbeat_or_kill_none_is_unknown_and_the_page_never_paints_it_green(tmp_path, desk_factory):
    conn = open_trading_db(tmp_path / "paper.db")
    conn.close()
    desk = desk_factory()
    assert desk.json("/api/snapshot?mode=paper")[1]["kill"] == {"mode": "unknown", "level": None, "reason": None,
                                                                "source": "none"}
    assert desk.json("/api/snapshot?mode=live")[1]["kill"]["level"] is None  # missing DB: unknown too
    assert kill_state({"status": "ok", "fields": {"kill": None}}, [])["mode"] == "unknown"  # "kill=none"
    js = desk.get("/static/app.js")[2].decode()
    assert 'kill.mode === "off" && kill.level === 0) return "good"' in js
