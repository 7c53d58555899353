"""Emergency stop: pause entries with the kill file, then flatten positions (OPS_RUNBOOK.md §1a).

Order matters: the kill file is written first so the trader cannot open anything new while the
book is being flattened, and it is left in place afterwards: clearing it is a human decision
after the incident review. Paper closes are priced at the symbol's last candle close when a
candle DB is given (--candles-db), else at the entry price (pnl 0); no fee is charged.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

import typer

from live.env import REPO_ROOT
from live.trading_db import (
    atomic_write_text,
    audit,
    bump_flatten_seq,
    delete_position_state,
    insert_trade,
    iso_utc,
    last_balance,
    now_ms,
    open_positions,
    open_trading_db,
    transaction,
)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


class LiveFlattenUnavailable(RuntimeError):
    pass


def fail(message: str, code: int = 2) -> None:
    print(message, file=sys.stderr)
    raise typer.Exit(code)


def write_kill_file(path: Path, mode: str) -> None:
    atomic_write_text(path, mode + "\n", mode=0o600)


def last_close(candles_db: Path | None, symbol: str) -> float | None:
    if candles_db is None or not candles_db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{candles_db}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT c FROM candles WHERE symbol = ? ORDER BY t DESC LIMIT 1", (symbol,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return float(row[0]) if row and row[0] is not None and row[0] > 0 else None


def flatten_paper(db: Path, *, candles_db: Path | None = None, reason: str = "flat_now") -> list[dict]:
    """Close every open paper position with a SYSTEM/CLOSE row and clear position_state, atomically."""
    if not db.exists():
        return []
    conn = open_trading_db(db)
    try:
        positions = open_positions(conn)
        stale_state = conn.execute("SELECT COUNT(*) FROM position_state").fetchone()[0]
        if not positions and not stale_state:
            return []
        closed: list[dict] = []
        with transaction(conn):
            balance = last_balance(conn) or 0.0
            for pos in positions:
                closed.append(_close_one(conn, pos, candles_db, reason, balance))
                balance = closed[-1]["balance"]
            delete_position_state(conn)
            symbols = [c["symbol"] for c in closed]
            audit(conn, "FLAT_NOW", None, "warn", {"reason": reason, "symbols": symbols})
            bump_flatten_seq(conn, {"ts_ms": now_ms(), "symbols": symbols, "reason": reason})
        return closed
    finally:
        conn.close()


def _close_one(conn: sqlite3.Connection, pos: dict, candles_db: Path | None, reason: str, balance: float) -> dict:
    sign = 1.0 if pos["side"] == "LONG" else -1.0
    price = last_close(candles_db, pos["symbol"])
    source = f"candles:{candles_db}" if price is not None else "entry"
    price = pos["entry_price"] if price is None else price
    pnl = (price - pos["entry_price"]) * pos["size"] * sign
    balance += pnl
    insert_trade(conn, {
        "timestamp": iso_utc(now_ms()), "symbol": pos["symbol"], "type": "SYSTEM", "action": "CLOSE",
        "price": price, "size": pos["size"], "notional": price * pos["size"], "reason": reason,
        "confidence": "N/A", "pnl": pnl, "fee_usd": 0.0, "fee_rate": 0.0, "balance": balance,
        "entry_atr": pos["entry_atr"], "leverage": pos["leverage"], "margin_used": 0.0,
        "meta_json": {"flat_now": True, "side": pos["side"], "entry_price": pos["entry_price"],
                      "price_source": source, "fee": "not charged", "open_trade_id": pos["open_trade_id"]},
    })
    return {"symbol": pos["symbol"], "side": pos["side"], "size": pos["size"], "price": price, "pnl": pnl,
            "price_source": source, "balance": balance}


def flatten_live(*, secrets_path: Path, max_retries: int, slippage_pct: float, verify_sleep_s: float,
                 base_url: str | None = None, timeout_s: float = 10.0) -> tuple[int, dict[str, float]]:
    """Reduce-only IOC close of every exchange position, retried, then verified.

    Returns (positions closed, positions still open after verification). Ignores the live gates on
    purpose (flattening only reduces risk, and the operator typed --yes) but honours
    AI_QUANT_HARD_KILL_SWITCH, which by definition blocks every order.
    """
    from live.hl_broker import HyperliquidBroker, round_price
    from live.live_gates import hard_kill_active
    from live.secrets import SecretsError, load_secrets

    if hard_kill_active():
        raise LiveFlattenUnavailable("AI_QUANT_HARD_KILL_SWITCH is set: it blocks every order, flatten included")
    try:
        secrets = load_secrets(secrets_path)
    except SecretsError as exc:
        raise LiveFlattenUnavailable(str(exc)) from None
    url = base_url or os.environ.get("AI_QUANT_HL_BASE_URL", "").strip() or "https://api.hyperliquid.xyz"
    try:
        broker = HyperliquidBroker(url, secrets, timeout_s=timeout_s, slippage_pct=slippage_pct)
        start = broker.positions()
    except Exception as exc:
        raise LiveFlattenUnavailable(f"{url}: cannot read the account "
                                     f"({secrets.redact(type(exc).__name__ + ': ' + str(exc))[:300]})") from None
    closed: set[str] = set()
    for coin in sorted(start):
        for attempt in range(1, max(1, max_retries) + 1):
            held = broker.positions().get(coin, 0.0)
            if held == 0.0:
                break
            is_buy = held < 0
            px = round_price(broker.mid(coin) * (1 + slippage_pct if is_buy else 1 - slippage_pct),
                             broker.sz_decimals(coin), up=is_buy)
            cloid = "0x" + os.urandom(16).hex()
            res = broker.submit(coin, is_buy, abs(held), px, reduce_only=True, cloid=cloid, tif="Ioc")
            print(f"live: {coin} close {abs(held):g} attempt {attempt}: {res.status}"
                  f"{' filled ' + format(res.filled_sz, 'g') if res.filled_sz else ''}"
                  f"{' (' + res.error + ')' if res.error else ''}", file=sys.stderr)
        closed.add(coin)
    if start:
        time.sleep(max(0.0, verify_sleep_s))
    remaining = broker.positions()
    return len([c for c in closed if c not in remaining]), remaining


def _confirm(yes: bool, what: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        fail("refusing to act without --yes (stdin is not a terminal)")
    if not typer.confirm(f"{what}?", default=False):
        fail("aborted", 1)


@app.command()
def main(
    kill_file: str = typer.Option("", help="Kill file to write (default AI_QUANT_KILL_SWITCH_FILE)."),
    pause_mode: str = typer.Option("close_only", help="close_only (exits still run) or halt_all."),
    reason: str = typer.Option("flat_now", help="Reason recorded on the close rows."),
    paper: bool = typer.Option(False, "--paper", help="Flatten the paper DB (the default target)."),
    paper_db: Path = typer.Option(None, help="Paper DB (default <repo>/trading_engine.db)."),
    candles_db: Path = typer.Option(None, help="Candle DB for close prices (else entry price is used)."),
    live: bool = typer.Option(False, "--live", help="Also flatten the live exchange account (needs --yes)."),
    secrets_path: Path = typer.Option(None, help="Secrets JSON (default AI_QUANT_SECRETS_PATH)."),
    max_retries: int = typer.Option(3, help="Live: close attempts per position."),
    slippage_pct: float = typer.Option(0.02, help="Live: market-close slippage bound."),
    verify_sleep_s: float = typer.Option(5.0, help="Live: wait before verifying the close."),
    no_pause: bool = typer.Option(False, "--no-pause", help="Do not write the kill file."),
    yes: bool = typer.Option(False, "--yes", help="Do it without asking."),
) -> None:
    """Pause trading (kill file) and flatten positions. Never clears the kill switch."""
    if pause_mode not in ("close_only", "halt_all"):
        fail(f"--pause-mode {pause_mode!r}: must be close_only or halt_all")
    if live and not yes:
        fail("--live requires --yes (it sends real reduce-only orders)")
    do_paper = paper or not live
    paper_db = paper_db or REPO_ROOT / "trading_engine.db"
    kill_text = (kill_file or os.environ.get("AI_QUANT_KILL_SWITCH_FILE", "")).strip()
    if not no_pause and not kill_text:
        fail("no kill file: pass --kill-file or set AI_QUANT_KILL_SWITCH_FILE (or use --no-pause)")
    kill_path = Path(kill_text).expanduser()
    targets = ", ".join(t for t, on in (("paper " + str(paper_db), do_paper), ("live", live)) if on)
    _confirm(yes, f"{'' if no_pause else f'Pause ({pause_mode}) and '}flatten {targets}")

    paused = 0
    if not no_pause:
        write_kill_file(kill_path, pause_mode)
        paused = 1
        print(f"paused: wrote {pause_mode} to {kill_path} (left in place; clear it after review)", file=sys.stderr)
    closed: list[dict] = []
    if do_paper:
        try:
            closed = flatten_paper(paper_db, candles_db=candles_db, reason=reason)
        except sqlite3.Error as exc:
            fail(f"{paper_db}: {exc}", 1)
        for c in closed:
            print(f"paper: closed {c['symbol']} {c['side']} {c['size']:g} @ {c['price']:g} "
                  f"({c['price_source']}) pnl={c['pnl']:+.2f}", file=sys.stderr)
    live_closed = 0
    if live:
        try:
            live_closed, remaining = flatten_live(
                secrets_path=secrets_path or Path(os.environ.get("AI_QUANT_SECRETS_PATH", "").strip() or
                                                  Path.home() / ".config/openclaw/ai-quant-secrets.json"),
                max_retries=max_retries, slippage_pct=slippage_pct, verify_sleep_s=verify_sleep_s)
        except LiveFlattenUnavailable as exc:
            fail(str(exc))
        if remaining:
            left = ", ".join(f"{c} {szi:g}" for c, szi in sorted(remaining.items()))
            print(f"live: positions still open after {max_retries} attempts: {left}", file=sys.stderr)
            print(f"Done: paused={paused} paper_closed={len(closed)} live_closed={live_closed} "
                  f"live_remaining={len(remaining)}", file=sys.stderr)
            raise typer.Exit(1)
    print(f"Done: paused={paused} paper_closed={len(closed)} live_closed={live_closed}", file=sys.stderr)


if __name__ == "__main__":
    app()
