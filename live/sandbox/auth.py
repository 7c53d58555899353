"""Who signed an /exchange request, and is the nonce fresh?

The real exchange recovers the signer from the EIP-712 signature, maps an approved API
wallet (agent) to its owner, and keeps each signer's 100 highest nonces; a request is
accepted only with a nonce above the smallest of them and not already used.
"""

from __future__ import annotations

from collections.abc import Mapping

from hyperliquid.utils.signing import (
    recover_agent_or_user_from_l1_action,
    recover_user_from_user_signed_action,
)

NONCE_WINDOW = 100

APPROVE_AGENT_TYPES = [
    {"name": "hyperliquidChain", "type": "string"},
    {"name": "agentAddress", "type": "address"},
    {"name": "agentName", "type": "string"},
    {"name": "nonce", "type": "uint64"},
]


class AuthError(Exception):
    """Whole-request rejection text."""


class Signers:
    def __init__(self, users: set[str], is_mainnet: bool = False):
        self.users = {u.lower() for u in users}
        self.agents: dict[str, str] = {}
        self.is_mainnet = is_mainnet
        self._nonces: dict[str, set[int]] = {}

    def approve(self, user: str, agent: str) -> None:
        self.agents[agent.lower()] = user.lower()

    def recover(self, body: Mapping) -> str:
        """Return the signer address (lowercase) of an /exchange body, or raise AuthError."""
        action, sig = body.get("action"), body.get("signature")
        if not isinstance(action, Mapping) or not isinstance(sig, Mapping):
            raise AuthError("Failed to deserialize the JSON body into the target type")
        nonce = body.get("nonce")
        if not isinstance(nonce, int):
            raise AuthError("Failed to deserialize the JSON body into the target type: nonce")
        try:
            if action.get("type") == "approveAgent":
                signed = dict(action)
                signed.setdefault("agentName", "")
                addr = recover_user_from_user_signed_action(
                    signed, sig, APPROVE_AGENT_TYPES, "HyperliquidTransaction:ApproveAgent", self.is_mainnet)
            else:
                addr = recover_agent_or_user_from_l1_action(
                    dict(action), sig, body.get("vaultAddress"), nonce, body.get("expiresAfter"), self.is_mainnet)
        except Exception:  # malformed signature fields: same answer as a wrong signer
            raise AuthError("Invalid signature.") from None
        return addr.lower()

    def account_for(self, signer: str) -> str:
        if signer in self.users:
            return signer
        owner = self.agents.get(signer)
        if owner is None:
            raise AuthError(f"User or API Wallet {signer} does not exist.")
        return owner

    def use_nonce(self, signer: str, nonce: int) -> None:
        seen = self._nonces.setdefault(signer, set())
        if nonce in seen:
            raise AuthError(f"Invalid nonce: duplicate nonce {nonce}")
        if len(seen) >= NONCE_WINDOW and nonce <= min(seen):
            raise AuthError(f"Invalid nonce: nonce {nonce} is lower than the lowest of the last {NONCE_WINDOW}")
        seen.add(nonce)
        if len(seen) > NONCE_WINDOW:
            seen.discard(min(seen))
