"""A protocol-faithful local Hyperliquid exchange for tests and paper rehearsals.

The real hyperliquid-python-sdk (Info, Exchange, WebsocketManager) talks to it
unchanged; prices come from a replayed candle path that only moves on advance().
"""

from live.sandbox.faults import Faults
from live.sandbox.matching import BookSpec, Venue, VenueError
from live.sandbox.pricepath import AssetSpec, Bar, PricePath, SandboxConfigError
from live.sandbox.server import SandboxExchange

__all__ = ["AssetSpec", "Bar", "BookSpec", "Faults", "PricePath", "SandboxConfigError", "SandboxExchange",
           "Venue", "VenueError"]
