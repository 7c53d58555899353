"""The one definition of the strategy: config schema and merge, indicators, decision kernel."""

from strategy.numba_cache import configure_numba_cache

configure_numba_cache()
