"""Data health checks run by operators (tools/check_*.py) and by the factory before a sweep.

Each check returns a JSON-ready dict with a worst-of status (OK < WARN < FAIL) at every level, so
a caller can stop on FAIL without parsing messages, and an operator can see exactly which
DB / interval / symbol is stale or has holes.
"""

from __future__ import annotations

import glob
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from marketdata.candles import find_corrupt_rows
from marketdata.intervals import INTERVALS_MS, MarketDataError, normalize_interval
from marketdata.sanity import max_candle_price
from marketdata.sqlite_store import connect, require_candles_table, table_exists

RANK = {"OK": 0, "WARN": 1, "FAIL": 2}


def worst(*statuses: str) -> str:
    return max(statuses, key=RANK.__getitem__, default="OK")


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def grade(value: float, warn: float, fail: float) -> str:
    if value >= fail:
        return "FAIL"
    return "WARN" if value >= warn else "OK"


def default_candles_dir() -> Path:
    env = os.environ.get("AI_QUANT_CANDLES_DB_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "candles_dbs"


# ============================================================================ candles

def check_candle_dbs(db_glob: str | None = None, lookback_hours: float = 24.0, *,
                     freshness_warn_mult: float = 2.0, freshness_fail_mult: float = 5.0,
                     gap_warn_bars: int = 1, gap_fail_bars: int = 1,
                     missing_warn_bars: int = 10, missing_fail_bars: int = 50,
                     grace_seconds: float = 5.0, max_gap_ranges_per_symbol: int = 5,
                     max_bad_rows_per_symbol: int = 5,
                     symbols: list[str] | None = None, now: int | None = None,
                     max_price: float | None = None) -> dict:
    """Freshness, gaps and missing bars per DB / interval / symbol over the lookback window; corrupt
    rows (a row load_candles refuses, under the same price bound: FAIL) over the whole history, since
    a replay reads all of it; duplicate (symbol, interval, t) keys per interval (WARN when the copies
    agree, FAIL when they differ)."""
    for name, warn, fail in (("freshness-mult", freshness_warn_mult, freshness_fail_mult),
                             ("gap-bars", gap_warn_bars, gap_fail_bars),
                             ("missing-bars", missing_warn_bars, missing_fail_bars)):
        if warn > fail:
            raise MarketDataError(f"--{name.split('-')[0]}-warn-{name.split('-', 1)[1]} ({warn}) "
                                  f"exceeds the fail threshold ({fail})")
    if not math.isfinite(lookback_hours) or lookback_hours <= 0:
        raise MarketDataError(f"--lookback-hours must be > 0, got {lookback_hours}")
    db_glob = db_glob or str(default_candles_dir() / "candles_*.db")
    now = now_ms() if now is None else int(now)
    thresholds = {"freshness_warn_mult": freshness_warn_mult, "freshness_fail_mult": freshness_fail_mult,
                  "gap_warn_bars": gap_warn_bars, "gap_fail_bars": gap_fail_bars,
                  "missing_warn_bars": missing_warn_bars, "missing_fail_bars": missing_fail_bars,
                  "grace_seconds": grace_seconds, "max_gap_ranges_per_symbol": max_gap_ranges_per_symbol,
                  "max_bad_rows_per_symbol": max_bad_rows_per_symbol}
    thresholds["max_price"] = max_candle_price(max_price)
    ctx = dict(thresholds, lookback_ms=int(lookback_hours * 3_600_000), grace_ms=int(grace_seconds * 1000),
               now=now, symbols=symbols)
    paths = sorted(glob.glob(os.path.expanduser(db_glob)))
    dbs = [_check_candle_db(Path(p), ctx) for p in paths]
    overall = worst(*(d["status"] for d in dbs)) if dbs else "FAIL"
    counts = {s: sum(d["status"] == s for d in dbs) for s in RANK}
    return {"generated_at_ms": now, "generated_at_utc": iso_ms(now), "db_glob": db_glob,
            "lookback_hours": lookback_hours, "thresholds": thresholds, "overall_status": overall,
            "status": overall, "dbs": dbs,
            "summary": {"dbs": len(dbs), "ok": counts["OK"], "warn": counts["WARN"], "fail": counts["FAIL"],
                        "errors": [] if dbs else [f"no DB matches {db_glob}"]}}


def _check_candle_db(path: Path, ctx: dict) -> dict:
    report = {"db_path": str(path), "status": "OK", "errors": [], "intervals": []}
    try:
        conn = connect(path, readonly=True)
    except MarketDataError as exc:
        return dict(report, status="FAIL", errors=[str(exc)])
    try:
        try:
            require_candles_table(conn, path)
        except MarketDataError as exc:
            return dict(report, status="FAIL", errors=[str(exc)])
        for (raw,) in conn.execute("SELECT DISTINCT interval FROM candles ORDER BY interval").fetchall():
            try:
                iv = normalize_interval(raw)
            except MarketDataError as exc:
                report["errors"].append(str(exc))
                continue
            report["intervals"].append(_check_interval(conn, raw, iv, ctx))
    finally:
        conn.close()
    if not report["intervals"] and not report["errors"]:
        report["errors"].append(f"no candles in {path}")
    statuses = [i["summary"]["status"] for i in report["intervals"]]
    report["status"] = worst(*statuses, *(["FAIL"] if report["errors"] else []))
    return report


def _check_interval(conn, raw: str, iv: str, ctx: dict) -> dict:
    step = INTERVALS_MS[iv]
    now, grace = ctx["now"], ctx["grace_ms"]
    first = math.ceil((now - ctx["lookback_ms"]) / step) * step
    last = math.floor((now - grace - step) / step) * step
    expected = max(0, (last - first) // step + 1)
    names = ctx["symbols"] or [r[0] for r in conn.execute(
        "SELECT DISTINCT symbol FROM candles WHERE interval=? ORDER BY symbol", (raw,))]
    results = [_check_symbol(conn, raw, sym, step, first, last, expected, ctx) for sym in names]
    counts = {s: sum(r["status"] == s for r in results) for s in RANK}
    dupes = _duplicates(conn, raw)
    return {"interval": iv, "interval_ms": step,
            "lookback": {"start_ms": first, "end_ms": last, "expected_bars": expected},
            "symbols": results, "duplicates": dupes,
            "summary": {"symbols": len(results), "ok": counts["OK"], "warn": counts["WARN"],
                        "fail": counts["FAIL"], "bad_rows": sum(r["rows"]["bad_rows"] for r in results),
                        "duplicate_keys": dupes["keys"],
                        "status": worst(dupes["status"], *(r["status"] for r in results))}}


def _has_unique_key(conn) -> bool:
    """True when a unique index (e.g. the PRIMARY KEY) makes duplicate (symbol, interval, t) impossible."""
    for row in conn.execute("PRAGMA index_list(candles)").fetchall():
        if row[2]:  # unique
            cols = {r[2] for r in conn.execute(f"PRAGMA index_info({_quote_ident(row[1])})")}
            if cols and cols <= {"symbol", "interval", "t"}:
                return True
    return False


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duplicates(conn, raw: str) -> dict:
    """Duplicate (symbol, interval, t) keys over the whole table for this interval. (The runbook's
    hand-written SQL aliases COUNT(*) as `c`, which HAVING resolves to the close column instead.)"""
    if _has_unique_key(conn):
        return {"keys": 0, "extra_rows": 0, "conflicting_keys": 0, "examples": [],
                "enforced_by_unique_index": True, "status": "OK"}
    sig = " || ',' || ".join(f"quote({c})" for c in ("t_close", "o", "h", "l", "c", "v"))
    groups = conn.execute(
        f"SELECT symbol, t, COUNT(*) AS n_rows, COUNT(DISTINCT {sig}) AS n_versions FROM candles "
        "WHERE interval=? GROUP BY symbol, t HAVING COUNT(*) > 1 ORDER BY symbol, t", (raw,)).fetchall()
    conflicting = [g for g in groups if g[3] > 1]
    examples = [{"symbol": s, "t": t, "rows": n, "versions": v} for s, t, n, v in (conflicting or groups)[:5]]
    status = "FAIL" if conflicting else "WARN" if groups else "OK"
    return {"keys": len(groups), "extra_rows": sum(g[2] - 1 for g in groups), "conflicting_keys": len(conflicting),
            "examples": examples, "enforced_by_unique_index": False, "status": status}


def _check_symbol(conn, raw, symbol, step, first, last, expected, ctx) -> dict:
    rows = _bad_rows(conn, raw, symbol, ctx)
    recent = conn.execute("SELECT t, t_close FROM candles WHERE symbol=? AND interval=? AND typeof(t)='integer' "
                          "ORDER BY t DESC LIMIT 5", (symbol, raw)).fetchall()
    if not recent:
        return {"symbol": symbol, "status": "FAIL", "error": "no candles for symbol",
                "freshness": None, "lookback": None, "rows": rows}
    freshness = _freshness(recent, step, ctx)
    times = sorted({r[0] for r in conn.execute(
        "SELECT t FROM candles WHERE symbol=? AND interval=? AND typeof(t)='integer' AND t BETWEEN ? AND ?",
        (symbol, raw, first, last))})
    window = _window_gaps(times, step, first, last, expected, ctx)
    return {"symbol": symbol, "status": worst(freshness["status"], window["status"], rows["status"]),
            "freshness": freshness, "lookback": window, "rows": rows}


def _bad_rows(conn, raw, symbol, ctx) -> dict:
    """Every row of the symbol (the newest, still-forming bar too) that load_candles refuses."""
    count, bad = find_corrupt_rows(conn, "symbol=? AND interval=?", (symbol, raw),
                                   limit=ctx["max_bad_rows_per_symbol"], max_price=ctx["max_price"])
    return {"bad_rows": count, "examples": [{"t": t, "problem": problem} for _, t, problem in bad],
            "status": "FAIL" if count else "OK"}


def _freshness(recent, step, ctx) -> dict:
    limit = ctx["now"] - ctx["grace_ms"]
    closed = [tc for _, tc in recent if isinstance(tc, (int, float)) and tc <= limit]
    basis = max(closed) if closed else recent[0][0]
    stale_ms = ctx["now"] - basis
    status = grade(stale_ms, ctx["freshness_warn_mult"] * step, ctx["freshness_fail_mult"] * step)
    return {"basis_ms": basis, "basis_utc": iso_ms(basis), "basis": "t_close" if closed else "t",
            "latest_t": recent[0][0], "staleness_ms": stale_ms, "staleness_bars": round(stale_ms / step, 3),
            "status": status}


def _window_gaps(times, step, first, last, expected, ctx) -> dict:
    present = [t for t in times if (t - first) % step == 0]
    ranges, prev = [], first - step
    for t in [*present, last + step]:
        missing = (t - prev) // step - 1
        if missing > 0:
            ranges.append({"start_ms": prev + step, "end_ms": t - step, "bars": missing,
                           "start_utc": iso_ms(prev + step)})
        prev = t
    missing_bars = sum(r["bars"] for r in ranges)
    max_gap = max((r["bars"] for r in ranges), default=0)
    status = worst(grade(max_gap, ctx["gap_warn_bars"], ctx["gap_fail_bars"]) if max_gap else "OK",
                   grade(missing_bars, ctx["missing_warn_bars"], ctx["missing_fail_bars"]) if missing_bars else "OK")
    top = sorted(ranges, key=lambda r: (-r["bars"], r["start_ms"]))[: ctx["max_gap_ranges_per_symbol"]]
    return {"bars": len(present), "expected_bars": expected,
            "bars_ratio": round(len(present) / expected, 6) if expected else None,
            "missing_bars": missing_bars, "max_gap_bars": max_gap, "gaps": len(ranges),
            "gap_ranges": top, "status": status}


# ============================================================================ funding

def check_funding_db(db: str | Path, symbols: list[str] | None = None, lookback_hours: float = 72.0, *,
                     expected_interval_hours: float = 1.0, interval_tolerance_seconds: float = 60.0,
                     max_age_warn_hours: float | None = None, max_age_fail_hours: float | None = None,
                     warn_gap_hours: float = 2.0, max_gap_hours: float = 4.0,
                     abs_rate_warn: float = 0.01, abs_rate_fail: float = 0.02,
                     delta_rate_warn: float = 0.01, delta_rate_fail: float = 0.02,
                     now: int | None = None) -> dict:
    """Freshness, gaps and outliers of hourly funding rates (read-only)."""
    now = now_ms() if now is None else int(now)
    age_warn = 8 * expected_interval_hours if max_age_warn_hours is None else max_age_warn_hours
    age_fail = 12 * expected_interval_hours if max_age_fail_hours is None else max_age_fail_hours
    for name, warn, fail in (("age-hours", age_warn, age_fail), ("gap-hours", warn_gap_hours, max_gap_hours),
                             ("abs-rate", abs_rate_warn, abs_rate_fail),
                             ("delta-rate", delta_rate_warn, delta_rate_fail)):
        if warn > fail:
            raise MarketDataError(f"funding check: {name} warn threshold {warn} exceeds fail threshold {fail}")
    thresholds = {"lookback_hours": lookback_hours, "expected_interval_hours": expected_interval_hours,
                  "interval_tolerance_seconds": interval_tolerance_seconds, "max_age_warn_hours": age_warn,
                  "max_age_fail_hours": age_fail, "warn_gap_hours": warn_gap_hours, "max_gap_hours": max_gap_hours,
                  "abs_rate_warn": abs_rate_warn, "abs_rate_fail": abs_rate_fail,
                  "delta_rate_warn": delta_rate_warn, "delta_rate_fail": delta_rate_fail}
    report = {"status": "OK", "db_path": str(db), "checked_at_ms": now, "checked_at_iso": iso_ms(now),
              "thresholds": thresholds, "symbols": {}, "issues": [], "errors": [],
              "summary": {"symbols_checked": 0, "issues_total": 0, "issues_warn": 0, "issues_fail": 0,
                          "journal_mode": None}}
    try:
        conn = connect(db, readonly=True, what="funding DB")
    except MarketDataError as exc:
        return _finish_funding(report, errors=[str(exc)])
    try:
        if not table_exists(conn, "funding_rates"):
            return _finish_funding(report, errors=[f"no funding_rates table in {db}"])
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        report["summary"]["journal_mode"] = mode
        if str(mode).lower() != "wal":
            _issue(report, "WARN", None, "journal_mode", f"journal_mode is {mode}, expected wal")
        names = symbols or [r[0] for r in conn.execute("SELECT DISTINCT symbol FROM funding_rates ORDER BY 1")]
        if not names:
            report["errors"].append(f"no funding rows in {db}")
        step_ms = expected_interval_hours * 3_600_000
        ctx = dict(thresholds, now=now, start=now - int(lookback_hours * 3_600_000),
                   slack_ms=step_ms + interval_tolerance_seconds * 1000)
        for symbol in names:
            report["symbols"][symbol] = _check_funding_symbol(conn, symbol, ctx, report)
    finally:
        conn.close()
    return _finish_funding(report)


def _finish_funding(report: dict, errors: list[str] | None = None) -> dict:
    report["errors"].extend(errors or [])
    issues = report["issues"]
    summary = report["summary"]
    summary["symbols_checked"] = len(report["symbols"])
    summary["issues_total"] = len(issues)
    summary["issues_warn"] = sum(i["severity"] == "WARN" for i in issues)
    summary["issues_fail"] = sum(i["severity"] == "FAIL" for i in issues)
    status = worst(*(i["severity"] for i in issues), *(s["status"] for s in report["symbols"].values()),
                   *(["FAIL"] if report["errors"] else []))
    report["status"] = report["overall_status"] = status
    return report


def _issue(report, severity, symbol, kind, message, **extra) -> str:
    report["issues"].append({"severity": severity, "symbol": symbol, "type": kind, "message": message, **extra})
    return severity


def _check_funding_symbol(conn, symbol, ctx, report) -> dict:
    latest = conn.execute("SELECT MAX(time) FROM funding_rates WHERE symbol=?", (symbol,)).fetchone()[0]
    if latest is None:
        _issue(report, "FAIL", symbol, "symbol_missing", f"{symbol}: no funding rows")
        return {"status": "FAIL", "latest_time_ms": None, "latest_time_iso": None, "age_hours": None,
                "rows_lookback": 0, "gaps": [], "abs_rate_anomalies": [], "delta_rate_anomalies": []}
    rows = conn.execute("SELECT time, funding_rate FROM funding_rates WHERE symbol=? AND time>=? AND time<=? "
                        "ORDER BY time", (symbol, ctx["start"], ctx["now"])).fetchall()
    statuses = ["OK"]
    age_h = (ctx["now"] - latest) / 3_600_000
    age_status = grade(age_h, ctx["max_age_warn_hours"], ctx["max_age_fail_hours"])
    if age_status != "OK":
        statuses.append(_issue(report, age_status, symbol, "stale", f"{symbol}: latest funding {age_h:.1f} h old",
                               age_hours=round(age_h, 3)))
    if not rows:
        statuses.append(_issue(report, "FAIL", symbol, "no_data_in_window", f"{symbol}: no funding rows in window"))
    gaps = _funding_gaps(rows, symbol, ctx, report, statuses)
    abs_anoms, delta_anoms = _funding_outliers(rows, symbol, ctx, report, statuses)
    return {"status": worst(*statuses), "latest_time_ms": latest, "latest_time_iso": iso_ms(latest),
            "age_hours": round(age_h, 3), "rows_lookback": len(rows), "gaps": gaps,
            "abs_rate_anomalies": abs_anoms, "delta_rate_anomalies": delta_anoms}


def _funding_gaps(rows, symbol, ctx, report, statuses) -> list[dict]:
    gaps = []
    prev = ctx["start"]
    for i, (t, _) in enumerate(rows):
        span = t - prev
        if span > ctx["slack_ms"]:
            hours = span / 3_600_000
            severity = grade(hours, ctx["warn_gap_hours"], ctx["max_gap_hours"])
            kind = "leading_gap" if i == 0 else "gap"
            gaps.append({"type": kind, "from_ms": prev, "to_ms": t, "hours": round(hours, 3), "severity": severity})
            if severity != "OK":
                statuses.append(_issue(report, severity, symbol, kind,
                                       f"{symbol}: {hours:.1f} h without funding from {iso_ms(prev)}",
                                       from_ms=prev, to_ms=t, hours=round(hours, 3)))
        prev = t
    return gaps


def _funding_outliers(rows, symbol, ctx, report, statuses):
    abs_anoms, delta_anoms = [], []
    for i, (t, rate) in enumerate(rows):
        sev = grade(abs(rate), ctx["abs_rate_warn"], ctx["abs_rate_fail"])
        if sev != "OK":
            abs_anoms.append({"time_ms": t, "rate": rate, "severity": sev})
            statuses.append(_issue(report, sev, symbol, "abs_rate", f"{symbol}: |rate| {rate:.6g} at {iso_ms(t)}",
                                   time_ms=t, rate=rate))
        if i and t - rows[i - 1][0] <= ctx["slack_ms"]:
            delta = rate - rows[i - 1][1]
            sev = grade(abs(delta), ctx["delta_rate_warn"], ctx["delta_rate_fail"])
            if sev != "OK":
                delta_anoms.append({"time_ms": t, "delta": delta, "severity": sev})
                statuses.append(_issue(report, sev, symbol, "delta_rate",
                                       f"{symbol}: rate jumped by {delta:.6g} at {iso_ms(t)}", time_ms=t, delta=delta))
    return abs_anoms, delta_anoms
