"""Operator alerts (Telegram bot, Discord webhook, generic JSON webhook), sent without blocking trading.

Why this shape:
- The trader must never wait on a phone notification: `Alerter.send()` only appends to a bounded
  in-memory queue per target and returns; one worker thread per target posts with a timeout and
  retries with exponential backoff. A full queue drops the alert and counts it (`.dropped`), so a
  dead receiver costs the trading loop nothing and a slow one cannot delay the other targets.
- Bot tokens and webhook URLs are credentials (anyone holding a Discord webhook URL can post to the
  channel), so they come from the environment or a chmod-600 JSON file, are kept out of every repr,
  and every line this module logs (and urllib3's own debug lines, which carry the request path) is
  passed through a redactor. Failures are described by status code or error class, never by the
  exception text, which would contain the URL.
- Bad settings raise `AlertConfigError` (an `EnvError`): one line naming the variable, never the secret.

Environment (docs/LIVE.md, "Alerts"):
  AI_QUANT_ALERT_TARGETS        comma list: telegram:<chat_id> | discord[:<webhook url>] | webhook[:<url>]
  AI_QUANT_TELEGRAM_BOT_TOKEN   bot token for every telegram target
  AI_QUANT_DISCORD_WEBHOOK_URL  URL of a bare `discord` target
  AI_QUANT_ALERT_WEBHOOK_URL    URL of a bare `webhook` target
  AI_QUANT_ALERT_SECRETS_PATH   chmod-600 JSON {telegram_bot_token, discord_webhook_url, webhook_url};
                                the environment variables above win over the file
  AI_QUANT_TELEGRAM_API_URL     https://api.telegram.org
  AI_QUANT_ALERT_ENABLED        default: on iff targets are set; 1 without targets is an error
  AI_QUANT_ALERT_DRY_RUN        0 (1: log the message instead of posting it)
  AI_QUANT_ALERT_QUEUE_MAX      200 per target
  AI_QUANT_ALERT_SEND_TIMEOUT_S 6 per HTTP attempt
  AI_QUANT_ALERT_RETRIES        3 retries after the first attempt (5xx, 429, timeouts, refused connections)
  AI_QUANT_ALERT_BACKOFF_S      1 (then 2, 4, ... capped at 30 s; a 429's Retry-After wins, capped at 60 s)
  AI_QUANT_ALERT_COOLDOWN_S     600: a repeated dedupe_key inside this window is suppressed
  AI_QUANT_ALERT_LABEL          prefix of every message, e.g. the instance name

CLI: `python -m live.alerts test` posts one test alert to every target (exit 1 if any failed);
`python -m live.alerts show` prints the parsed, redacted settings.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import requests
import typer

from live.env import EnvError, _raw, env_bool, env_float, env_int, env_path
from live.secrets import read_private_file

TITLES = {
    "kill": "Kill switch engaged",
    "clear": "Kill switch cleared",
    "safe_mode": "Safe mode: flattening",
    "daily_loss": "Daily loss stop",
    "order_rejected": "Order rejected",
    "unprotected_position": "Position without protection",
    "protective_stop": "Protective stop filled on the exchange",
    "engine_stale": "Engine stale",
    "data_lag": "Market data lag",
    "factory_result": "Factory run result",
    "daily_summary": "Daily summary",
    "start": "Trader started",
    "test": "Test alert",
}
DEFAULT_SEVERITY = {
    "kill": "critical", "clear": "info", "safe_mode": "critical", "daily_loss": "critical",
    "order_rejected": "warning", "unprotected_position": "critical", "protective_stop": "warning",
    "engine_stale": "critical",
    "data_lag": "warning", "factory_result": "info", "daily_summary": "info", "start": "info", "test": "info",
}
SEVERITIES = ("info", "warning", "critical")
ICONS = {"info": "ℹ️", "warning": "⚠️", "critical": "🚨"}
CHANNELS = ("telegram", "discord", "webhook")
TELEGRAM_MAX = 4096
DISCORD_MAX = 2000
WEBHOOK_TEXT_MAX = 8000
DEFAULT_TELEGRAM_API = "https://api.telegram.org"
SECRET_FILE_KEYS = {"telegram_bot_token": "AI_QUANT_TELEGRAM_BOT_TOKEN",
                    "discord_webhook_url": "AI_QUANT_DISCORD_WEBHOOK_URL",
                    "webhook_url": "AI_QUANT_ALERT_WEBHOOK_URL"}
MAX_SECRET_FILE_BYTES = 64 * 1024
MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 60.0
REDACTED = "<redacted>"
_CHAT_RE = re.compile(r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{3,63})$")
_TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{8,200}$")
_log = logging.getLogger("live.alerts")


class AlertConfigError(EnvError):
    """One line naming the variable (or secrets-file field) and the problem, never the secret."""


# --------------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class AlertTarget:
    """One destination. `url` carries the secret (bot token or webhook path) and never reaches a repr."""

    channel: str
    name: str                       # shown in logs and the CLI: no secret in it
    url: str = field(repr=False)
    chat_id: str | None = None

    def payload(self, alert: Alert) -> dict[str, Any]:
        """The JSON body each service expects; text capped to the service's limit."""
        if self.channel == "telegram":
            return {"chat_id": self.chat_id, "text": cap_text(alert.message(), TELEGRAM_MAX)}
        if self.channel == "discord":
            # allowed_mentions: alert text (an exchange error, a symbol) must never ping @everyone
            return {"content": cap_text(alert.message(), DISCORD_MAX), "allowed_mentions": {"parse": []}}
        return {"kind": alert.kind, "severity": alert.severity, "title": alert.title,
                "text": cap_text(alert.text, WEBHOOK_TEXT_MAX), "ts_ms": alert.ts_ms,
                "ts_iso": alert.ts_iso, "label": alert.label}

    def secrets(self) -> list[str]:
        """Every substring of the URL that would leak the credential (full URL, path, query, token)."""
        parts = urlsplit(self.url)
        path_q = parts.path + ("?" + parts.query if parts.query else "")
        out = [self.url, path_q, parts.path, parts.query]
        out += [seg for seg in re.split(r"[/?&=]", path_q) if len(seg) >= 12]
        if self.channel == "telegram":  # the bare token, and its key half, as an error text might show them
            token = next((seg[3:] for seg in parts.path.split("/") if seg.startswith("bot")), "")
            out += [token, token.partition(":")[2]]
        return [s for s in out if len(s) >= 2 and s != "/"]


@dataclass(frozen=True)
class AlertSettings:
    """Parsed alert settings; build with `AlertSettings.from_env(env)`."""

    enabled: bool = False
    targets: tuple[AlertTarget, ...] = ()
    dry_run: bool = False
    queue_max: int = 200
    send_timeout_s: float = 6.0
    retries: int = 3
    backoff_s: float = 1.0
    cooldown_s: float = 600.0
    label: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AlertSettings:
        """Read AI_QUANT_ALERT_* (see the module docstring); raises AlertConfigError with one line."""
        env = os.environ if env is None else env
        try:
            return cls._from_env(env)
        except AlertConfigError:
            raise
        except EnvError as exc:
            raise AlertConfigError(str(exc)) from None

    @classmethod
    def _from_env(cls, env: Mapping[str, str]) -> AlertSettings:
        entries = _target_entries(env)
        enabled = env_bool(env, "AI_QUANT_ALERT_ENABLED", bool(entries))
        if enabled and not entries:
            raise AlertConfigError("AI_QUANT_ALERT_ENABLED=1 but AI_QUANT_ALERT_TARGETS is empty "
                                   "(e.g. telegram:<chat_id>, discord, webhook)")
        return cls(
            enabled=enabled,
            targets=_build_targets(entries, env) if enabled else (),
            dry_run=env_bool(env, "AI_QUANT_ALERT_DRY_RUN", False),
            queue_max=env_int(env, "AI_QUANT_ALERT_QUEUE_MAX", 200, lo=1, hi=100_000),
            send_timeout_s=env_float(env, "AI_QUANT_ALERT_SEND_TIMEOUT_S", 6.0, lo=0.05, hi=120),
            retries=env_int(env, "AI_QUANT_ALERT_RETRIES", 3, lo=0, hi=10),
            backoff_s=env_float(env, "AI_QUANT_ALERT_BACKOFF_S", 1.0, lo=0, hi=MAX_BACKOFF_S),
            cooldown_s=env_float(env, "AI_QUANT_ALERT_COOLDOWN_S", 600.0, lo=0, hi=7 * 86_400),
            label=_label(env),
        )

    def secrets(self) -> list[str]:
        return [s for t in self.targets for s in t.secrets()]

    def describe(self) -> str:
        """One line for the start-up log (no secrets)."""
        if not self.enabled:
            return "alerts off"
        names = ",".join(t.name for t in self.targets)
        return (f"alerts on: {names}{' (dry run)' if self.dry_run else ''} queue={self.queue_max} "
                f"timeout={self.send_timeout_s:g}s retries={self.retries} cooldown={self.cooldown_s:g}s")


def _label(env: Mapping[str, str]) -> str:
    label = _raw(env, "AI_QUANT_ALERT_LABEL") or ""
    if len(label) > 64 or any(ch in label for ch in "\r\n"):
        raise AlertConfigError("AI_QUANT_ALERT_LABEL must be one line of at most 64 characters")
    return label


def _target_entries(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """Split AI_QUANT_ALERT_TARGETS into (channel, target) pairs; duplicates dropped."""
    out: list[tuple[str, str]] = []
    for part in (_raw(env, "AI_QUANT_ALERT_TARGETS") or "").split(","):
        part = part.strip()
        if not part:
            continue
        channel, _, target = part.partition(":")
        channel = channel.strip().lower()
        if channel not in CHANNELS:
            raise AlertConfigError(f"AI_QUANT_ALERT_TARGETS: unknown channel {channel[:20]!r} "
                                   f"(use telegram:<chat_id>, discord[:<url>] or webhook[:<url>])")
        if (channel, target.strip()) not in out:
            out.append((channel, target.strip()))
    return out


def _build_targets(entries: list[tuple[str, str]], env: Mapping[str, str]) -> tuple[AlertTarget, ...]:
    secrets = _SecretSource(env)
    targets = [_target(channel, target, secrets, env) for channel, target in entries]
    seen: dict[str, int] = {}
    named = []
    for t in targets:  # two discord webhooks on one host still get distinct names in the CLI output
        seen[t.name] = seen.get(t.name, 0) + 1
        named.append(t if seen[t.name] == 1 else AlertTarget(t.channel, f"{t.name}#{seen[t.name]}", t.url, t.chat_id))
    return tuple(named)


def _target(channel: str, target: str, secrets: _SecretSource, env: Mapping[str, str]) -> AlertTarget:
    if channel == "telegram":
        if not _CHAT_RE.match(target):
            raise AlertConfigError("AI_QUANT_ALERT_TARGETS: telegram needs a chat id, e.g. telegram:123456789, "
                                   "telegram:-1001234567890 or telegram:@channel")
        token = secrets.get("telegram_bot_token")
        if not _TOKEN_RE.match(token):
            raise AlertConfigError(f"{secrets.where('telegram_bot_token')}: not a bot token (<digits>:<key>)")
        api = (_raw(env, "AI_QUANT_TELEGRAM_API_URL") or DEFAULT_TELEGRAM_API).rstrip("/")
        check_url(api, "AI_QUANT_TELEGRAM_API_URL")
        return AlertTarget("telegram", f"telegram:{target}", f"{api}/bot{token}/sendMessage", target)
    var = SECRET_FILE_KEYS["discord_webhook_url" if channel == "discord" else "webhook_url"]
    if target:
        url, where = target, f"AI_QUANT_ALERT_TARGETS ({channel})"
    else:
        key = "discord_webhook_url" if channel == "discord" else "webhook_url"
        url, where = secrets.get(key), secrets.where(key)
    if target and not target.lower().startswith(("https://", "http://")):
        raise AlertConfigError(f"AI_QUANT_ALERT_TARGETS: {channel} takes a webhook URL ({channel}:https://...) "
                               f"or nothing ({channel} alone reads {var})")
    host = check_url(url, where)
    return AlertTarget(channel, f"{channel}:{host}", url)


class _SecretSource:
    """Secrets from the environment first, then AI_QUANT_ALERT_SECRETS_PATH (read once, only if needed)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._path = env_path(env, "AI_QUANT_ALERT_SECRETS_PATH", None)
        self._file: dict[str, str] | None = None

    def get(self, key: str) -> str:
        value = _raw(self._env, SECRET_FILE_KEYS[key])
        if value is None and self._path is not None:
            if self._file is None:
                self._file = read_secrets_file(self._path)
            value = self._file.get(key)
        if not value:
            where = f" or {key} in {self._path}" if self._path else " (or AI_QUANT_ALERT_SECRETS_PATH)"
            raise AlertConfigError(f"AI_QUANT_ALERT_TARGETS needs {SECRET_FILE_KEYS[key]}{where}")
        return value.strip()

    def where(self, key: str) -> str:
        if _raw(self._env, SECRET_FILE_KEYS[key]) is not None or self._path is None:
            return SECRET_FILE_KEYS[key]
        return f"{self._path} ({key})"


def read_secrets_file(path: Path) -> dict[str, str]:
    """Open without following links, refuse group/other bits (the trading key's rule, live/secrets.py)."""
    raw = read_private_file(path, MAX_SECRET_FILE_BYTES, "alert secrets", "AI_QUANT_ALERT_SECRETS_PATH",
                            AlertConfigError)
    return _parse_secrets(path, raw)


def _parse_secrets(path: Path, raw: bytes) -> dict[str, str]:
    try:
        data = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_SECRET_FILE_BYTES else None
    except (UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict):
        raise AlertConfigError(f"{path}: must be a JSON object with any of {', '.join(SECRET_FILE_KEYS)} "
                               f"(AI_QUANT_ALERT_SECRETS_PATH)")
    for key, value in data.items():
        if key not in SECRET_FILE_KEYS:
            raise AlertConfigError(f"{path}: unknown field {str(key)[:40]!r} (expected {', '.join(SECRET_FILE_KEYS)})")
        if not isinstance(value, str):
            raise AlertConfigError(f"{path}: field {key} must be a string")
    return dict(data)


def check_url(url: str, where: str) -> str:
    """https only, except loopback (tests, a local relay); returns host[:port] for display."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise AlertConfigError(f"{where}: not a valid URL") from None
    if not host or any(ch.isspace() for ch in url):
        raise AlertConfigError(f"{where}: not a valid URL")
    shown = f"{host}:{port}" if port else host
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host)):
        return shown
    raise AlertConfigError(f"{where}: URL must be https (http only for 127.0.0.1, localhost or ::1), "
                           f"got {parts.scheme or '?'}://{shown}")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------------
# messages


@dataclass(frozen=True)
class Alert:
    kind: str
    severity: str
    title: str
    text: str
    ts_ms: int
    label: str = ""

    @property
    def ts_iso(self) -> str:
        return datetime.fromtimestamp(self.ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
            f"{self.ts_ms % 1000:03d}Z"

    def message(self) -> str:
        """The chat text: `[label] icon Title` then the details."""
        prefix = f"[{self.label}] " if self.label else ""
        head = f"{prefix}{ICONS.get(self.severity, '')} {self.title}".strip()
        return f"{head}\n{self.text}" if self.text else head


def make_alert(kind: str, text: str, severity: str | None = None, label: str = "",
               ts_ms: int | None = None) -> Alert:
    """Normalise caller input (unknown kind: its own title; unknown severity: warning)."""
    kind = str(kind).strip()[:40] or "alert"
    sev = severity if severity in SEVERITIES else DEFAULT_SEVERITY.get(kind, "warning")
    title = TITLES.get(kind) or kind.replace("_", " ").capitalize()
    return Alert(kind, sev, title, str(text), int(time.time() * 1000) if ts_ms is None else ts_ms, label)


def cap_text(text: str, limit: int) -> str:
    """Cut to `limit` UTF-16 units (how Telegram and Discord count), ending with an ellipsis."""
    if len(text) * 2 <= limit or _u16(text) <= limit:
        return text
    out, used = [], 1                              # 1 unit kept for the ellipsis
    for ch in text:
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > limit:
            break
        out.append(ch)
    return "".join(out) + "…"


def _u16(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


# --------------------------------------------------------------------------------------------------
# redaction


class Redactor:
    """Replaces every known secret substring; longest first so a URL goes before its path."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        merged = set(self._secrets) | {s for s in secrets if s}
        self._secrets = sorted(merged, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


class _RedactingFilter(logging.Filter):
    """urllib3 logs `POST /bot<token>/sendMessage` at DEBUG; rewrite such records before any handler."""

    def __init__(self) -> None:
        super().__init__()
        self.redact = Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:
            return True
        clean = self.redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


_URLLIB3_FILTER = _RedactingFilter()
_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry", "urllib3.response")


def _guard_library_logs(secrets: Iterable[str]) -> None:
    _URLLIB3_FILTER.redact.add(secrets)
    for name in _URLLIB3_LOGGERS:
        lg = logging.getLogger(name)
        if _URLLIB3_FILTER not in lg.filters:
            lg.addFilter(_URLLIB3_FILTER)


class _Log:
    """Accepts a logger-like object (.info/.warning) or one callable; redacts; never raises."""

    def __init__(self, log: Any, redact: Redactor) -> None:
        if log is None:
            log = _log
        if hasattr(log, "info") and hasattr(log, "warning"):
            self._info, self._warning = log.info, log.warning
        else:
            self._info = self._warning = log
        self._redact = redact

    def info(self, msg: str) -> None:
        self._emit(self._info, msg)

    def warning(self, msg: str) -> None:
        self._emit(self._warning, msg)

    def _emit(self, fn: Callable[[str], Any], msg: str) -> None:
        try:
            fn(self._redact(msg))
        except Exception:  # a logging failure must never take the alert worker (or the trader) down
            pass


# --------------------------------------------------------------------------------------------------
# delivery


@dataclass(frozen=True)
class Outcome:
    """The result of one alert to one target (the CLI prints it; `detail` holds no secret)."""

    target: str
    ok: bool
    attempts: int
    detail: str


def post_once(session: requests.Session, target: AlertTarget, alert: Alert,
              timeout_s: float) -> tuple[bool, bool, str, float | None]:
    """One HTTP attempt: (ok, retryable, detail, retry_after_s). Never includes the exception text."""
    try:
        with session.post(target.url, json=target.payload(alert), timeout=(timeout_s, timeout_s),
                          allow_redirects=False) as resp:
            code = resp.status_code
            if 200 <= code < 300:
                return True, False, f"HTTP {code}", None
            retryable = code in (408, 429) or code >= 500
            return False, retryable, f"HTTP {code}{_reason(resp)}", _retry_after(resp)
    except requests.Timeout:
        return False, True, f"timed out after {timeout_s:g}s", None
    except requests.ConnectionError:
        return False, True, "connection failed", None
    except requests.RequestException as exc:
        return False, False, type(exc).__name__, None


def _reason(resp: requests.Response) -> str:
    """Telegram/Discord explain a refusal in JSON (`description` / `message`); keep one short line."""
    try:
        body = resp.json()
        text = str(body.get("description") or body.get("message") or "") if isinstance(body, dict) else ""
    except ValueError:
        text = resp.text[:200] if resp.headers.get("content-type", "").startswith("text/") else ""
    text = " ".join(text.split())[:160]
    return f": {text}" if text else ""


def _retry_after(resp: requests.Response) -> float | None:
    if resp.status_code != 429:
        return None
    candidates: list[Any] = [resp.headers.get("Retry-After")]
    try:
        body = resp.json()
        if isinstance(body, dict):
            candidates += [(body.get("parameters") or {}).get("retry_after"), body.get("retry_after")]
    except (ValueError, AttributeError):
        pass
    for value in candidates:
        try:
            return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
        except (TypeError, ValueError):
            continue
    return None


def deliver(session: requests.Session, target: AlertTarget, alert: Alert, settings: AlertSettings, *,
            wait: Callable[[float], bool] = lambda s: (time.sleep(s), True)[1],
            time_left: Callable[[], float | None] = lambda: None,
            on_retry: Callable[[str], None] = lambda msg: None) -> Outcome:
    """Post with retries and exponential backoff; `wait` returning False or `time_left` <= 0 gives up.

    Why the hooks: during shutdown the worker must stop within `close()`'s budget, so every timeout and
    backoff is clipped to the time left.
    """
    attempts, detail = 0, ""
    for attempt in range(settings.retries + 1):
        left = time_left()
        if left is not None and left <= 0:
            return Outcome(target.name, False, attempts, detail or "shutting down")
        timeout = settings.send_timeout_s if left is None else max(0.05, min(settings.send_timeout_s, left))
        ok, retryable, detail, retry_after = post_once(session, target, alert, timeout)
        attempts += 1
        if ok or not retryable or attempt == settings.retries:
            return Outcome(target.name, ok, attempts, detail)
        delay = retry_after if retry_after is not None else min(MAX_BACKOFF_S, settings.backoff_s * 2 ** attempt)
        left = time_left()
        if left is not None and left < delay:
            return Outcome(target.name, False, attempts, f"{detail} (no time left to retry)")
        on_retry(f"alert {alert.kind} to {target.name}: attempt {attempts} failed ({detail}); "
                 f"retrying in {delay:g}s")
        if not wait(delay):
            return Outcome(target.name, False, attempts, f"{detail} (stopped)")
    return Outcome(target.name, False, attempts, detail)


class _Lane:
    """One target: a bounded FIFO and the worker thread that drains it."""

    def __init__(self, target: AlertTarget, settings: AlertSettings, log: _Log) -> None:
        self.target, self.settings, self.log = target, settings, log
        self.sent = self.failed = self.dropped = 0
        self._items: deque[Alert] = deque()
        self._cv = threading.Condition()
        self._busy = False
        self._closing = False
        self._deadline = 0.0
        self._abort = threading.Event()
        self._last_drop_log = float("-inf")
        self._thread = threading.Thread(target=self._run, name=f"alerts-{target.channel}", daemon=True)
        self._thread.start()

    def offer(self, alert: Alert) -> bool:
        """Enqueue without waiting; a full queue (or a closing lane) drops and counts."""
        with self._cv:
            if not self._closing and len(self._items) < self.settings.queue_max:
                self._items.append(alert)
                self._cv.notify()
                return True
            self.dropped += 1
            log_drop = time.monotonic() - self._last_drop_log >= 60.0
            if log_drop:
                self._last_drop_log = time.monotonic()
        if log_drop:  # at most one line a minute, outside the lock
            self.log.warning(f"alert queue for {self.target.name} full ({self.settings.queue_max}) or closed: "
                             f"{alert.kind} dropped ({self.dropped} dropped so far)")
        return False

    def idle(self) -> bool:
        with self._cv:
            return not self._items and not self._busy

    def wait_idle(self, timeout_s: float) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: not self._items and not self._busy, timeout=timeout_s)

    def close(self, deadline: float) -> None:
        with self._cv:
            self._closing, self._deadline = True, deadline
            self._cv.notify_all()

    def join(self, deadline: float) -> bool:
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._abort.set()  # cut any backoff wait short; the thread is a daemon if a request still hangs
        return not self._thread.is_alive()

    def _next(self) -> Alert | None:
        with self._cv:
            self._busy = False
            self._cv.notify_all()
            while not self._items and not self._closing:
                self._cv.wait()
            if self._items and (not self._closing or time.monotonic() < self._deadline):
                self._busy = True
                return self._items.popleft()
            self.dropped += len(self._items)
            self._items.clear()
            return None

    def _run(self) -> None:
        session = requests.Session()
        try:
            while (alert := self._next()) is not None:
                self._handle(session, alert)
        finally:
            session.close()
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def _time_left(self) -> float | None:
        return self._deadline - time.monotonic() if self._closing else None

    def _handle(self, session: requests.Session, alert: Alert) -> None:
        if self.settings.dry_run:
            self.log.info(f"alert (dry run) to {self.target.name}: {alert.message()!r}")
            self._count(True)
            return
        try:
            out = deliver(session, self.target, alert, self.settings,
                          wait=lambda s: not self._abort.wait(s), time_left=self._time_left,
                          on_retry=self.log.info)
        except Exception as exc:  # a bug here must not kill the worker: count it and go on
            out = Outcome(self.target.name, False, 1, f"internal error {type(exc).__name__}")
        self._count(out.ok)
        if out.ok:
            self.log.info(f"alert {alert.kind} sent to {out.target} ({out.detail})")
        else:
            self.log.warning(f"alert {alert.kind} to {out.target} failed after {out.attempts} attempt(s): "
                             f"{out.detail}")

    def _count(self, ok: bool) -> None:
        with self._cv:
            if ok:
                self.sent += 1
            else:
                self.failed += 1


class Alerter:
    """Fire-and-forget alerts. `send()` never blocks and never raises; `close()` is bounded.

    Counters count deliveries, one per (alert, target): `sent` delivered (dry run included), `failed`
    given up after the retries, `dropped` never attempted (queue full, or still queued at close),
    `suppressed` alerts skipped by the dedupe cooldown (per alert, not per target).
    """

    def __init__(self, settings: AlertSettings, log: Any = None) -> None:
        self.settings = settings
        self.redact = Redactor(settings.secrets())
        self.log = _Log(log, self.redact)
        self.suppressed = 0
        self._recent: dict[str, float] = {}
        self._lock = threading.Lock()
        self._closed = False
        if settings.enabled:
            _guard_library_logs(settings.secrets())
        self._lanes = [_Lane(t, settings, self.log) for t in settings.targets] if settings.enabled else []

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, log: Any = None) -> Alerter:
        return cls(AlertSettings.from_env(env), log=log)

    @property
    def enabled(self) -> bool:
        return bool(self._lanes)

    @property
    def sent(self) -> int:
        return sum(lane.sent for lane in self._lanes)

    @property
    def failed(self) -> int:
        return sum(lane.failed for lane in self._lanes)

    @property
    def dropped(self) -> int:
        return sum(lane.dropped for lane in self._lanes)

    def counters(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped, "suppressed": self.suppressed}

    def send(self, kind: str, text: str, *, severity: str | None = None, dedupe_key: str | None = None,
             cooldown_s: float | None = None) -> bool:
        """Queue `kind` for every target; True if queued for at least one.

        severity: info | warning | critical (default: the kind's, see DEFAULT_SEVERITY; else warning).
        dedupe_key: an alert with the same key inside `cooldown_s` (default AI_QUANT_ALERT_COOLDOWN_S)
        is suppressed, e.g. dedupe_key="data_lag:BTC" sends data lag once per 10 minutes.
        """
        if not self._lanes or self._closed:
            return False
        try:
            if dedupe_key is not None and self._suppress(dedupe_key, cooldown_s):
                return False
            alert = make_alert(kind, text, severity, self.settings.label)
            return any([lane.offer(alert) for lane in self._lanes])
        except Exception:  # alerting must never raise into the trading loop
            return False

    def _suppress(self, key: str, cooldown_s: float | None) -> bool:
        window = self.settings.cooldown_s if cooldown_s is None else cooldown_s
        now = time.monotonic()
        with self._lock:
            last = self._recent.get(key)
            if last is not None and now - last < window:
                self.suppressed += 1
                return True
            self._recent[key] = now
            if len(self._recent) > 4096:  # bounded memory: forget keys outside any sane window
                self._recent = {k: t for k, t in self._recent.items() if now - t < window}
        return False

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queue is empty and no post is in flight (tests, short-lived tools)."""
        deadline = time.monotonic() + timeout_s
        return all(lane.wait_idle(max(0.0, deadline - time.monotonic())) for lane in self._lanes)

    def close(self, timeout_s: float = 2.0) -> bool:
        """Keep delivering for at most `timeout_s`, then stop; what is still queued counts as dropped.

        Returns True if every worker finished in time (a hung request leaves a daemon thread behind).
        """
        self._closed = True
        deadline = time.monotonic() + max(0.0, timeout_s)
        for lane in self._lanes:
            lane.close(deadline)
        return all([lane.join(deadline + 0.2) for lane in self._lanes])

    def __enter__(self) -> Alerter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def deliver_now(settings: AlertSettings, alert: Alert) -> list[Outcome]:
    """Post one alert to every target synchronously (the CLI's `test`); dry run posts nothing."""
    if settings.dry_run:
        return [Outcome(t.name, True, 0, "dry run: not posted") for t in settings.targets]
    _guard_library_logs(settings.secrets())
    with requests.Session() as session:
        return [deliver(session, t, alert, settings) for t in settings.targets]


# --------------------------------------------------------------------------------------------------
# CLI

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Check the alert wiring (AI_QUANT_ALERT_TARGETS; see docs/LIVE.md, Alerts).")


def _settings_or_exit() -> AlertSettings:
    try:
        settings = AlertSettings.from_env()
    except EnvError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not settings.enabled:
        typer.echo("error: alerts are off: set AI_QUANT_ALERT_TARGETS (and AI_QUANT_ALERT_ENABLED unset or 1)",
                   err=True)
        raise typer.Exit(1)
    return settings


@app.command()
def test(text: Annotated[str, typer.Option(help="Message body")] = "Alert wiring test: if you read this, "
         "the trader can reach you.") -> None:
    """Send one "test" alert to every target now; print each result; exit 1 if any failed."""
    settings = _settings_or_exit()
    redact = Redactor(settings.secrets())
    outcomes = deliver_now(settings, make_alert("test", text, "info", settings.label))
    width = max(len(o.target) for o in outcomes)
    for o in outcomes:
        status = "ok" if o.ok else "FAILED"
        typer.echo(redact(f"{o.target:<{width}}  {status:<6}  {o.detail} ({o.attempts} attempt(s))"))
    raise typer.Exit(0 if all(o.ok for o in outcomes) else 1)


@app.command()
def show() -> None:
    """Print the parsed alert settings (targets by host or chat id; never a token or URL path)."""
    settings = _settings_or_exit()
    typer.echo(settings.describe())


if __name__ == "__main__":
    app(prog_name="python -m live.alerts")
