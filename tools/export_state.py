"""Export the trader's open positions and balance as JSON: the input of `backtester replay --init-state`.

Paper state comes from the paper DB; `--source live` reads the live DB only (reconciling it with
the exchange account needs the live broker, which is not wired here yet, and says so).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import typer

from live.env import REPO_ROOT
from live.trading_db import atomic_write_text, last_balance, now_ms, open_positions

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
POSITION_KEYS = ("symbol", "side", "size", "entry_price", "entry_atr", "trailing_sl", "confidence", "leverage",
                 "margin_used", "adds_count", "tp1_taken", "open_time_ms", "last_add_time_ms",
                 "entry_adx_threshold")


def fail(message: str, code: int = 1) -> None:
    print(message, file=sys.stderr)
    raise typer.Exit(code)


def default_db(source: str) -> Path:
    if source == "paper":
        return Path(os.environ.get("AI_QUANT_PAPER_DB_PATH") or REPO_ROOT / "trading_engine.db")
    return Path(os.environ.get("AI_QUANT_LIVE_DB_PATH") or REPO_ROOT / "trading_engine_live.db")


def build_state(db: Path, source: str) -> dict:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        positions = open_positions(conn)
        balance = last_balance(conn)
    finally:
        conn.close()
    return {
        "version": 1,
        "source": source,
        "exported_at_ms": now_ms(),
        "balance": balance,
        "positions": [{k: p.get(k) for k in POSITION_KEYS} for p in positions],
    }


@app.command()
def main(
    source: str = typer.Option(..., help="paper or live."),
    output: Path = typer.Option(..., help="JSON file to write (atomically)."),
    db: Path = typer.Option(None, help="Trading DB (default: the paper or live DB of the repo)."),
) -> None:
    """Write {version, source, exported_at_ms, balance, positions[]} for replay --init-state."""
    if source not in ("paper", "live"):
        fail(f"--source {source!r}: must be paper or live", 2)
    db = db or default_db(source)
    if not db.exists():
        fail(f"{db}: no such trading DB")
    try:
        state = build_state(db, source)
    except sqlite3.Error as exc:
        fail(f"{db}: {exc}")
    if source == "live":
        print("live: positions from the live DB only (exchange reconciliation needs the live broker)",
              file=sys.stderr)
    if state["balance"] is None:
        print(f"{db}: no trade carries a balance yet; balance is null", file=sys.stderr)
    atomic_write_text(output, json.dumps(state, indent=2, sort_keys=False) + "\n")
    print(f"wrote {output}: balance={state['balance']} positions={len(state['positions'])}", file=sys.stderr)


if __name__ == "__main__":
    app()
