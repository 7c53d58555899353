"""Market data: SQLite candle/funding/universe/BBO stores and the loaders the engines read from.

Imports nothing else of ours (see DESIGN.md §1). Entry points: `candles.load_market_data`,
`funding.funding_matrix`, `universe.universe_filter`, `demo.ensure_demo_data`, `checks`.
"""
