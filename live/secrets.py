"""The Hyperliquid key file: read once, checked strictly, never shown.

The key signs real-money orders, so the file must be private (no group/other bits: a file
another local user can read is a leaked key) and the key text must never reach a log, an error
message, a repr or the audit trail. `Secrets` therefore keeps the key in a private attribute and
every error names the file and the field, never the value.

File: JSON {"secret_key": 64 hex (optional 0x), "main_address": "0x" + 40 hex}. main_address may
differ from the key's own address: the key is then an API (agent) wallet trading for main_address.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SECRETS_PATH = Path.home() / ".config" / "openclaw" / "ai-quant-secrets.json"
_KEY_RE = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_ADDR_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
MAX_BYTES = 64 * 1024


class SecretsError(ValueError):
    """One line naming the file and what is wrong (never the key)."""


@dataclass(frozen=True)
class Secrets:
    main_address: str
    path: Path
    _secret_key: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Secrets(main_address={self.main_address!r}, path={str(self.path)!r}, secret_key=<redacted>)"

    __str__ = __repr__

    def wallet(self):
        """The eth_account LocalAccount that signs orders."""
        import eth_account

        return eth_account.Account.from_key(self._secret_key)

    @property
    def signer_address(self) -> str:
        return self.wallet().address

    @property
    def is_agent(self) -> bool:
        return self.signer_address.lower() != self.main_address.lower()

    def redact(self, text: str) -> str:
        """Remove the key text from a string (defence in depth for exception texts)."""
        key = self._secret_key.lower().removeprefix("0x")
        out = text
        for variant in (key, key.upper(), "0x" + key):
            out = out.replace(variant, "<redacted>")
        return out


def secrets_path_from_env(env=None) -> Path:
    env = os.environ if env is None else env
    raw = (env.get("AI_QUANT_SECRETS_PATH") or "").strip()
    return Path(raw).expanduser() if raw else DEFAULT_SECRETS_PATH


def read_private_file(path: Path, max_bytes: int, what: str, env_var: str, error: type[Exception]) -> bytes:
    """At most max_bytes + 1 bytes of a secrets file: opened without following a final link,
    refused (one line, `error`) unless it is a regular file with no group/other permission bits."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise error(f"{path}: {what} file not found ({env_var})") from None
    except OSError as exc:
        raise error(f"{path}: cannot open {what} file ({exc.strerror}) ({env_var})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: {what} path is not a regular file ({env_var})")
        if st.st_mode & 0o077:
            raise error(f"{path}: permissions {oct(st.st_mode & 0o777)} let group/others read the {what}; "
                        f"run chmod 600 {path} ({env_var})")
        return os.read(fd, max_bytes + 1)
    finally:
        os.close(fd)


def load_secrets(path: str | os.PathLike) -> Secrets:
    """Open O_RDONLY, refuse group/other permission bits, validate both fields."""
    p = Path(path).expanduser()
    return _parse(p, read_private_file(p, MAX_BYTES, "secrets", "AI_QUANT_SECRETS_PATH", SecretsError))


def _parse(p: Path, raw: bytes) -> Secrets:
    if len(raw) > MAX_BYTES:
        raise SecretsError(f"{p}: secrets file is larger than {MAX_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SecretsError(f"{p}: not valid JSON (expected {{\"secret_key\": ..., \"main_address\": ...}})") from None
    if not isinstance(data, dict):
        raise SecretsError(f"{p}: must be a JSON object with secret_key and main_address")
    key = data.get("secret_key")
    if not isinstance(key, str) or not _KEY_RE.match(key.strip()):
        raise SecretsError(f"{p}: secret_key must be 64 hex characters (optionally 0x-prefixed)")
    addr = data.get("main_address")
    if not isinstance(addr, str) or not _ADDR_RE.match(addr.strip()):
        raise SecretsError(f"{p}: main_address must be 0x followed by 40 hex characters")
    key = key.strip()
    return Secrets(main_address=addr.strip(), path=p, _secret_key=key if key.startswith("0x") else "0x" + key)
