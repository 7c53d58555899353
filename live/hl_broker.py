"""HyperliquidBroker: the exchange adapter, on the real hyperliquid-python-sdk.

It knows the exchange's rules so that an order the exchange would refuse for a rounding or size
reason is refused here first, with the exchange's own rule in the message: sizes are rounded down
to szDecimals (only bump-to-minimum rounds up), prices to 5 significant figures and at most
6 - szDecimals decimals (integers always pass), entries are IOC limits at mid ± slippage, exits
reduce-only IOC. Every exchange answer is classified — FILLED, PARTIAL, RESTING, REJECTED (with the
exchange's text, written to audit_events as ORDER_REJECTED) or UNKNOWN (timeout / dropped
connection / 5xx: the order may or may not exist, the OMS resolves it by cloid). Nothing is
swallowed. Each signed request carries expiresAfter, so a request stuck in the network cannot be
executed after the OMS gave up on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

import requests

from live.exchange_errors import with_retries

MIN_NOTIONAL_USD = 10.0
MIN_NOTIONAL_RULE = "Order must have minimum value of $10"
MAINNET_URL = "https://api.hyperliquid.xyz"
MAX_PERP_DECIMALS = 6
MAX_SIG_FIGS = 5
TRIGGER_SLIPPAGE = 0.10  # a market trigger's worst fill price, as Hyperliquid's market TP/SL


class OrderRefused(ValueError):
    """Refused locally before sending (the text names the exchange rule)."""


# ------------------------------------------------------------------ exchange number rules
def round_size(sz: float, sz_decimals: int, *, up: bool = False) -> float:
    """Down to szDecimals (never send more than decided); up only when bumping to the minimum."""
    q = Decimal(1).scaleb(-sz_decimals)
    return float(Decimal(repr(float(sz))).quantize(q, rounding=ROUND_CEILING if up else ROUND_FLOOR))


def price_decimals(px: float, sz_decimals: int) -> int:
    if px >= 10 ** MAX_SIG_FIGS:
        return 0
    return max(0, min(MAX_PERP_DECIMALS - sz_decimals, MAX_SIG_FIGS - 1 - math.floor(math.log10(px))))


def round_price(px: float, sz_decimals: int, *, up: bool | None = None) -> float:
    """Perp tick rule: 5 significant figures, at most 6 - szDecimals decimals; integers always valid."""
    if not (px > 0 and math.isfinite(px)):
        raise OrderRefused(f"price {px!r} is not a positive number")
    mode = ROUND_HALF_EVEN if up is None else (ROUND_CEILING if up else ROUND_FLOOR)
    dec = price_decimals(px, sz_decimals)
    out = float(Decimal(repr(float(px))).quantize(Decimal(1).scaleb(-dec), rounding=mode))
    if out >= 10 ** MAX_SIG_FIGS:
        out = float(round(out))
    return out if out > 0 else float(Decimal(1).scaleb(-dec))


def min_size_for_notional(px: float, sz_decimals: int, min_usd: float = MIN_NOTIONAL_USD) -> float:
    return round_size(min_usd / px, sz_decimals, up=True)


# ------------------------------------------------------------------ results
@dataclass
class OrderResult:
    status: str                      # FILLED | PARTIAL | RESTING | REJECTED | UNKNOWN
    oid: int | None = None
    filled_sz: float = 0.0
    avg_px: float | None = None
    error: str | None = None
    raw: object = None
    limit_px: float | None = None
    size: float = 0.0
    fills: list[dict] = field(default_factory=list)


def parse_order_response(resp: object, requested: float) -> OrderResult:
    """One order's outcome from an /exchange reply (ok only when no status carries an error)."""
    if not isinstance(resp, dict):
        return OrderResult("UNKNOWN", error=f"unexpected reply {resp!r}"[:500], raw=resp)
    if resp.get("status") != "ok":
        return OrderResult("REJECTED", error=str(resp.get("response") or resp.get("error") or resp)[:1000], raw=resp)
    try:
        st = resp["response"]["data"]["statuses"][0]
    except (KeyError, IndexError, TypeError):
        return OrderResult("UNKNOWN", error=f"reply without statuses: {resp!r}"[:500], raw=resp)
    if isinstance(st, dict) and "filled" in st:
        f = st["filled"]
        total = float(f.get("totalSz") or 0.0)
        status = "FILLED" if total >= requested * (1 - 1e-9) else "PARTIAL"
        return OrderResult(status, oid=int(f["oid"]), filled_sz=total, avg_px=float(f["avgPx"]), raw=resp)
    if isinstance(st, dict) and "resting" in st:
        return OrderResult("RESTING", oid=int(st["resting"]["oid"]), raw=resp)
    if isinstance(st, dict) and "error" in st:
        return OrderResult("REJECTED", error=str(st["error"]), raw=resp)
    return OrderResult("UNKNOWN", error=f"unrecognised status {st!r}"[:500], raw=resp)


# ------------------------------------------------------------------ broker
class HyperliquidBroker:
    """Info/Exchange clients for one account. `secrets.main_address` is the traded account."""

    def __init__(self, base_url: str, secrets, *, timeout_s: float = 10.0, slippage_pct: float = 0.01,
                 expires_s: float = 15.0, bump_to_min: bool = False, mids: Callable[[], dict] | None = None,
                 read_only: bool = False, read_attempts: int = 1, retry_base_s: float = 0.25) -> None:
        from hyperliquid.info import Info

        self.base_url = base_url.rstrip("/")
        self.secrets = secrets
        self.address = secrets.main_address if secrets is not None else None
        self.timeout_s = timeout_s
        self.slippage = min(max(float(slippage_pct), 0.0005), 0.10)
        self.expires_s = expires_s
        self.bump_to_min = bump_to_min
        self.read_attempts = read_attempts
        self.retry_base_s = retry_base_s
        self.info = self._read(lambda: Info(self.base_url, skip_ws=True, timeout=timeout_s), "meta")
        self._mids = mids
        self._on_mid_fallback: Callable[[str], None] | None = None
        self.rest_mid_fallbacks = 0
        self._exchange = None
        self._leverage: dict[str, int] = {}
        self.read_only = read_only

    # ---- clients
    @property
    def exchange(self):
        if self.read_only:
            raise RuntimeError("read-only broker (dry_live) must never build an Exchange client")
        if self._exchange is None:
            from hyperliquid.exchange import Exchange

            meta = self._read(self.info.meta, "meta")
            self._exchange = Exchange(self.secrets.wallet(), self.base_url, meta=meta,
                                      account_address=self.address, timeout=self.timeout_s)
        self._exchange.set_expires_after(int(time.time() * 1000 + self.expires_s * 1000))
        return self._exchange

    def _read(self, call: Callable, what: str):
        """A read (or an idempotent write such as updateLeverage), retried on transient errors."""
        return with_retries(call, what, attempts=self.read_attempts, base_delay_s=self.retry_base_s)

    # ---- market and account reads
    def sz_decimals(self, symbol: str) -> int:
        return int(self.info.asset_to_sz_decimals[self.info.name_to_asset(symbol)])

    def has_symbol(self, symbol: str) -> bool:
        return symbol in self.info.name_to_coin

    def set_mids_source(self, mids: Callable[[], dict], on_fallback: Callable[[str], None] | None = None) -> None:
        """Prices come from `mids()` (the WS snapshot, fresh entries only); a symbol missing
        there is read from REST allMids and reported through on_fallback."""
        self._mids, self._on_mid_fallback = mids, on_fallback

    def mid(self, symbol: str) -> float:
        px = 0.0
        if self._mids is not None:
            px = float((self._mids() or {}).get(symbol) or 0.0)
            if px <= 0:
                self.rest_mid_fallbacks += 1
                if self._on_mid_fallback is not None:
                    self._on_mid_fallback(symbol)
        if px <= 0:
            px = float(self._read(self.info.all_mids, "allMids").get(symbol) or 0.0)
        if px <= 0:
            raise OrderRefused(f"{symbol}: no mid price from the exchange")
        return px

    def user_state(self) -> dict:
        return self._read(lambda: self.info.user_state(self.address), "clearinghouseState")

    def positions(self) -> dict[str, float]:
        """Signed exchange position size per coin (non-zero only)."""
        out = {}
        for ap in self.user_state().get("assetPositions", []):
            p = ap.get("position", {})
            szi = float(p.get("szi") or 0.0)
            if szi:
                out[p["coin"]] = szi
            lev = (p.get("leverage") or {}).get("value")
            if lev:
                self._leverage[p["coin"]] = int(lev)
        return out

    def account_value(self) -> float:
        return float(self.user_state()["marginSummary"]["accountValue"])

    def open_orders(self) -> list[dict]:
        return self._read(lambda: self.info.open_orders(self.address), "openOrders")

    def order_status(self, cloid: str) -> dict:
        from hyperliquid.utils.types import Cloid

        return self.info.query_order_by_cloid(self.address, Cloid(cloid))

    def fills_by_time(self, start_ms: int, end_ms: int) -> list[dict]:
        """The account's fills in [start_ms, end_ms] (REST backfill of the fill intake)."""
        return self._read(lambda: self.info.user_fills_by_time(self.address, int(start_ms), int(end_ms),
                                                               aggregate_by_time=False), "userFillsByTime")

    def fills_for_oid(self, oid: int) -> list[dict]:
        fills = self._read(lambda: self.info.user_fills(self.address), "userFills")
        return [f for f in fills if int(f.get("oid", -1)) == int(oid)][::-1]

    # ---- order sizing and pricing
    def entry_size(self, symbol: str, size: float, px: float) -> float:
        """Rounded entry size, or OrderRefused naming the exchange's $10 rule."""
        sd = self.sz_decimals(symbol)
        sz = round_size(size, sd)
        if sz * px < MIN_NOTIONAL_USD:
            if self.bump_to_min and size * px >= MIN_NOTIONAL_USD:
                sz = min_size_for_notional(px, sd)
            else:
                raise OrderRefused(f"{MIN_NOTIONAL_RULE} (refused locally: {symbol} size {sz:g} x {px:g} = "
                                   f"${sz * px:.2f})")
        return sz

    def limit_price(self, symbol: str, is_buy: bool, ref_px: float | None = None) -> float:
        mid = ref_px if ref_px else self.mid(symbol)
        px = mid * (1 + self.slippage) if is_buy else mid * (1 - self.slippage)
        return round_price(px, self.sz_decimals(symbol), up=is_buy)

    # ---- writes
    def ensure_leverage(self, symbol: str, leverage: float) -> None:
        lev = max(1, int(round(leverage)))
        if self._leverage.get(symbol) == lev:
            return
        resp = self._read(lambda: self.exchange.update_leverage(lev, symbol, True), "updateLeverage")
        if not isinstance(resp, dict) or resp.get("status") != "ok":
            raise OrderRefused(f"updateLeverage {symbol} {lev}x refused by the exchange: "
                               f"{resp.get('response') if isinstance(resp, dict) else resp}")
        self._leverage[symbol] = lev

    def submit(self, symbol: str, is_buy: bool, size: float, limit_px: float, *, reduce_only: bool,
               cloid: str, tif: str = "Ioc") -> OrderResult:
        """Send one limit order. Network trouble becomes UNKNOWN (never retried here)."""
        from hyperliquid.utils.types import Cloid

        return self._write(lambda x: x.order(symbol, is_buy, size, limit_px, {"limit": {"tif": tif}},
                                             reduce_only=reduce_only, cloid=Cloid(cloid)), limit_px, size)

    # ---- resting reduce-only trigger orders (live/protection.py)
    def trigger_limit_px(self, symbol: str, is_buy: bool, trigger_px: float) -> float:
        """The worst price a market trigger may fill at: TRIGGER_SLIPPAGE beyond its trigger."""
        px = trigger_px * (1 + TRIGGER_SLIPPAGE if is_buy else 1 - TRIGGER_SLIPPAGE)
        return round_price(px, self.sz_decimals(symbol), up=is_buy)

    def place_trigger(self, symbol: str, is_buy: bool, size: float, trigger_px: float, *, tpsl: str,
                      cloid: str) -> OrderResult:
        """A reduce-only market trigger order ({"trigger": {"triggerPx", "isMarket": true, "tpsl"}}):
        it rests on the exchange and becomes a market order when the mark crosses trigger_px."""
        from hyperliquid.utils.types import Cloid

        limit_px = self.trigger_limit_px(symbol, is_buy, trigger_px)
        kind = {"trigger": {"triggerPx": trigger_px, "isMarket": True, "tpsl": tpsl}}
        return self._write(lambda x: x.order(symbol, is_buy, size, limit_px, kind, reduce_only=True,
                                             cloid=Cloid(cloid)), limit_px, size)

    def modify_trigger(self, symbol: str, is_buy: bool, size: float, trigger_px: float, *, tpsl: str,
                       cloid: str) -> OrderResult:
        """Move / resize our trigger order in place, addressed by its cloid (batchModify); the
        exchange answers with the replacement's new oid, the cloid stays."""
        from hyperliquid.utils.types import Cloid

        limit_px = self.trigger_limit_px(symbol, is_buy, trigger_px)
        kind = {"trigger": {"triggerPx": trigger_px, "isMarket": True, "tpsl": tpsl}}
        return self._write(lambda x: x.modify_order(Cloid(cloid), symbol, is_buy, size, limit_px, kind,
                                                    reduce_only=True, cloid=Cloid(cloid)), limit_px, size)

    def trigger_orders(self) -> list[dict]:
        """The account's resting trigger orders (frontendOpenOrders: triggerPx, orderType, reduceOnly)."""
        orders = self._read(lambda: self.info.frontend_open_orders(self.address), "frontendOpenOrders")
        return [o for o in orders if o.get("isTrigger")]

    def _write(self, send: Callable, limit_px: float, size: float) -> OrderResult:
        """One signed write, classified; network trouble is UNKNOWN (the OMS asks by cloid)."""
        from hyperliquid.utils.error import ClientError, ServerError

        exchange = self.exchange  # built (meta read, retried) before the send: its failure sends nothing
        try:
            resp = send(exchange)
        except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
            return OrderResult("UNKNOWN", error=self._clean(f"{type(exc).__name__}: {exc}"), limit_px=limit_px,
                               size=size)
        except ServerError as exc:
            return OrderResult("UNKNOWN", error=self._clean(f"HTTP {exc.status_code}: {exc.message}"),
                               limit_px=limit_px, size=size)
        except ClientError as exc:
            return OrderResult("REJECTED", error=self._clean(f"HTTP {exc.status_code}: {exc.error_message}"),
                               limit_px=limit_px, size=size)
        out = parse_order_response(resp, size)
        out.limit_px, out.size = limit_px, size
        if out.error:
            out.error = self._clean(out.error)
        return out

    def cancel_by_cloid(self, symbol: str, cloid: str) -> tuple[bool, str]:
        from hyperliquid.utils.types import Cloid

        return self._cancel(lambda: self.exchange.cancel_by_cloid(symbol, Cloid(cloid)))

    def cancel_oid(self, symbol: str, oid: int) -> tuple[bool, str]:
        """Cancel an order by exchange oid (one without a cloid of ours: flat_now --live)."""
        return self._cancel(lambda: self.exchange.cancel(symbol, int(oid)))

    def _cancel(self, send: Callable) -> tuple[bool, str]:
        try:
            resp = send()
        except Exception as exc:  # reported by the caller as a reconcile event
            return False, self._clean(f"{type(exc).__name__}: {exc}")
        if isinstance(resp, dict) and resp.get("status") == "ok":
            st = resp["response"]["data"]["statuses"][0]
            return (True, "success") if st == "success" else (False, str(st.get("error", st)))
        return False, str(resp.get("response") if isinstance(resp, dict) else resp)

    def _clean(self, text: str) -> str:
        return self.secrets.redact(text) if self.secrets is not None else text
