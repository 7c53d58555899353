"""Emergency stop: pause entries with the kill file, then flatten positions (OPS_RUNBOOK.md §1a).

Order matters: the kill file is written first so the trader cannot open anything new while the
book is being flattened, and it is left in place afterwards: clearing it is a human decision
after the incident review.

The paper DB defaults to the daemon's: AI_QUANT_PAPER_DB_PATH, else AI_QUANT_DB_PATH (when
AI_QUANT_MODE is paper or unset), else trading_engine.db; relative paths are anchored at the repo
root as live/env.py anchors them. A missing or unreadable paper DB is an error (exit 2), never a
silent "paper_closed=0". Paper closes are priced at the symbol's last candle close in --candles-db
(default $AI_QUANT_CANDLES_DB_DIR/candles_<interval>.db, the interval being AI_QUANT_INTERVAL, else
the strategy YAML's global.engine.interval, else 1h). A symbol without a candle price is left open
(exit 1) unless --allow-entry-price books it at the entry price (pnl 0). No fee is charged.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

import typer

from live.env import EnvError, env_path
from live.kill_switch import default_kill_file, ensure_private_dir
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


class LiveVerifyFailed(RuntimeError):
    pass


def fail(message: str, code: int = 2) -> None:
    print(message, file=sys.stderr)
    raise typer.Exit(code)


class PaperDbUnavailable(RuntimeError):
    pass


def default_paper_db(env: dict | None = None) -> Path:
    """The paper daemon's DB: AI_QUANT_PAPER_DB_PATH, else AI_QUANT_DB_PATH of a paper daemon, else
    trading_engine.db (relative paths anchored at the repo root, as live/env.py does)."""
    env = os.environ if env is None else env
    mode = (env.get("AI_QUANT_MODE") or "").strip().lower() or "paper"
    names = ["AI_QUANT_PAPER_DB_PATH"] + (["AI_QUANT_DB_PATH"] if mode == "paper" else [])
    for name in names:
        path = env_path(env, name, None)
        if path is not None:
            return path
    return env_path(env, "AI_QUANT_PAPER_DB_PATH", "trading_engine.db")


def default_candles_db(env: dict | None = None) -> tuple[Path | None, str]:
    """($AI_QUANT_CANDLES_DB_DIR/candles_<interval>.db, how the interval was chosen), or (None, why not)."""
    from marketdata.intervals import MarketDataError, normalize_interval

    env = os.environ if env is None else env
    raw = (env.get("AI_QUANT_INTERVAL") or "").strip()
    source = "AI_QUANT_INTERVAL"
    if not raw:
        yaml_path = env_path(env, "AI_QUANT_STRATEGY_YAML", "config/strategy_overrides.yaml")
        source = f"global.engine.interval of {yaml_path}"
        if yaml_path.is_file():
            try:
                from strategy.config import load_config

                raw = str(load_config(yaml_path).interval or "")
            except Exception as exc:  # a broken YAML must not stop an emergency flatten
                return None, f"cannot read {yaml_path} ({type(exc).__name__}: {str(exc)[:200]})"
        if not raw:
            raw, source = "1h", "default 1h"
    try:
        interval = normalize_interval(raw)
        candles_dir = env_path(env, "AI_QUANT_CANDLES_DB_DIR", "candles_dbs")
    except (MarketDataError, EnvError) as exc:
        return None, f"{source}: {exc}"
    return candles_dir / f"candles_{interval}.db", f"interval {interval} from {source}"


def check_paper_db(db: Path) -> None:
    """Raise PaperDbUnavailable unless `db` is an existing, readable trading DB (has a trades table)."""
    if not db.is_file():
        raise PaperDbUnavailable(f"paper DB {db} does not exist")
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            ok = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='trades'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise PaperDbUnavailable(f"paper DB {db} is unreadable ({exc})") from None
    if ok is None:
        raise PaperDbUnavailable(f"paper DB {db} is not a trading DB (no trades table)")


def write_kill_file(path: Path, mode: str) -> None:
    ensure_private_dir(path)
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


def flatten_paper(db: Path, *, candles_db: Path | None = None, reason: str = "flat_now",
                  allow_entry_price: bool = False) -> tuple[list[dict], list[dict]]:
    """Close every open paper position with a SYSTEM/CLOSE row and clear its position_state, atomically.

    Returns (closed, refused): a position without a candle price is refused (left open, its state
    kept) unless allow_entry_price, which books it at the entry price. Raises PaperDbUnavailable
    when the DB is missing or not a trading DB.
    """
    check_paper_db(db)
    conn = open_trading_db(db)
    try:
        positions = open_positions(conn)
        stale_state = conn.execute("SELECT COUNT(*) FROM position_state").fetchone()[0]
        if not positions and not stale_state:
            return [], []
        closed: list[dict] = []
        refused: list[dict] = []
        with transaction(conn):
            balance = last_balance(conn) or 0.0
            for pos in positions:
                price = last_close(candles_db, pos["symbol"])
                if price is None and not allow_entry_price:
                    refused.append(pos)
                    continue
                closed.append(_close_one(conn, pos, price, candles_db, reason, balance))
                balance = closed[-1]["balance"]
            keep = {p["symbol"] for p in refused}
            for (sym,) in conn.execute("SELECT symbol FROM position_state").fetchall():
                if sym not in keep:
                    delete_position_state(conn, sym)
            symbols = [c["symbol"] for c in closed]
            if closed or stale_state:
                audit(conn, "FLAT_NOW", None, "warn", {"reason": reason, "symbols": symbols,
                                                       "refused": sorted(keep)})
                bump_flatten_seq(conn, {"ts_ms": now_ms(), "symbols": symbols, "reason": reason})
        return closed, refused
    finally:
        conn.close()


def _close_one(conn: sqlite3.Connection, pos: dict, price: float | None, candles_db: Path | None, reason: str,
               balance: float) -> dict:
    sign = 1.0 if pos["side"] == "LONG" else -1.0
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
    """Reduce-only IOC close of every exchange position, retried, then its resting trigger orders
    cancelled, then verified.

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
    for coin in sorted(start):
        for attempt in range(1, max(1, max_retries) + 1):
            try:
                held = broker.positions().get(coin, 0.0)
                if held == 0.0:
                    break
                is_buy = held < 0
                px = round_price(broker.mid(coin) * (1 + slippage_pct if is_buy else 1 - slippage_pct),
                                 broker.sz_decimals(coin), up=is_buy)
                cloid = "0x" + os.urandom(16).hex()
                res = broker.submit(coin, is_buy, abs(held), px, reduce_only=True, cloid=cloid, tif="Ioc")
            except Exception as exc:  # one coin's trouble must not stop the others
                print(f"live: {coin} attempt {attempt} failed: "
                      f"{secrets.redact(type(exc).__name__ + ': ' + str(exc))[:300]}", file=sys.stderr)
                continue
            print(f"live: {coin} close {abs(held):g} attempt {attempt}: {res.status}"
                  f"{' filled ' + format(res.filled_sz, 'g') if res.filled_sz else ''}"
                  f"{' (' + res.error + ')' if res.error else ''}", file=sys.stderr)
    if start:
        time.sleep(max(0.0, verify_sleep_s))
    cancel_trigger_orders(broker, secrets.redact)
    try:
        remaining = broker.positions()
    except Exception as exc:
        raise LiveVerifyFailed(f"{url}: cannot verify the close "
                               f"({secrets.redact(type(exc).__name__ + ': ' + str(exc))[:300]}); "
                               f"positions at the start: {', '.join(sorted(start)) or 'none'}") from None
    return len([c for c in start if c not in remaining]), remaining


def cancel_trigger_orders(broker, redact) -> int:
    """Cancel every resting trigger order of the account (the trader's protective stops and
    targets, or anyone's): after the closes they guard nothing, and a stop left resting would open
    nothing (reduce-only) but would confuse the next start. Cancelled after the closes, so the
    positions stay protected while they are being closed. Returns how many were cancelled."""
    try:
        orders = broker.trigger_orders()
    except Exception as exc:
        print(f"live: cannot list trigger orders: {redact(type(exc).__name__ + ': ' + str(exc))[:300]}",
              file=sys.stderr)
        return 0
    done = 0
    for o in orders:
        ok, text = broker.cancel_oid(o["coin"], int(o["oid"]))
        done += ok
        print(f"live: cancel {o['coin']} {o.get('orderType', 'trigger')} oid={o['oid']} "
              f"trigger={o.get('triggerPx')}: {'cancelled' if ok else text}", file=sys.stderr)
    return done


def _confirm(yes: bool, what: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        fail("refusing to act without --yes (stdin is not a terminal)")
    if not typer.confirm(f"{what}?", default=False):
        fail("aborted", 1)


@app.command()
def main(
    kill_file: str = typer.Option("", help="Kill file to write (default AI_QUANT_KILL_SWITCH_FILE, else "
                                  "~/.local/state/openclaw-ai-quant/kill, the trader's default)."),
    pause_mode: str = typer.Option("close_only", help="close_only (exits still run) or halt_all."),
    reason: str = typer.Option("flat_now", help="Reason recorded on the close rows."),
    paper: bool = typer.Option(False, "--paper", help="Flatten the paper DB (the default target)."),
    paper_db: Path = typer.Option(None, help="Paper DB (default AI_QUANT_PAPER_DB_PATH, else AI_QUANT_DB_PATH "
                                             "of a paper daemon, else <repo>/trading_engine.db)."),
    candles_db: Path = typer.Option(None, help="Candle DB for close prices (default $AI_QUANT_CANDLES_DB_DIR/"
                                               "candles_<interval>.db)."),
    allow_entry_price: bool = typer.Option(False, "--allow-entry-price",
                                           help="Close a symbol without a candle price at its entry price (pnl 0)."),
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
    try:
        paper_db = paper_db.expanduser() if paper_db else default_paper_db()
    except EnvError as exc:
        fail(str(exc))
    candles_note = "--candles-db"
    if do_paper and candles_db is None:
        candles_db, candles_note = default_candles_db()
    kill_text = (kill_file or os.environ.get("AI_QUANT_KILL_SWITCH_FILE", "")).strip()
    kill_path = Path(kill_text).expanduser() if kill_text else default_kill_file()  # the trader's default too
    targets = ", ".join(t for t, on in (("paper " + str(paper_db), do_paper), ("live", live)) if on)
    _confirm(yes, f"{'' if no_pause else f'Pause ({pause_mode}) and '}flatten {targets}")

    paused = 0
    if not no_pause:
        write_kill_file(kill_path, pause_mode)
        paused = 1
        print(f"paused: wrote {pause_mode} to {kill_path} (left in place; clear it after review)", file=sys.stderr)
    pause_said = (f"the kill file {kill_path} WAS written ({pause_mode})" if paused
                  else "nothing was paused (--no-pause)")
    closed: list[dict] = []
    refused: list[dict] = []
    paper_error = ""  # exit 2 at the end: a bad paper DB must not block the live flatten
    if do_paper:
        try:
            closed, refused = flatten_paper(paper_db, candles_db=candles_db, reason=reason,
                                            allow_entry_price=allow_entry_price)
        except PaperDbUnavailable as exc:
            paper_error = f"{exc}: nothing flattened in paper; {pause_said}"
        except sqlite3.Error as exc:
            paper_error = f"paper DB {paper_db}: {exc}: nothing flattened in paper; {pause_said}"
        if paper_error:
            print(paper_error, file=sys.stderr)
        if refused or any(c["price_source"] == "entry" for c in closed):
            if candles_db is None:
                print(f"paper: no candle price source ({candles_note})", file=sys.stderr)
            elif not candles_db.is_file():
                print(f"paper: no candle DB at {candles_db} ({candles_note})", file=sys.stderr)
        for c in closed:
            if c["price_source"] == "entry":
                print(f"paper: closed {c['symbol']} {c['side']} {c['size']:g} at the ENTRY price {c['price']:g} "
                      f"(no candle price; --allow-entry-price) pnl={c['pnl']:+.2f}", file=sys.stderr)
            else:
                print(f"paper: closed {c['symbol']} {c['side']} {c['size']:g} @ {c['price']:g} "
                      f"({c['price_source']}) pnl={c['pnl']:+.2f}", file=sys.stderr)
        for r in refused:
            print(f"paper: NOT closed {r['symbol']} {r['side']} {r['size']:g}: no candle price in "
                  f"{candles_db or 'any candle DB'} (pass --candles-db, or --allow-entry-price to close at the "
                  f"entry price {r['entry_price']:g})", file=sys.stderr)
    live_closed, remaining = 0, {}
    if live:
        try:
            live_closed, remaining = flatten_live(
                secrets_path=secrets_path or Path(os.environ.get("AI_QUANT_SECRETS_PATH", "").strip() or
                                                  Path.home() / ".config/openclaw/ai-quant-secrets.json"),
                max_retries=max_retries, slippage_pct=slippage_pct, verify_sleep_s=verify_sleep_s)
        except LiveFlattenUnavailable as exc:
            fail(str(exc))
        except LiveVerifyFailed as exc:
            fail(f"live: {exc}", 1)
        if remaining:
            left = ", ".join(f"{c} {szi:g}" for c, szi in sorted(remaining.items()))
            print(f"live: positions still open after {max_retries} attempts: {left}", file=sys.stderr)
    if paper_error and not live:
        raise typer.Exit(2)
    summary = f"Done: paused={paused} paper_closed={len(closed)} live_closed={live_closed}"
    if refused:
        summary += f" paper_refused={len(refused)}"
    if remaining:
        summary += f" live_remaining={len(remaining)}"
    if paper_error:
        summary += " paper=FAILED"
    print(summary, file=sys.stderr)
    if paper_error:
        raise typer.Exit(2)
    if refused or remaining:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
