"""Candle DB freshness + gap + row integrity check (runbook §3): JSON on stdout, one line per DB on stderr.

Per symbol, every row (whole history: a replay reads all of it) is validated with the rule every
reader applies (marketdata/sanity.py: numeric and finite cells, 0 < price <= the price bound,
volume >= 0, l <= o, c <= h, 2009 <= t < 2100): any such row is a FAIL, counted, and the first
ones are printed after the DB's line as `corrupt candle row: DB SYMBOL TIME (t=MS): PROBLEM`, the
very line replay, sweep and the trader refuse it with. Duplicate (symbol, interval, t) keys are
counted per interval (WARN; FAIL when the copies differ). Use this tool, not the runbook's hand-written duplicate SQL: that query aliases
COUNT(*) as `c`, which HAVING resolves to the close column `c`, so it reports false dupes.

Exit codes: 2 if anything FAILs (or bad flags), 1 on WARN with --fail-on-warn, else 0.
"""

from __future__ import annotations

import glob as globmod
import json
import sqlite3
import sys
from datetime import UTC, datetime

import typer

from marketdata.checks import check_candle_dbs, default_candles_dir
from marketdata.intervals import MarketDataError, interval_ms
from marketdata.sanity import bad_row_line

MAX_ROW_LINES = 10  # corrupt-row lines printed per DB on stderr (the JSON lists up to --max-bad-rows-per-symbol each)

app = typer.Typer(add_completion=False, help=__doc__)


@app.command(help=__doc__)
def run(
    db_glob: str = typer.Option(None, help="DB glob (default $AI_QUANT_CANDLES_DB_DIR or ROOT/candles_dbs, /candles_*.db)"),
    lookback_hours: float = typer.Option(24.0, help="window checked for gaps and missing bars"),
    freshness_warn_mult: float = typer.Option(2.0, help="WARN when the newest closed bar is this many intervals old"),
    freshness_fail_mult: float = typer.Option(5.0, help="FAIL when the newest closed bar is this many intervals old"),
    gap_warn_bars: int = typer.Option(1, help="WARN at a run of this many missing bars"),
    gap_fail_bars: int = typer.Option(1, help="FAIL at a run of this many missing bars (default: any missing bar in the window)"),
    missing_warn_bars: int = typer.Option(10, help="WARN at this many missing bars in the window"),
    missing_fail_bars: int = typer.Option(50, help="FAIL at this many missing bars in the window"),
    grace_seconds: float = typer.Option(5.0, help="a bar counts as closed this long after its close"),
    max_gap_ranges_per_symbol: int = typer.Option(5, help="gap ranges listed per symbol (largest first)"),
    max_bad_rows_per_symbol: int = typer.Option(5, help="corrupt rows listed per symbol (oldest first)"),
    max_price: float = typer.Option(None, help="price sanity bound (default $AI_QUANT_MAX_CANDLE_PRICE, else 1e7)"),
    symbols: str = typer.Option(None, help="comma-separated symbols (default: every symbol in each DB)"),
    fail_on_warn: bool = typer.Option(False, help="exit 1 when the worst status is WARN"),
    now_ms: int = typer.Option(None, help="evaluate as if now were this epoch ms (tests, post-mortems)"),
    as_of: str = typer.Option(None, help="evaluate as of an ISO UTC time (2018-03-01T00:00Z) or 'end-of-data' "
                                        "(the newest bar's close: a historical DB is then not called stale)"),
    json_indent: int = typer.Option(None, help="indent the JSON output"),
) -> None:
    names = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
    glob = db_glob or str(default_candles_dir() / "candles_*.db")
    if as_of is not None and now_ms is not None:
        typer.echo("check_candle_dbs: pass --as-of or --now-ms, not both", err=True)
        raise typer.Exit(2)
    try:
        if as_of is not None:
            now_ms = resolve_as_of(as_of, glob, grace_seconds)
        report = check_candle_dbs(
            glob, lookback_hours,
            freshness_warn_mult=freshness_warn_mult, freshness_fail_mult=freshness_fail_mult,
            gap_warn_bars=gap_warn_bars, gap_fail_bars=gap_fail_bars, missing_warn_bars=missing_warn_bars,
            missing_fail_bars=missing_fail_bars, grace_seconds=grace_seconds,
            max_gap_ranges_per_symbol=max_gap_ranges_per_symbol, max_bad_rows_per_symbol=max_bad_rows_per_symbol,
            symbols=names, now=now_ms, max_price=max_price)
    except MarketDataError as exc:
        typer.echo(f"check_candle_dbs: {exc}", err=True)
        raise typer.Exit(2) from None
    sys.stdout.write(json.dumps(report, sort_keys=True, indent=json_indent) + "\n")
    _print_summary(report)
    status = report["overall_status"]
    raise typer.Exit(2 if status == "FAIL" else 1 if status == "WARN" and fail_on_warn else 0)


def resolve_as_of(text: str, glob: str, grace_seconds: float) -> int:
    """--as-of -> epoch ms: an ISO UTC time, or 'end-of-data' = the newest close among the DBs."""
    if text.strip().lower() == "end-of-data":
        closes = []
        for path in sorted(globmod.glob(glob)):
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                    rows = conn.execute("SELECT interval, MAX(t) FROM candles GROUP BY interval").fetchall()
            except sqlite3.Error as exc:
                raise MarketDataError(f"--as-of end-of-data: cannot read {path}: {exc}") from None
            closes += [int(t) + interval_ms(iv) for iv, t in rows if t is not None]
        if not closes:
            raise MarketDataError(f"--as-of end-of-data: no candles in {glob}")
        return max(closes) + int(grace_seconds * 1000)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise MarketDataError(f"--as-of {text!r} is neither an ISO time (2018-03-01T00:00Z) nor end-of-data") from None
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)


def _print_summary(report: dict) -> None:
    if not report["dbs"]:
        typer.echo(f"[FAIL] no DB matches {report['db_glob']}", err=True)
    for db in report["dbs"]:
        parts = [f"[{db['status']}] {db['db_path']}"]
        for iv in db["intervals"]:
            s = iv["summary"]
            parts.append(f"{iv['interval']}: {s['symbols']} symbols ok={s['ok']} warn={s['warn']} fail={s['fail']} "
                         f"bad_rows={s['bad_rows']} duplicate_keys={s['duplicate_keys']}")
            dupes = iv["duplicates"]
            if dupes["keys"]:
                shown = ", ".join(f"{d['symbol']} t={d['t']} x{d['rows']}" for d in dupes["examples"])
                parts.append(f"{dupes['status']}: {dupes['keys']} duplicate keys "
                             f"({dupes['conflicting_keys']} with differing values): {shown}")
            for sym in iv["symbols"]:
                if sym["status"] != "OK":
                    parts.append(_symbol_note(sym))
        parts.extend(db["errors"])
        typer.echo(" | ".join(parts), err=True)
        lines = _bad_row_lines(db)
        for line in lines[:MAX_ROW_LINES]:
            typer.echo(line, err=True)
        if len(lines) > MAX_ROW_LINES:
            typer.echo(f"... {len(lines) - MAX_ROW_LINES} more listed in the JSON report", err=True)


def _bad_row_lines(db: dict) -> list[str]:
    """The listed corrupt rows and conflicting duplicates of one DB, in the readers' one-line form."""
    lines = []
    for iv in db["intervals"]:
        for sym in iv["symbols"]:
            lines += [bad_row_line(db["db_path"], sym["symbol"], r["t"], r["problem"]) for r in sym["rows"]["examples"]]
        dupes = iv["duplicates"]
        lines += [bad_row_line(db["db_path"], d["symbol"], d["t"], f"{d['rows']} conflicting rows for one time")
                  for d in dupes["examples"] if d["versions"] > 1]
    return lines


def _symbol_note(sym: dict) -> str:
    rows = sym["rows"]
    bad = ""
    if rows["bad_rows"]:
        shown = "; ".join(f"t={r['t']}: {r['problem']}" for r in rows["examples"])
        bad = f" corrupt_rows={rows['bad_rows']} ({shown})"
    if sym.get("lookback") is None:
        return f"{sym['symbol']} {sym['status']}: {sym.get('error', '')}{bad}"
    look, fresh = sym["lookback"], sym["freshness"]
    return (f"{sym['symbol']} {sym['status']}: missing={look['missing_bars']} max_gap={look['max_gap_bars']} "
            f"stale_bars={fresh['staleness_bars']}{bad}")


def main(argv: list[str] | None = None) -> int:
    """In-process entry point: returns the exit code instead of exiting."""
    try:
        app(args=argv, prog_name="check_candle_dbs.py")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    app(prog_name="check_candle_dbs.py")
