"""Accounts, positions and orders held by the sandbox venue."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Order:
    oid: int
    user: str
    coin: str
    asset: int
    is_buy: bool
    limit_px: float
    sz: float  # remaining
    orig_sz: float
    reduce_only: bool
    tif: str  # "Gtc" | "Ioc" | "Alo" | "FrontendMarket" for triggers
    timestamp: int
    cloid: str | None = None
    trigger_px: float | None = None
    tpsl: str | None = None  # "tp" | "sl" for trigger orders
    is_market_trigger: bool = False
    status: str = "open"
    status_ts: int = 0

    @property
    def is_trigger(self) -> bool:
        return self.trigger_px is not None


@dataclass
class Position:
    szi: float = 0.0
    entry_px: float = 0.0
    funding_all_time: float = 0.0
    funding_since_open: float = 0.0
    funding_since_change: float = 0.0


@dataclass
class Account:
    user: str
    balance: float  # USDC cash: deposits + realised pnl - fees + funding
    positions: dict[str, Position] = field(default_factory=dict)
    leverage: dict[str, tuple[int, bool]] = field(default_factory=dict)  # coin -> (value, is_cross)
    fills: list[dict] = field(default_factory=list)

    def position(self, coin: str) -> Position:
        return self.positions.setdefault(coin, Position())
