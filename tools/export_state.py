"""Export the trader's open positions and balance as JSON: the input of `backtester replay --init-state`.

Paper state comes from the paper DB; `--source live` reads the live DB only (reconciling it with
the exchange account needs the live broker, which is not wired here yet, and says so). The DB is
the one the daemon of that source uses (tools/trading_dbs.py: AI_QUANT_PAPER_DB_PATH /
AI_QUANT_LIVE_DB_PATH, else AI_QUANT_DB_PATH of a daemon of that mode, else its default file).

Exit codes: 0 written; 1 the DB is missing, unreadable, not a trading DB or has no balance yet, or
the output cannot be written (one line on stderr, no output file); 2 a bad flag.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import typer

from live.trading_db import last_balance, now_ms, open_positions
from strategy.cli_io import OutputError, check_output_path, die, write_output
from tools.trading_dbs import SOURCES, TradingDbUnavailable, daemon_db_path, open_trading_db_ro

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
POSITION_KEYS = ("symbol", "side", "size", "entry_price", "entry_atr", "trailing_sl", "confidence", "leverage",
                 "margin_used", "adds_count", "tp1_taken", "open_time_ms", "last_add_time_ms",
                 "entry_adx_threshold")


def build_state(db: Path, source: str) -> dict:
    """The replay init-state of `db`; refuses (TradingDbUnavailable) a DB without a balance, since a
    state with `"balance": null` would seed nothing and look like success."""
    conn = open_trading_db_ro(db)
    try:
        positions = open_positions(conn)
        balance = last_balance(conn)
    except sqlite3.Error as exc:
        raise TradingDbUnavailable(f"{db}: unreadable ({exc})") from None
    finally:
        conn.close()
    if balance is None:
        raise TradingDbUnavailable(f"{db}: no trade carries a balance yet: nothing to export")
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
    output: Path = typer.Option(..., "--output", "--out", help="JSON file to write (atomically)."),
    db: Path = typer.Option(None, help="Trading DB (default: the DB the paper or live daemon uses)."),
) -> None:
    """Write {version, source, exported_at_ms, balance, positions[]} for replay --init-state."""
    if source not in SOURCES:
        die(f"--source {source!r}: must be paper or live", 2)
    try:
        check_output_path(output)
        db = db or daemon_db_path(source)
        state = build_state(db, source)
        write_output(output, json.dumps(state, indent=2, sort_keys=False) + "\n")
    except OutputError as exc:
        die(str(exc), 1)
    except TradingDbUnavailable as exc:
        die(str(exc), 1)
    if source == "live":
        print("live: positions from the live DB only (exchange reconciliation needs the live broker)",
              file=sys.stderr)
    print(f"wrote {output}: balance={state['balance']} positions={len(state['positions'])}", file=sys.stderr)


if __name__ == "__main__":
    app()
