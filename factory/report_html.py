"""report.html beside report.md: the factory run as pictures (needs the `[plots]` extra).

Why: a table of 200 candidates does not show whether the winner sits on a plateau or a spike, how
fast it dies with slippage, or what its equity looked like. This page reads only what the run
already wrote (reports/report.json, sweeps/sweep_results.jsonl, gates/<gate>/<stem>/summary.json,
replays/<stem>.replay.json, run_metadata.json), so it can be rendered again for any past run:

    python -m factory.report_html <run_dir>

Sections: candidates table; a best-of heatmap for each pair of swept axes (parallel coordinates
when there are more than MAX_PAIR_AXES axes); walk-forward folds (and the stitched out-of-sample
equity and overfitting figures when report.json has them); the slippage curve; the Monte Carlo
distribution; sensitivity bars; the selected candidate's equity. A section whose evidence is
absent says so instead of failing the page.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reports.html import esc, fig_div, page, plotly, synthetic_note, table, write_page

MAX_PAIR_AXES = 4           # up to 6 heatmaps; more axes -> one parallel-coordinates plot
MAX_SWEEP_ROWS = 200_000    # rows read from sweep_results.jsonl (TPE runs keep only the best anyway)
RANK_METRIC = "total_pnl"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _sweep_rows(run_dir: Path, limit: int = MAX_SWEEP_ROWS) -> list[dict]:
    path = run_dir / "sweeps" / "sweep_results.jsonl"
    rows: list[dict] = []
    try:
        with path.open(encoding="utf-8") as fh:
            for line in itertools.islice(fh, limit):
                if line.strip():
                    rows.append(json.loads(line))
    except (OSError, ValueError):
        return rows
    return rows


def _missing(what: str) -> str:
    return f"<p class='note'>No {esc(what)} in this run's evidence.</p>"


# ------------------------------------------------------------------------------ candidates
def candidates_section(items: list[dict]) -> str:
    cols = ["rank", "config", "sort", "pnl", "trades", "win rate", "profit factor", "max dd %", "sharpe",
            "score_v1", "equivalence", "rejected"]
    rows = [(i.get("rank"), str(i.get("config_id"))[:12], i.get("sort_by"), i.get("total_pnl"), i.get("total_trades"),
             i.get("win_rate"), i.get("profit_factor"), _pct(i.get("max_drawdown_pct")), i.get("sharpe"),
             i.get("score_v1"), i.get("replay_equivalence_status"),
             f"YES: {i.get('reject_reason')}" if i.get("rejected") else "no") for i in items]
    return table(cols, rows, text_cols=3) if rows else _missing("replayed candidates")


def _pct(x: Any) -> float | None:
    return None if x is None else float(x) * 100.0


# ------------------------------------------------------------------------------ sweep landscape
def swept_axes(rows: list[dict]) -> list[str]:
    """Axes that took more than one value in the sweep rows (the overrides' keys)."""
    values: dict[str, set] = {}
    for r in rows:
        for k, v in (r.get("overrides") or {}).items():
            values.setdefault(k, set()).add(repr(v))
    return [k for k, v in values.items() if len(v) > 1]


def best_of_grid(rows: list[dict], ax: str, ay: str, metric: str = RANK_METRIC):
    """Best `metric` over every other axis for each (ax, ay) value pair: x values, y values, z[y][x]."""
    best: dict[tuple, float] = {}
    for r in rows:
        ov = r.get("overrides") or {}
        if ax not in ov or ay not in ov or r.get(metric) is None:
            continue
        key = (ov[ax], ov[ay])
        best[key] = max(best.get(key, float("-inf")), float(r[metric]))
    xs = sorted({k[0] for k in best}, key=_order)
    ys = sorted({k[1] for k in best}, key=_order)
    z = [[best.get((x, y)) for x in xs] for y in ys]
    return xs, ys, z


def _order(v: Any) -> tuple:
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))


def heatmap_figure(rows: list[dict], ax: str, ay: str):
    go = plotly().graph_objects
    xs, ys, z = best_of_grid(rows, ax, ay)
    fig = go.Figure(go.Heatmap(x=[str(x) for x in xs], y=[str(y) for y in ys], z=z, colorscale="RdYlGn",
                               colorbar=dict(title=f"best {RANK_METRIC}"),
                               hovertemplate=f"{ax}=%{{x}}<br>{ay}=%{{y}}<br>best {RANK_METRIC} %{{z:,.2f}}<extra></extra>"))
    fig.update_layout(xaxis_title=ax, yaxis_title=ay, xaxis_type="category", yaxis_type="category")
    return fig


def parallel_figure(rows: list[dict], axes: list[str]):
    """Every sweep row as a line through its axis values, coloured by the metric."""
    go = plotly().graph_objects
    dims = []
    for a in axes:
        vals = [(r.get("overrides") or {}).get(a) for r in rows]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
        if numeric:
            dims.append(dict(label=a.rsplit(".", 1)[-1], values=vals))
        else:
            cats = sorted({str(v) for v in vals})
            dims.append(dict(label=a.rsplit(".", 1)[-1], values=[cats.index(str(v)) for v in vals],
                             tickvals=list(range(len(cats))), ticktext=cats))
    metric = [float(r.get(RANK_METRIC) or 0.0) for r in rows]
    dims.append(dict(label=RANK_METRIC, values=metric))
    fig = go.Figure(go.Parcoords(line=dict(color=metric, colorscale="RdYlGn", showscale=True), dimensions=dims))
    return fig


def landscape_section(rows: list[dict]) -> str:
    axes = swept_axes(rows)
    if not rows or not axes:
        return _missing("sweep rows with more than one value on an axis")
    note = (f"<p class='note'>{len(rows):,} sweep rows; each cell is the best {RANK_METRIC} over every "
            "other axis (a plateau is safer than a lone peak).</p>")
    if len(axes) == 1 or len(axes) > MAX_PAIR_AXES:
        return note + fig_div(parallel_figure(rows, axes), 460)
    return note + "".join(fig_div(heatmap_figure(rows, ax, ay), 380) for ax, ay in itertools.combinations(axes, 2))


# ------------------------------------------------------------------------------ gates
def gate_summary(run_dir: Path, gate: str, stem: str) -> dict | None:
    return _read_json(run_dir / "gates" / gate / stem / "summary.json")


def walk_forward_section(run_dir: Path, stem: str, report: dict, item: dict) -> str:
    """Folds from the gate summary (or report.json's walk_forward), stitched OOS equity, efficiency."""
    go = plotly().graph_objects
    wf = item.get("walk_forward") or report.get("walk_forward") or {}
    out = []
    folds = wf.get("folds") if isinstance(wf, dict) else None
    if folds is None:
        summary = gate_summary(run_dir, "walk_forward", stem) or {}
        folds = summary.get("windows")
    if folds:
        out.append(fold_table(folds))
        out.append(fig_div(fold_figure(folds), 320))
    stitched = wf.get("stitched_oos_equity") if isinstance(wf, dict) else None
    if stitched:
        t, eq = _series(stitched)
        fig = go.Figure(go.Scatter(x=t, y=eq, name="stitched out-of-sample equity"))
        fig.update_layout(xaxis_title="time (UTC)", yaxis_title="equity (USD)")
        out.append(fig_div(fig, 320))
    if isinstance(wf, dict) and wf.get("efficiency") is not None:
        out.append(f"<p>walk-forward efficiency (OOS / IS return per day): <b>{esc(_num(wf['efficiency']))}</b></p>")
    return "".join(out) or _missing("walk-forward folds")


def _num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, (int, float)) else str(x)


def fold_table(folds: list[dict]) -> str:
    keys = [k for k in folds[0] if not isinstance(folds[0][k], (dict, list))]
    rows = [[_time_cell(k, f.get(k)) for k in keys] for f in folds]
    return table(["fold", *keys], [[i + 1, *r] for i, r in enumerate(rows)], text_cols=0)


def _time_cell(key: str, value: Any) -> Any:
    """Epoch-ms fields as UTC times; config ids and checksums cut to 12 characters."""
    if isinstance(value, str) and len(value) > 24:
        return value[:12] + "…"
    if key.endswith("_ms") and isinstance(value, (int, float)):
        import datetime as dt

        return dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return value


def fold_figure(folds: list[dict]):
    """Out-of-sample return per fold (bars; the in-sample one beside it when the fold has it)."""
    go = plotly().graph_objects
    names = [f"fold {i + 1}" for i in range(len(folds))]
    oos = [_first(f, "oos_return_pct", "oos_daily_return", "daily_return", "total_pnl") for f in folds]
    fig = go.Figure(go.Bar(x=names, y=oos, name="out of sample", marker_color="#0969da"))
    ins = [_first(f, "is_return_pct", "is_daily_return") for f in folds]
    if any(v is not None for v in ins):
        fig.add_trace(go.Bar(x=names, y=ins, name="in sample", marker_color="#8c959f"))
    label = next((k for k in ("oos_return_pct", "oos_daily_return", "daily_return", "total_pnl") if k in folds[0]), "")
    fig.update_layout(yaxis_title=label, barmode="group")
    return fig


def _first(d: dict, *keys: str) -> float | None:
    return next((float(d[k]) for k in keys if isinstance(d.get(k), (int, float))), None)


def _series(points: Any) -> tuple[list, list]:
    """[[t_ms, equity], ...] or {t_ms: [...], equity: [...]} -> datetimes, values."""
    from reports.replay_plot import to_dt

    if isinstance(points, dict):
        t, eq = points.get("t_ms") or points.get("t") or [], points.get("equity") or []
    else:
        t, eq = [p[0] for p in points], [p[1] for p in points]
    return list(to_dt(t)), list(eq)


def overfitting_section(report: dict, item: dict) -> str:
    of = item.get("overfitting") or report.get("overfitting")
    if not isinstance(of, dict):
        return _missing("overfitting figures (PBO, deflated Sharpe)")
    rows = [(k, _time_cell(k, v)) for k, v in of.items() if not isinstance(v, (dict, list))]
    return table(["measure", "value"], rows) + (
        "<p class='note'>PBO: probability that the in-sample best is below the median out of sample "
        "(lower is better). Deflated Sharpe: the Sharpe ratio's significance given every candidate tried.</p>")


def slippage_section(run_dir: Path, stem: str) -> str:
    go = plotly().graph_objects
    s = gate_summary(run_dir, "slippage", stem)
    if not s or not s.get("pnl_by_bps"):
        return _missing("slippage stress results")
    pts = sorted((float(k), float(v)) for k, v in s["pnl_by_bps"].items())
    fig = go.Figure(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name="PnL"))
    fig.add_hline(y=0.0, line_dash="dot", line_color="#cf222e")
    fig.update_layout(xaxis_title="slippage (bps per fill)", yaxis_title="total PnL (USD)")
    return fig_div(fig, 320)


def monte_carlo_section(run_dir: Path, stem: str) -> str:
    """The trade-order reshuffle's percentiles as box plots (return % and max drawdown %)."""
    go, sp = plotly().graph_objects, plotly().subplots
    s = gate_summary(run_dir, "monte_carlo", stem)
    ci = (s or {}).get("monte_carlo_ci") or {}
    if not ci:
        return _missing("Monte Carlo results")
    fig = sp.make_subplots(rows=1, cols=2, subplot_titles=("return %", "max drawdown %"))
    for col, key in ((1, "return_pct"), (2, "max_drawdown_pct")):
        q = {k: 100.0 * float(v) for k, v in (ci.get(key) or {}).items()}
        if {"p5", "p25", "p50", "p75", "p95"} <= set(q):
            fig.add_trace(go.Box(q1=[q["p25"]], median=[q["p50"]], q3=[q["p75"]], lowerfence=[q["p5"]],
                                 upperfence=[q["p95"]], name=key, x=[key]), 1, col)
    fig.update_layout(showlegend=False)
    note = (f"<p class='note'>{s.get('iterations')} reshuffles of the trade order; whiskers p5..p95, box "
            f"p25..p75. Probability of a loss: {_num(ci.get('prob_loss'))}.</p>")
    return note + fig_div(fig, 340)


def sensitivity_section(run_dir: Path, stem: str) -> str:
    go = plotly().graph_objects
    s = gate_summary(run_dir, "sensitivity", stem)
    variants = (s or {}).get("variants") or []
    if not variants:
        return _missing("sensitivity variants")
    labels = [f"{v['path'].rsplit('.', 1)[-1]} {v['from']}→{v['to']}" for v in variants]
    pnl = [float(v["total_pnl"]) for v in variants]
    fig = go.Figure(go.Bar(x=pnl, y=labels, orientation="h",
                           marker_color=["#1a7f37" if p >= 0 else "#cf222e" for p in pnl]))
    fig.update_layout(xaxis_title="total PnL with the knob moved a notch (USD)", yaxis_autorange="reversed")
    return fig_div(fig, 60 + 26 * len(labels))


# ------------------------------------------------------------------------------ selected equity
def equity_section(replay: dict | None) -> str:
    """The engine's per-bar equity when the replay carries it, else the realised balance per fill."""
    if not replay:
        return _missing("replay report of the selected candidate")
    if replay.get("equity_curve"):
        from reports.replay_plot import equity_figure

        return fig_div(equity_figure(replay["equity_curve"], replay["initial_balance"]), 560)
    fills = replay.get("fills") or []
    if not fills:
        return _missing("fills in the selected candidate's replay")
    go = plotly().graph_objects
    from reports.replay_plot import to_dt

    t = [replay["start_ms"]] + [f["t_ms"] for f in fills]
    bal = [replay["initial_balance"]] + [f["balance"] for f in fills]
    fig = go.Figure(go.Scatter(x=to_dt(t), y=bal, line_shape="hv", name="realised balance"))
    fig.update_layout(xaxis_title="time (UTC)", yaxis_title="balance after each fill (USD)")
    return ("<p class='note'>Realised balance after each fill (the replay was run without per-bar equity).</p>"
            + fig_div(fig, 360))


# ------------------------------------------------------------------------------ the page
def selected_item(run_dir: Path, items: list[dict]) -> dict | None:
    """The selection's chosen candidate, else the best-ranked replayed one."""
    sel = _read_json(run_dir / "reports" / "selection.json") or {}
    chosen = (sel.get("selected") or {}).get("config_id")
    for i in items:
        if chosen and i.get("config_id") == chosen:
            return i
    return items[0] if items else None


def _stem(item: dict) -> str:
    path = Path(str(item.get("replay_report_path") or ""))
    return path.name.removesuffix(".replay.json") if path.name else ""


def data_paths_of(run_dir: Path) -> list[Path]:
    """The run's candle and funding sources as its metadata names them."""
    args = (_read_json(run_dir / "run_metadata.json") or {}).get("args") or {}
    out = []
    for key in ("candles_db", "exit_candles_db", "funding_db"):
        for item in str(args.get(key) or "").split(","):
            if item.strip():
                out.append(Path(item.strip()))
    from marketdata.candles import resolve_sources

    return [p for item in out for p in (resolve_sources(str(item)) if item.is_dir() else [item])]


def plot_links(run_dir: Path, items: list[dict]) -> str:
    """Links to the candidates' replay plots (replays/<stem>.replay.html) that exist."""
    links = []
    for i in items:
        stem = _stem(i)
        if stem and (run_dir / "replays" / f"{stem}.replay.html").exists():
            links.append(f"<a href='../replays/{esc(stem)}.replay.html'>{esc(stem)} ({esc(str(i.get('config_id'))[:12])})</a>")
    return f"<p>Replay plots: {' · '.join(links)}</p>" if links else ""


def dashboard_section(run_dir: Path) -> str:
    db = run_dir / "state" / "tpe.sqlite3"
    if not db.exists():
        return ""
    from gpu.tpe import dashboard_hint

    return f"<p>Browse the TPE search: <code>{esc(dashboard_hint(f'sqlite:///{db.resolve()}'))}</code></p>"


def render_report_html(run_dir: Path, data_paths: Iterable[str | Path] | None = None) -> str:
    """The page's HTML text for a factory run directory (see the module docstring)."""
    run_dir = Path(run_dir)
    report = _read_json(run_dir / "reports" / "report.json") or {}
    items = report.get("items") or []
    item = selected_item(run_dir, items) or {}
    stem = _stem(item)
    replay = _read_json(Path(item["replay_report_path"])) if item.get("replay_report_path") else None
    if replay is None and stem:
        replay = _read_json(run_dir / "replays" / f"{stem}.replay.json")
    chosen = f" · selected {str(item.get('config_id'))[:12]}" if item else ""
    sections = [
        ("Candidates", candidates_section(items) + plot_links(run_dir, items) + dashboard_section(run_dir)),
        ("Sweep landscape", landscape_section(_sweep_rows(run_dir))),
        (f"Walk-forward folds{chosen}", walk_forward_section(run_dir, stem, report, item)),
        ("Overfitting", overfitting_section(report, item)),
        ("Slippage curve", slippage_section(run_dir, stem)),
        ("Monte Carlo (trade order reshuffled)", monte_carlo_section(run_dir, stem)),
        ("Sensitivity (each knob a notch either way)", sensitivity_section(run_dir, stem)),
        (f"Equity of the selected candidate{chosen}", equity_section(replay)),
    ]
    paths = list(data_paths) if data_paths is not None else data_paths_of(run_dir)
    subtitle = f"profile {report.get('profile', '?')} · {len(items)} replayed candidates{chosen}"
    return page(f"Factory run {report.get('run_id', run_dir.name)}", subtitle, sections, synthetic_note(paths))


def write_report_html(run_dir: Path, data_paths: Iterable[str | Path] | None = None) -> Path:
    """Write <run_dir>/reports/report.html (atomically) and return its path."""
    return write_page(Path(run_dir) / "reports" / "report.html", render_report_html(run_dir, data_paths))


def write_candidate_plot(run_dir: Path, stem: str, report: dict, md, cfg,
                         data_paths: Iterable[str | Path] | None = None) -> Path:
    """replays/<stem>.replay.html: `backtester replay --plot` for one candidate of the run. `report`
    must come from run_replay(..., with_trades=True, with_equity=True) over `md`."""
    import numpy as np

    from reports.replay_plot import replay_page

    paths = list(data_paths) if data_paths is not None else data_paths_of(Path(run_dir))
    wv = np.ascontiguousarray(cfg.windows(), dtype=np.int64)
    return write_page(Path(run_dir) / "replays" / f"{stem}.replay.html",
                      replay_page(report, md, wv, synthetic_note(paths)))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m factory.report_html <run_dir>", file=sys.stderr)
        return 2
    from reports.html import PlotsUnavailable

    try:
        print(write_report_html(Path(args[0])))
    except PlotsUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
