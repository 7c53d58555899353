"""HTML reports with plots (the `[plots]` extra): replay plots, factory report.html.

plotly is imported lazily by these modules, so the core (replay, sweep, trader) never needs it.
"""
