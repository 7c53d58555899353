"""Candle stores: writing, reading many sources at once, and the dense arrays the engines use.

A candle history may live in one hot DB plus monthly partition DBs (see tools/partition_candles_db.py),
so every reader takes a comma-separated list of files and directories and merges them with the
first source winning on conflicts. Gaps are kept as gaps: a missing bar is `valid=False` with NaN
prices, never an invented price. Every row read passes marketdata.sanity's rule (finite, sane prices,
o/c inside [l, h], a plausible time) and conflicting copies of one bar in one DB are refused: one
bad tick would otherwise poison every indicator after it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from marketdata.intervals import MarketDataError, interval_ms, normalize_interval
from marketdata.sanity import BadCandle, bad_row_line, max_candle_price, problem_sql
from marketdata.sqlite_store import connect, ensure_candles_schema, require_candles_table
from strategy.cli_io import did_you_mean

OUT_COLUMNS = ["symbol", "t", "t_close", "o", "h", "l", "c", "v"]
_SCHEMA = {"symbol": pl.String, "t": pl.Int64, "t_close": pl.Int64, "o": pl.Float64,
           "h": pl.Float64, "l": pl.Float64, "c": pl.Float64, "v": pl.Float64}
_SCHEMA_WITH_PROBLEM = {**_SCHEMA, "problem": pl.String}


# ----------------------------------------------------------------------------- writing

def write_candles(db_path: str | Path, df_or_rows, interval: str) -> int:
    """Upsert candles (every column) in one transaction; returns the number of rows written."""
    iv = normalize_interval(interval)
    step = interval_ms(iv)
    frame = df_or_rows if isinstance(df_or_rows, pl.DataFrame) else pl.DataFrame(list(df_or_rows))
    missing = {"symbol", "t", "o", "h", "l", "c", "v"} - set(frame.columns)
    if missing:
        raise MarketDataError(f"write_candles: rows lack column(s) {', '.join(sorted(missing))}")
    if "t_close" not in frame.columns:
        frame = frame.with_columns((pl.col("t") + step - 1).alias("t_close"))
    if "n" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Int64).alias("n"))
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    if "updated_at" not in frame.columns:
        frame = frame.with_columns(pl.lit(stamp).alias("updated_at"))
    frame = frame.with_columns(pl.lit(iv).alias("interval"))
    cols = ["symbol", "interval", "t", "t_close", "o", "h", "l", "c", "v", "n", "updated_at"]
    rows = frame.select(cols).rows()
    sets = ", ".join(f"{c}=excluded.{c}" for c in cols[3:])
    sql = (f"INSERT INTO candles ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
           f"ON CONFLICT(symbol, interval, t) DO UPDATE SET {sets}")
    conn = connect(db_path)
    try:
        ensure_candles_schema(conn)
        with conn:
            conn.executemany(sql, rows)
    finally:
        conn.close()
    return len(rows)


# ----------------------------------------------------------------------------- reading

def resolve_sources(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """Expand "a.db,partitions/5m" into DB files: a directory means its candles_*.db sorted by name."""
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    paths: list[Path] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            paths.extend(sorted(path.glob("candles_*.db")))
        elif path.is_file():
            paths.append(path)
        else:
            raise MarketDataError(f"candles source not found: {path}")
    if not paths:
        raise MarketDataError(f"no candle DBs in {spec!s}")
    return paths


def _sources_label(paths: Sequence[Path]) -> str:
    return ",".join(str(p) for p in paths)


def _read_source(path: Path, iv: str, symbols, start_ms, end_ms, bound: float,
                 skipped: list[BadCandle] | None) -> tuple[pl.DataFrame, set[str]]:
    """One DB's rows in the window. SQLite judges every row with the sanity rule (problem_sql) before
    polars sees it, so a text cell or an inf price is named instead of crashing or poisoning."""
    conn = connect(path, readonly=True)
    try:
        require_candles_table(conn, path)
        known = {r[0] for r in conn.execute("SELECT DISTINCT symbol FROM candles WHERE interval=?", (iv,))}
        where, args = _window(iv, symbols, start_ms, end_ms)
        sql = f"SELECT {', '.join(OUT_COLUMNS)}, {problem_sql(bound)} AS problem FROM candles WHERE {where}"
        try:
            rows = conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise MarketDataError(f"cannot read candles from {path}: {exc}") from None
        if any(r[-1] is not None for r in rows):
            rows = _drop_bad_rows(conn, path, rows, (where, args), bound, skipped)
    finally:
        conn.close()
    return _check_rows(_frame(rows, path), path, skipped), known


def _window(iv: str, symbols, start_ms, end_ms) -> tuple[str, list]:
    where, args = ["interval=?"], [iv]
    if symbols is not None:
        where.append(f"symbol IN ({','.join('?' * len(symbols))})")
        args.extend(symbols)
    if start_ms is not None:
        where.append("t>=?")
        args.append(int(start_ms))
    if end_ms is not None:
        where.append("t<=?")
        args.append(int(end_ms))
    return " AND ".join(where), args


def _drop_bad_rows(conn, path: Path, rows: list, window: tuple[str, list], bound: float,
                   skipped: list[BadCandle] | None) -> list:
    """Refuse the source at its first bad row (oldest of the first symbol), or with `skipped` given,
    leave every bad row out and record it, so the caller (the live trader) can skip that bar."""
    if skipped is None:
        _, bad = find_corrupt_rows(conn, *window, limit=1, max_price=bound)
        raise MarketDataError(bad_row_line(path, *bad[0]))
    for r in rows:
        if r[-1] is not None:
            skipped.append(BadCandle(str(path), r[0], r[1], r[-1]))
    return [r for r in rows if r[-1] is None]


def _frame(rows: list, path: Path) -> pl.DataFrame:
    try:
        return pl.DataFrame(rows, schema=_SCHEMA_WITH_PROBLEM, orient="row").drop("problem")
    except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError) as exc:  # not expected after the SQL
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MarketDataError(f"corrupt candles in {path}: {first_line}") from None


def find_corrupt_rows(conn: sqlite3.Connection, where: str, args: Sequence, limit: int = 5,
                      max_price: float | None = None) -> tuple[int, list[tuple[str, object, str]]]:
    """(number of rows load_candles would refuse, the first `limit` as (symbol, t, problem))
    among the candles rows matching the SQL condition `where`."""
    inner = f"SELECT symbol, t, {problem_sql(max_price)} AS problem FROM candles WHERE {where}"
    count = conn.execute(f"SELECT COUNT(*) FROM ({inner}) WHERE problem IS NOT NULL", list(args)).fetchone()[0]
    rows = [] if not count else conn.execute(
        f"SELECT symbol, t, problem FROM ({inner}) WHERE problem IS NOT NULL ORDER BY symbol, t LIMIT ?",
        [*args, int(limit)]).fetchall()
    return int(count), [(r[0], r[1], r[2]) for r in rows]


def _check_rows(frame: pl.DataFrame, path: Path, skipped: list[BadCandle] | None) -> pl.DataFrame:
    """Duplicate (symbol, t) rows in one DB (possible in a table without the primary key): identical
    copies are merged; copies that differ are refused, since nothing says which price is real."""
    if not frame.select("symbol", "t").is_duplicated().any():
        return frame
    frame = frame.unique(maintain_order=True)
    twins = frame.select("symbol", "t").is_duplicated()
    if not twins.any():
        return frame
    clashes = frame.filter(twins).sort("symbol", "t")
    keys = clashes.select("symbol", "t").unique(maintain_order=True).rows()
    if skipped is None:
        symbol, t = keys[0]
        versions = clashes.filter((pl.col("symbol") == symbol) & (pl.col("t") == t))
        raise MarketDataError(bad_row_line(path, symbol, t, _conflict_text(versions)))
    for symbol, t in keys:
        versions = clashes.filter((pl.col("symbol") == symbol) & (pl.col("t") == t))
        skipped.append(BadCandle(str(path), symbol, t, _conflict_text(versions)))
    return frame.filter(~twins)


def _conflict_text(versions: pl.DataFrame) -> str:
    cols = [c for c in OUT_COLUMNS[2:] if versions[c].n_unique() > 1]
    shown = ", ".join(f"{c}=" + " vs ".join(str(x) for x in versions[c].to_list()) for c in cols)
    return f"{versions.height} conflicting rows for one time ({shown})"


def load_candles(sources, interval: str, symbols: Iterable[str] | None = None,
                 start_ms: int | None = None, end_ms: int | None = None, *, max_price: float | None = None,
                 skipped: list[BadCandle] | None = None) -> pl.DataFrame:
    """Merged candles (symbol,t,t_close,o,h,l,c,v), one row per (symbol, t), first source winning.

    Every source's rows in the window pass marketdata.sanity's rule (price bound: `max_price`, else
    $AI_QUANT_MAX_CANDLE_PRICE, else 1e7). By default the first bad row raises a one-line
    MarketDataError; with a list as `skipped`, bad rows are left out (their bars become gaps) and
    appended to it as BadCandle, for a caller that must keep running (the live trader)."""
    iv = normalize_interval(interval)
    bound = max_candle_price(max_price)
    if start_ms is not None and end_ms is not None and int(start_ms) > int(end_ms):
        raise MarketDataError(f"start {_fmt_ms(start_ms)} is after end {_fmt_ms(end_ms)}")
    paths = resolve_sources(sources)
    wanted = None if symbols is None else sorted({str(s).strip() for s in symbols if str(s).strip()})
    frames, known = [], set()
    for rank, path in enumerate(paths):
        frame, names = _read_source(path, iv, wanted, start_ms, end_ms, bound, skipped)
        known |= names
        frames.append(frame.with_columns(pl.lit(rank, dtype=pl.Int32).alias("_rank")))
    label = _sources_label(paths)
    if not known:
        raise MarketDataError(f"no {iv} candles in {label}")
    if wanted is not None:
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise MarketDataError(f"unknown symbol(s) {','.join(unknown)}: not in {label}"
                                  f"{did_you_mean(unknown[0], known)}")
    merged = (pl.concat(frames)
              .sort(["symbol", "t", "_rank"])
              .unique(subset=["symbol", "t"], keep="first", maintain_order=True)
              .drop("_rank"))
    if merged.height == 0:
        window = f" between {_fmt_ms(start_ms)} and {_fmt_ms(end_ms)}"
        raise MarketDataError(f"no {iv} candles in {label}{window}")
    return merged


def _fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "(open)"
    return datetime.fromtimestamp(int(ms) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- dense arrays

@dataclass
class MarketData:
    """Dense [symbol, bar] arrays on a regular grid of bar open times; `valid` marks real bars."""

    interval: str
    interval_ms: int
    symbols: list[str]
    times: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    valid: np.ndarray

    @property
    def nsym(self) -> int:
        return len(self.symbols)

    @property
    def nbar(self) -> int:
        return int(self.times.shape[0])

    def symbol_index(self, symbol: str) -> int:
        try:
            return self.symbols.index(symbol)
        except ValueError:
            raise MarketDataError(f"unknown symbol {symbol}: not in {','.join(self.symbols)}") from None


def subset_symbols(md: MarketData, keep: Iterable[str], *aligned: np.ndarray):
    """The same grid restricted to `keep` (sorted, as kernels expect); `aligned` [nsym, ...] arrays
    (e.g. a funding matrix) are cut the same way. Returns md alone when no arrays are given."""
    from dataclasses import replace

    wanted = set(keep)
    idx = [i for i, s in enumerate(md.symbols) if s in wanted]
    out = replace(md, symbols=[md.symbols[i] for i in idx], open=md.open[idx], high=md.high[idx],
                  low=md.low[idx], close=md.close[idx], volume=md.volume[idx], valid=md.valid[idx])
    if not aligned:
        return out
    return (out, *(None if a is None else np.ascontiguousarray(a[idx]) for a in aligned))


def align_to_symbols(md: MarketData, symbols: list[str]) -> MarketData:
    """The same grid on exactly `symbols` (in that order); a symbol without bars here is all-invalid.
    The daemon and the alignment gate need the engine's fixed symbol list whatever a slice holds."""
    from dataclasses import replace

    if list(md.symbols) == list(symbols):
        return md
    nbar = len(md.times)
    idx = {s: i for i, s in enumerate(md.symbols)}

    def take(arr, fill):
        out = np.full((len(symbols), nbar), fill, dtype=arr.dtype)
        for j, s in enumerate(symbols):
            if s in idx:
                out[j] = arr[idx[s]]
        return out

    return replace(md, symbols=list(symbols), open=take(md.open, np.nan), high=take(md.high, np.nan),
                   low=take(md.low, np.nan), close=take(md.close, np.nan), volume=take(md.volume, np.nan),
                   valid=take(md.valid, False))


def exclude_symbols(md: MarketData, excluded: Iterable[str], *aligned: np.ndarray):
    """Drop a config's `watchlist_exclude` symbols before any execution sees the data, so the sweep,
    the replay and the daemon trade the same universe. Returns (md, *aligned)."""
    drop = {s.upper() for s in excluded}
    keep = [s for s in md.symbols if s.upper() not in drop]
    return subset_symbols(md, keep, *aligned) if aligned else (subset_symbols(md, keep),)


def to_market_data(df: pl.DataFrame, interval: str) -> MarketData:
    """Scatter merged candle rows onto the complete bar grid (NaN + valid=False where missing)."""
    iv = normalize_interval(interval)
    step = interval_ms(iv)
    if df.height == 0:
        raise MarketDataError(f"no {iv} candles to arrange")
    symbols = sorted(df["symbol"].unique().to_list())
    t = df["t"].to_numpy().astype(np.int64)
    t0, t1 = int(t.min()), int(t.max())
    off_grid = (t - t0) % step != 0
    if off_grid.any():
        i = int(np.argmax(off_grid))
        raise MarketDataError(f"candle {df['symbol'][i]} t={int(t[i])} is not on the {iv} grid starting at {t0}")
    nbar = (t1 - t0) // step + 1
    times = t0 + step * np.arange(nbar, dtype=np.int64)
    sym_idx = np.searchsorted(np.array(symbols, dtype=object), df["symbol"].to_numpy()).astype(np.int64)
    bar_idx = (t - t0) // step
    shape = (len(symbols), nbar)
    arrays = {}
    for col in ("o", "h", "l", "c", "v"):
        dense = np.full(shape, np.nan, dtype=np.float64)
        dense[sym_idx, bar_idx] = df[col].to_numpy().astype(np.float64)
        arrays[col] = dense
    valid = np.zeros(shape, dtype=bool)
    valid[sym_idx, bar_idx] = True
    return MarketData(iv, step, symbols, times, arrays["o"], arrays["h"], arrays["l"], arrays["c"],
                      arrays["v"], valid)


def load_market_data(sources, interval: str, symbols: Iterable[str] | None = None,
                     start_ms: int | None = None, end_ms: int | None = None, *, max_price: float | None = None,
                     skipped: list[BadCandle] | None = None) -> MarketData:
    """Candles from every source, merged and checked (see load_candles), as dense arrays for the kernels."""
    frame = load_candles(sources, interval, symbols, start_ms, end_ms, max_price=max_price, skipped=skipped)
    return to_market_data(frame, interval)


def bars_per_day(interval: str) -> float:
    return 86_400_000 / interval_ms(interval)


__all__ = ["BadCandle", "MarketData", "align_to_symbols", "exclude_symbols", "find_corrupt_rows", "load_candles", "load_market_data",
           "resolve_sources", "subset_symbols", "to_market_data", "write_candles"]
