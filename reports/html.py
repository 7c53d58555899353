"""One self-contained HTML page out of plotly figures, tables and notes.

Why self-contained: reports are mailed, archived beside the run and opened on machines with no
network, so plotly.js is inlined once in the page (no CDN) and every figure is a div that uses it.
"""

from __future__ import annotations

import html
import math
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import quote

PLOTS_HINT = "pip install -e '.[plots]' (or run scripts/setup_env.sh)"

CSS = """
body{margin:0;background:#fff;color:#1f2328;font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif}
header{padding:14px 20px;border-bottom:1px solid #d0d7de;background:#f6f8fa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 8px}
main{padding:0 20px 30px;max-width:1500px}
.meta{color:#57606a;font-size:13px}
.synthetic{background:#fff1c2;border:2px solid #d4a72c;color:#6b4d00;padding:8px 14px;margin:10px 0;
  font-weight:600}
.note{color:#57606a;font-size:13px;margin:4px 0}
table.data{border-collapse:collapse;font-size:12.5px;margin:6px 0}
table.data th,table.data td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;white-space:nowrap}
table.data th{background:#f6f8fa}table.data td.text{text-align:left}
code{background:#f6f8fa;padding:1px 4px}
"""


class PlotsUnavailable(RuntimeError):
    """plotly is not installed: one line telling the operator how to get it."""


def plotly():
    """The plotly package, or PlotsUnavailable naming the extra that provides it."""
    try:
        import plotly as _plotly
        import plotly.graph_objects  # noqa: F401
        import plotly.subplots  # noqa: F401
    except ImportError:
        raise PlotsUnavailable(f"plots need plotly: {PLOTS_HINT}") from None
    return _plotly


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fig_div(fig, height: int | None = None) -> str:
    """A figure as a div that uses the page's single inlined plotly.js."""
    if height is not None:
        fig.update_layout(height=height)
    fig.update_layout(margin=dict(l=60, r=20, t=40, b=40), template="plotly_white")
    return fig.to_html(full_html=False, include_plotlyjs=False,
                       config={"displaylogo": False, "responsive": True})


def fmt(value: object, digits: int = 4) -> str:
    """Numbers in significant digits (sub-cent prices stay readable), others as text."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0.0 and abs(value) < 1.0:
            return f"{value:.{digits}g}"
        return f"{value:,.2f}"
    return str(value)


def table(columns: Sequence[str], rows: Iterable[Sequence[object]], text_cols: int = 1) -> str:
    """An escaped HTML table; the first `text_cols` columns are left-aligned text."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(f"<td class='text'>{esc(fmt(v))}</td>" if i < text_cols else f"<td>{esc(fmt(v))}</td>"
                        for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table class='data'><tr>{head}</tr>{''.join(body)}</table>"


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str]], synthetic: str | None = None) -> str:
    """The whole document: plotly.js inline once, then each (heading, html) section in order."""
    plotly()
    from plotly.offline import get_plotlyjs

    banner = f"<div class='synthetic' id='synthetic-banner'>{esc(synthetic)}</div>" if synthetic else ""
    body = "".join(f"<section><h2>{esc(h)}</h2>{content}</section>" for h, content in sections)
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><link rel='icon' href='data:,'><style>{CSS}</style>"
            f"<script>{get_plotlyjs()}</script></head><body><header><h1>{esc(title)}</h1>"
            f"<div class='meta'>{esc(subtitle)}</div>{banner}</header><main>{body}</main></body></html>")


def write_page(path: Path, text: str) -> Path:
    """Write atomically (a half-written report must never be opened as the real one)."""
    from strategy.cli_io import write_output

    write_output(Path(path), text)
    return Path(path)


def synthetic_sources(paths: Iterable[str | Path]) -> list[str]:
    """Which of these SQLite files carry marketdata.demo's `demo_meta` synthetic=true marker."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            continue
        try:
            conn = sqlite3.connect(f"file:{quote(str(p.resolve()))}?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT value FROM demo_meta WHERE key = 'synthetic'").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            continue
        if row and str(row[0]).lower() == "true":
            out.append(p.name)
    return out


def synthetic_note(paths: Iterable[str | Path]) -> str | None:
    """The banner text for results computed on synthetic demo data, else None."""
    names = synthetic_sources(paths)
    if not names:
        return None
    return (f"SYNTHETIC DATA: {', '.join(names)} hold generated demo prices (marketdata.demo), not market "
            "data. Nothing on this page says anything about real markets.")
