"""`backtester replay --plot out.html`: one self-contained page that shows what a replay did.

What a quant looks at first (freqtrade's plot-dataframe / plot-profit, backtesting.py's plot):
the trades on the price chart with the indicators the strategy read, the equity curve with its
drawdown, which symbols made or lost the money, and how the returns fall by month. Everything
comes from the replay report (fills, per-symbol stats, the engine's per-bar `equity_curve`) and
the very candles it replayed; nothing is recomputed differently from the engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reports.html import esc, fig_div, page, plotly, table, write_page

MAX_SYMBOLS = 12
OVERLAYS = (("ema_fast", "#1f77b4", "solid"), ("ema_slow", "#ff7f0e", "solid"), ("ema_macro", "#7f7f7f", "dot"),
            ("bb_upper", "#9467bd", "dash"), ("bb_lower", "#9467bd", "dash"))
MARKERS = {  # action -> (symbol for LONG, symbol for SHORT, colour)
    "OPEN": ("triangle-up", "triangle-down", "#1a7f37"), "ADD": ("triangle-up-open", "triangle-down-open", "#1a7f37"),
    "REDUCE": ("diamond", "diamond", "#bf8700"), "CLOSE": ("x", "x", "#cf222e"),
}


def to_dt(ms) -> np.ndarray:
    """Epoch ms -> datetime64 (plotly draws UTC wall time; axes are labelled UTC)."""
    return np.asarray(ms, dtype=np.int64).astype("datetime64[ms]")


def drawdown_pct(equity: np.ndarray, peak0: float) -> np.ndarray:
    """Fall from the running peak, as the kernel measures it: (peak - equity) / peak, peak
    starting at the window's initial equity."""
    peak = np.maximum.accumulate(np.concatenate([[peak0], equity]))[1:]
    return np.where(peak > 0, (peak - equity) / peak, 0.0)


def equity_figure(curve: dict, initial: float):
    """Equity (marked to market) and realised balance, drawdown below, exposure at the bottom."""
    go, sp = plotly().graph_objects, plotly().subplots
    t = to_dt(curve["t_ms"])
    eq = np.asarray(curve["equity"], dtype=float)
    rows = 3 if "exposure" in curve else 2
    fig = sp.make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                           row_heights=[0.55, 0.25, 0.2][:rows])
    fig.add_trace(go.Scatter(x=t, y=eq, name="equity (marked to market)", line=dict(color="#0969da")), 1, 1)
    if "balance" in curve:
        fig.add_trace(go.Scatter(x=t, y=curve["balance"], name="realised balance",
                                 line=dict(color="#57606a", dash="dot")), 1, 1)
    fig.add_trace(go.Scatter(x=t, y=-100.0 * drawdown_pct(eq, initial), name="drawdown %", fill="tozeroy",
                             line=dict(color="#cf222e")), 2, 1)
    if rows == 3:
        fig.add_trace(go.Scatter(x=t, y=curve["exposure"], name="gross exposure (USD)",
                                 line=dict(color="#8250df")), 3, 1)
        fig.update_yaxes(title_text="exposure", row=3, col=1)
    fig.update_yaxes(title_text="USD", row=1, col=1)
    fig.update_yaxes(title_text="drawdown %", row=2, col=1)
    fig.update_xaxes(title_text="time (UTC)", row=rows, col=1)
    fig.update_layout(hovermode="x unified", legend=dict(orientation="h", y=1.08))
    return fig


def indicator_series(md, s: int, wv: np.ndarray) -> dict[str, np.ndarray]:
    """The overlays of symbol s on its valid bars, from the engine's own indicator code."""
    from strategy.features import FEATURE_NAMES
    from strategy.indicators import compute_features

    ok = md.valid[s]
    feats = compute_features(md.open[s, ok], md.high[s, ok], md.low[s, ok], md.close[s, ok], md.volume[s, ok], wv)
    return {name: feats[:, FEATURE_NAMES.index(name)] for name, _, _ in OVERLAYS}


def fill_hover(f: dict) -> str:
    return (f"{esc(f['action'])} {esc(f['side'])} · {esc(f['reason'])}<br>price {f['price']:.6g} · "
            f"size {f['size']:.6g}<br>pnl {f['pnl']:,.2f} · fee {f['fee']:,.2f}<br>"
            f"{np.datetime_as_string(to_dt([f['t_ms']])[0], unit='m')} UTC")


def symbol_figure(md, s: int, fills: list[dict], wv: np.ndarray, start_ms: int, end_ms: int):
    """Candles of the replayed window, indicator overlays and one marker per fill."""
    go = plotly().graph_objects
    ok = md.valid[s]
    times = md.times[ok]
    window = (times >= start_ms) & (times < end_ms)
    x = to_dt(times[window])
    fig = go.Figure(go.Candlestick(x=x, open=md.open[s, ok][window], high=md.high[s, ok][window],
                                   low=md.low[s, ok][window], close=md.close[s, ok][window], name="candles"))
    series = indicator_series(md, s, wv)
    for name, colour, dash in OVERLAYS:
        fig.add_trace(go.Scatter(x=x, y=series[name][window], name=name, line=dict(color=colour, width=1, dash=dash),
                                 hoverinfo="skip"))
    iv = md.interval_ms
    for action, (long_sym, short_sym, colour) in MARKERS.items():
        rows = [f for f in fills if f["action"] == action]
        if not rows:
            continue
        fig.add_trace(go.Scatter(
            x=to_dt([(f["t_ms"] - 1) // iv * iv for f in rows]), y=[f["price"] for f in rows], mode="markers",
            name=action, marker=dict(symbol=[long_sym if f["side"] == "LONG" else short_sym for f in rows],
                                     size=11, color=colour, line=dict(width=1, color="#1f2328")),
            hovertext=[fill_hover(f) for f in rows], hoverinfo="text"))
    fig.update_layout(xaxis_rangeslider_visible=False,
                      xaxis_title="time (UTC)", yaxis_title="price", legend=dict(orientation="h", y=1.1))
    return fig


def pnl_bars(per_symbol: dict):
    """Net PnL per symbol (after fees and funding), best first."""
    go = plotly().graph_objects
    items = sorted(per_symbol.items(), key=lambda kv: kv[1]["pnl"], reverse=True)
    fig = go.Figure(go.Bar(x=[k for k, _ in items], y=[v["pnl"] for _, v in items],
                           marker_color=["#1a7f37" if v["pnl"] >= 0 else "#cf222e" for _, v in items],
                           hovertext=[f"{v['trades']} trades, {v['wins']} wins, fees {v['fees']:,.2f}, "
                                      f"funding {v['funding']:,.2f}" for _, v in items]))
    fig.update_layout(yaxis_title="net PnL (USD)", xaxis_title="symbol")
    return fig


def monthly_returns(curve: dict, initial: float) -> tuple[list[int], list[int], np.ndarray]:
    """Return of each UTC calendar month: its last equity over the previous month's last (the
    first month starts from the initial balance). -> years, months (1..12), matrix [year, month]."""
    # points after the start, each in the month its bar closed in (a close at 00:00 on the 1st ends
    # the previous month); the starting point only seeds `prev`
    t = to_dt(np.asarray(curve["t_ms"][1:], dtype=np.int64) - 1)
    eq = np.asarray(curve["equity"][1:], dtype=float)
    month = t.astype("datetime64[M]")
    last = np.flatnonzero(np.append(month[1:] != month[:-1], True))
    years = sorted({int(str(m)[:4]) for m in month[last]})
    grid = np.full((len(years), 12), np.nan)
    prev = float(curve["equity"][0]) if curve["equity"] else initial
    for i in last:
        y, m = int(str(month[i])[:4]), int(str(month[i])[5:7])
        grid[years.index(y), m - 1] = (eq[i] / prev - 1.0) * 100.0 if prev > 0 else 0.0
        prev = eq[i]
    return years, list(range(1, 13)), grid


def monthly_heatmap(curve: dict, initial: float):
    go = plotly().graph_objects
    years, months, grid = monthly_returns(curve, initial)
    names = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    text = [["" if np.isnan(v) else f"{v:+.2f}%" for v in row] for row in grid]
    fig = go.Figure(go.Heatmap(z=grid, x=[names[m - 1] for m in months], y=[str(y) for y in years],
                               colorscale="RdYlGn", zmid=0.0, text=text, texttemplate="%{text}",
                               colorbar=dict(title="%")))
    fig.update_layout(yaxis_title="year (UTC)", yaxis_type="category")
    return fig


def chosen_symbols(report: dict, limit: int = MAX_SYMBOLS) -> list[str]:
    """Symbols that traded, most PnL moved first; then untraded ones, up to `limit`."""
    traded = sorted(report.get("per_symbol", {}).items(), key=lambda kv: -abs(kv[1]["pnl"]))
    names = [k for k, _ in traded] + [s for s in report["symbols"] if s not in report.get("per_symbol", {})]
    return names[:limit]


def summary_rows(report: dict) -> list[tuple[str, object]]:
    return [("config", report["config_id"]), ("interval", report["interval"]), ("bars", report["bars"]),
            ("initial balance", report["initial_balance"]), ("final balance", report["final_balance"]),
            ("return %", report["return_pct"]), ("trades", report["total_trades"]),
            ("win rate", report["win_rate"]), ("profit factor", report["profit_factor"]),
            ("max drawdown %", report["max_drawdown_pct"] * 100.0), ("sharpe", report["sharpe"]),
            ("fees", report["total_fees"]), ("funding", report["total_funding"]),
            ("slippage bps", report["slippage_bps"])]


def replay_page(report: dict, md, wv: np.ndarray, synthetic: str | None = None,
                max_symbols: int = MAX_SYMBOLS) -> str:
    """The HTML text for a replay report made with_trades and with_equity (see run_replay)."""
    if "equity_curve" not in report or "fills" not in report:
        raise ValueError("the replay report lacks fills or equity_curve (run_replay(with_trades=True, with_equity=True))")
    curve, initial = report["equity_curve"], report["initial_balance"]
    sections = [("Summary", table(["metric", "value"], summary_rows(report))),
                ("Equity and drawdown", fig_div(equity_figure(curve, initial), 620)),
                ("Net PnL per symbol", fig_div(pnl_bars(report["per_symbol"]), 360)),
                ("Monthly returns (UTC calendar months)", fig_div(monthly_heatmap(curve, initial), 260))]
    names = chosen_symbols(report, max_symbols)
    for name in names:
        s = md.symbols.index(name)
        fills = [f for f in report["fills"] if f["symbol"] == name]
        sections.append((f"{name}: trades on the price", fig_div(
            symbol_figure(md, s, fills, wv, report["start_ms"], report["end_ms"]), 520)))
    left = [s for s in report["symbols"] if s not in names]
    if left:
        sections.append(("Not drawn", f"<p class='note'>{len(left)} more symbols: {esc(', '.join(left))}</p>"))
    start, end = (np.datetime_as_string(to_dt([report[k]])[0], unit="m") for k in ("start_ms", "end_ms"))
    subtitle = f"{start} → {end} UTC · {len(report['symbols'])} symbols · {report['fills_count']} fills"
    return page(f"Replay {report['config_id'][:12]}", subtitle, sections, synthetic)


def write_replay_plot(path: Path, report: dict, md, wv: np.ndarray, synthetic: str | None = None) -> Path:
    return write_page(path, replay_page(report, md, wv, synthetic))
