"""Sub-bars moved to marketdata.subbars so the sweep (gpu/, which may not import cpu_replay) builds
the very same arrays; this module keeps the old import path working."""

from marketdata.subbars import SubBarError, SubBars, build_sub_bars

__all__ = ["SubBarError", "SubBars", "build_sub_bars"]
