"""The monitor page in a real headless Chromium against the real server on 127.0.0.1.

Each test reproduces one defect an operator saw in the old desk's screenshots and checks the
page as a browser renders it: kill banner within one poll of the audit row, sub-cent prices,
'stopped' at once, unknown kill never green, one column at phone width, UTC labels, charts drawn
by the vendored uPlot with no network, and no console error anywhere. A screenshot of every page
goes under the test's tmp dir (screens/*.png; also $AIQ_SCREENSHOT_DIR when set).
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from headless import browser, shoot  # noqa: F401 - `browser` is a fixture
from test_monitor import HB, Desk, log_row, settings_for

from live.monitor.snapshot import utc_day_start_ms
from live.runtime_log import format_heartbeat
from live.trading_db import (
    audit,
    insert_trade,
    iso_utc,
    now_ms,
    open_trading_db,
    save_engine_state,
    upsert_position_state,
)
from strategy.layout import NACCT, NPOS, POS_LAST_CLOSE, POS_SIDE, POS_STOP, POS_TRADE_FUNDING

DAY, H = 86_400_000, 3_600_000
POLL_S = 1.2            # app.js POLL_MS
PEPE_PRICE = 0.00001234  # a sub-cent perp: 4 fixed decimals would print 0.0000
CHECKPOINT_SYMBOLS = ["BTC", "ETH", "PEPE", "SOL"]


def fills(day0: int) -> list[tuple[int, dict]]:
    """Round trips over four UTC days, then BTC and PEPE open now."""
    rows, bal = [], 10_000.0
    plan = [(-3 * DAY, "SOL", "LONG", 150.0, 10.0, 160.0, 100.0), (-2 * DAY, "ETH", "SHORT", 3000.0, 1.0, 3100.0, -100.0),
            (-DAY, "SOL", "SHORT", 155.0, 10.0, 150.0, 50.0), (-DAY + 4 * H, "ETH", "LONG", 2900.0, 1.0, 2950.0, 50.0)]
    for off, sym, side, px, size, exit_px, pnl in plan:
        bal -= 1.0
        rows.append((off, dict(symbol=sym, type=side, action="OPEN", price=px, size=size, pnl=0.0, fee_usd=1.0, balance=bal)))
        bal += pnl - 1.0
        rows.append((off + 2 * H, dict(symbol=sym, type=side, action="CLOSE", price=exit_px, size=size, pnl=pnl,
                                       fee_usd=1.0, balance=bal)))
    rows.append((1000, dict(symbol="BTC", type="LONG", action="OPEN", price=62000.0, size=0.05, pnl=0.0, fee_usd=1.5,
                            balance=bal - 1.5)))
    rows.append((2000, dict(symbol="PEPE", type="SHORT", action="OPEN", price=PEPE_PRICE, size=40_000_000.0, pnl=0.0,
                            fee_usd=0.25, balance=bal - 1.75)))
    return rows


def save_checkpoint(conn, last_bar_t: int) -> None:
    """The engine checkpoint the daemon writes (live/checkpoint.py's layout): marks, stops, funding."""
    pos = np.zeros((len(CHECKPOINT_SYMBOLS), NPOS))
    pos[:, POS_LAST_CLOSE] = [63000.0, 2950.0, 0.00001201, 151.0]
    for i, side, stop, funding in ((0, 1.0, 61000.0, 0.42), (2, -1.0, 0.0000129, -0.03)):
        pos[i, POS_SIDE], pos[i, POS_STOP], pos[i, POS_TRADE_FUNDING] = side, stop, funding
    buf = io.BytesIO()
    np.savez(buf, states=np.zeros((4, 1)), feat=np.zeros((4, 1)), pos=pos, acct=np.zeros(NACCT))
    save_engine_state(conn, "engine", {"version": 1, "epoch": "t", "last_bar_t": last_bar_t, "symbols": CHECKPOINT_SYMBOLS,
                                       "windows": [], "config_id": "cfg", "flatten_seen": 0,
                                       "arrays": base64.b64encode(buf.getvalue()).decode("ascii")})


def build_desk_db(path, *, heartbeat_age_s: float = 5.0, kill: str = "off") -> int:
    now = now_ms()
    day0 = utc_day_start_ms(now)
    conn = open_trading_db(path)
    ids = [insert_trade(conn, {**row, "timestamp": iso_utc(min(day0 + off, now - 60_000)), "notional": row["price"] * row["size"]})
           for off, row in fills(day0)]
    upsert_position_state(conn, "BTC", open_trade_id=ids[-2], trailing_sl=61000.0)
    save_checkpoint(conn, now - 30 * 60_000)
    log_row(conn, now - int(heartbeat_age_s * 1000), format_heartbeat(**{**HB, "kill": kill, "kill_reason": None}))
    conn.close()
    return now


@pytest.fixture
def desk(tmp_path):
    d = Desk(settings_for(tmp_path))
    yield d
    d.close()


def open_desk(browser, desk, width=1360, height=1000):  # noqa: F811
    page = browser.open(desk.server.url + "/?mode=paper", width, height)
    page.wait_for("document.querySelector('#pills .pill b') !== null")
    return page


def pill_text(page, label: str) -> list:
    return page.js(f"""[...document.querySelectorAll('#pills .pill')].filter(p => p.querySelector('b')
        .textContent === {json.dumps(label)}).map(p => [p.lastChild.textContent, p.lastChild.className])[0]""")


def test_first_paint_says_loading_not_blank(desk, tmp_path, browser):  # noqa: F811
    build_desk_db(tmp_path / "paper.db")
    html = desk.get("/")[2].decode()
    assert html.count("loading…") >= 3  # before any script ran: header, banner, tables
    page = browser.open(desk.server.url + "/static/none.css")  # 404 page, then the desk with JS off
    page.send("Emulation.setScriptExecutionDisabled", value=True)
    page.goto(desk.server.url + "/")
    assert "loading…" in page.js("document.getElementById('banners').textContent")
    shoot(page, tmp_path, "monitor_first_paint")
    page.close()


def test_desk_shows_charts_positions_round_trips_and_lag_with_no_console_error(desk, tmp_path, browser):  # noqa: F811
    build_desk_db(tmp_path / "paper.db")
    page = open_desk(browser, desk)
    page.wait_for("document.querySelectorAll('.uplot canvas').length === 2")
    assert page.js("document.querySelectorAll('#equity-chart .uplot, #daily-chart .uplot').length") == 2
    assert page.console_errors() == []
    # offline: every resource the page loaded came from the monitor itself (no CDN)
    origins = page.js("performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert origins and set(origins) == {desk.server.url}
    positions = page.js("document.getElementById('positions').innerText")
    assert "0.00001234" in positions and "0.00001201" in positions  # sub-cent entry and mark, readable
    assert "0.0000\t" not in positions and "63,000" in positions
    assert "UTC" in positions and "−" not in positions
    btc = page.js("[...document.querySelectorAll('#positions tr')].find(r => r.cells[0].textContent === 'BTC').innerText")
    assert "50.00" in btc  # unrealised: (63000 - 62000) x 0.05
    assert "3.17%" in btc  # to stop: (63000 - 61000) / 63000
    lag = page.js("[...document.querySelectorAll('#lag .pill')].map(p => p.dataset.symbol)")
    assert lag == CHECKPOINT_SYMBOLS
    assert page.js("document.querySelector('.u-axis') !== null")
    trips = page.js("document.querySelectorAll('#roundtrips tr').length") - 1
    assert trips == 4
    page.js("(() => { const s = document.getElementById('rt-filter'); s.value = 'SOL'; s.dispatchEvent(new Event('change')); })()")
    assert page.js("[...document.querySelectorAll('#roundtrips tr')].slice(1).map(r => r.cells[1].textContent)") == ["SOL", "SOL"]
    assert page.js("document.getElementById('clock').textContent").endswith(" UTC")
    step = pill_text(page, "last step")[0]   # the checkpoint's last processed (sub-)bar
    assert step.startswith("bar ") and step.endswith(" UTC"), step
    shoot(page, tmp_path, "monitor_desk")
    page.close()


def test_kill_banner_appears_within_one_poll_of_the_audit_row(desk, tmp_path, browser):  # noqa: F811
    """The old desk kept a green 'off' pill (from the heartbeat) while the audit table showed halt_all."""
    build_desk_db(tmp_path / "paper.db")
    page = open_desk(browser, desk)
    assert pill_text(page, "kill") == ["off", "good"]
    assert page.js("document.querySelectorAll('#banners .banner').length") == 0
    conn = open_trading_db(tmp_path / "paper.db")
    audit(conn, "RISK_KILL", None, "warning", {"mode": "halt_all", "reason": "manual", "source": "manual",
                                               "effective": "halt_all"})
    conn.close()
    page.wait_for("document.getElementById('banners').textContent.includes('KILL HALT_ALL')", timeout_s=POLL_S + 1.5)
    assert pill_text(page, "kill")[1] == "bad"
    assert page.console_errors() == []
    shoot(page, tmp_path, "monitor_kill_banner")
    page.close()


def test_stopped_trader_is_stopped_at_once_not_up_until_stale(desk, tmp_path, browser):  # noqa: F811
    now = build_desk_db(tmp_path / "paper.db")
    page = open_desk(browser, desk)
    assert pill_text(page, "engine") == ["up", "good"]
    conn = open_trading_db(tmp_path / "paper.db")
    log_row(conn, now, "trader stopped after 812 loops; last bar 2024-03-05T10:00Z")
    conn.close()
    page.wait_for("document.getElementById('banners').textContent.includes('ENGINE STOPPED')", timeout_s=POLL_S + 1.5)
    assert pill_text(page, "engine") == ["stopped", "bad"]
    shoot(page, tmp_path, "monitor_stopped")
    page.close()


def test_unknown_kill_is_never_green_and_has_a_banner(desk, tmp_path, browser):  # noqa: F811
    open_trading_db(tmp_path / "paper.db").close()  # a DB with no heartbeat: nothing is known
    page = open_desk(browser, desk)
    assert pill_text(page, "kill") == ["unknown", "warn"]
    banners = page.js("document.getElementById('banners').textContent")
    assert "KILL STATE UNKNOWN" in banners and "NO HEARTBEAT" in banners
    assert page.console_errors() == []
    shoot(page, tmp_path, "monitor_unknown")
    page.close()


def test_phone_width_is_one_column(desk, tmp_path, browser):  # noqa: F811
    build_desk_db(tmp_path / "paper.db")
    page = open_desk(browser, desk, width=420, height=900)
    page.wait_for("document.querySelectorAll('.uplot').length === 2")
    lefts = page.js("[...document.querySelectorAll('main > section')].map(s => Math.round(s.getBoundingClientRect().left))")
    assert len(set(lefts)) == 1, lefts
    assert page.js("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert page.console_errors() == []
    shoot(page, tmp_path, "monitor_phone")
    page.close()


def test_latched_safe_mode_has_its_own_banner_even_under_a_worse_kill(desk, tmp_path, browser):  # noqa: F811
    build_desk_db(tmp_path / "paper.db", kill="halt_all")
    conn = open_trading_db(tmp_path / "paper.db")
    save_engine_state(conn, "risk", {"latched": {"safe_mode": {"mode": "close_only", "reason": "safe_mode",
                                                               "since_ms": now_ms()}}})
    conn.close()
    page = open_desk(browser, desk)
    banners = page.js("[...document.querySelectorAll('#banners .banner')].map(b => b.textContent)")
    assert banners[0].startswith("KILL HALT_ALL") and any(b.startswith("SAFE MODE") for b in banners)
    assert page.console_errors() == []
    shoot(page, tmp_path, "monitor_safe_mode")
    page.close()
