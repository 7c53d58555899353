"""The monitor's HTTP server (stdlib ThreadingHTTPServer): GET only, read-only, small attack surface.

Security rules kept from the earlier monitor (spec/reference/runtime.md §7): an optional bearer
token on /api/* and /metrics compared in constant time, a per-IP token bucket (429), a cap on
concurrent requests (503), a cap on request bodies (413), no write endpoint at all (405), static
files served only from the package's static/ folder, and only 4xx/5xx requests logged (control
characters escaped). Without a token, API data carries file names, not filesystem paths.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from live.monitor import metrics
from live.monitor.redact import hide_paths, known_paths
from live.monitor.settings import MonitorSettings, resolve_mode
from live.monitor.snapshot import DeskReader

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
}

# The stdlib's own escape table (http.server, Python >= 3.11.1); the same table for older patch releases.
LOG_ESCAPES: dict[int, str] = getattr(BaseHTTPRequestHandler, "_control_char_table", None) or {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}, ord("\\"): "\\\\"}


class RateLimiter:
    """Per-IP token bucket; the table is capped (oldest IP evicted) so a scan cannot eat memory."""

    def __init__(self, rate_per_s: float, burst: float, max_ips: int) -> None:
        self.rate, self.burst, self.max_ips = rate_per_s, burst, max_ips
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, ip: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(ip, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[ip] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self.max_ips:
                self._buckets.pop(next(iter(self._buckets)))
            return allowed


class SnapshotCache:
    """Snapshots reused for `ttl_ms`, so a dozen open tabs cost one DB read per period per mode."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self._entries: dict[str, tuple[float, dict]] = {}
        self._locks = {mode: threading.Lock() for mode in settings.dbs}
        self._readers = {mode: DeskReader(mode, path, stale_after_s=settings.heartbeat_stale_s,
                                          candles_db=settings.candles_db)
                         for mode, path in settings.dbs.items()}

    def get(self, mode: str) -> dict[str, Any]:
        with self._locks[mode]:
            hit = self._entries.get(mode)
            if hit is not None and (time.monotonic() - hit[0]) * 1000.0 < self.settings.snapshot_cache_ms:
                return hit[1]
            snap = self._readers[mode].snapshot()
            self._entries[mode] = (time.monotonic(), snap)
            return snap


def json_safe(value: Any) -> Any:
    """NaN/Infinity are not JSON: browsers would reject the whole payload."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def health_summary(snap: dict[str, Any]) -> dict[str, Any]:
    hb = snap["heartbeat"]
    return {"db": snap["db"]["status"], "engine_up": snap["engine_up"], "engine_status": snap["engine_status"],
            "heartbeat": hb["status"],
            "heartbeat_age_s": hb["age_s"], "kill": snap["kill"]["mode"], "kill_level": snap["kill"]["level"],
            "open_pos": len(snap["open_positions"]), "config_id": hb["fields"].get("config_id")}


class MonitorHandler(BaseHTTPRequestHandler):
    server: MonitorServer
    server_version = "aiq-monitor"
    sys_version = ""
    timeout = 15  # a client that stalls mid-request frees its thread

    # ---------------------------------------------------------------- plumbing
    def _send(self, code: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, value in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, payload: Any, extra: dict[str, str] | None = None) -> None:
        body = json.dumps(json_safe(payload), allow_nan=False, default=str, separators=(",", ":")).encode()
        self._send(code, body, "application/json", extra)

    def _error(self, code: int, message: str, extra: dict[str, str] | None = None) -> None:
        self._json(code, {"error": message}, extra)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if isinstance(code, int) and code >= 400:
            self.log_message('"%s" %s', self.requestline.split(" HTTP/")[0], code)

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines are attacker-chosen, and this override replaces the stdlib one that escapes
        them: LOG_ESCAPES makes ESC, the other C0/C1 controls and DEL visible `\\xNN` text (and doubles
        the backslash, so a literal `\\x1b` typed by a client cannot pass for an escaped one); a raw
        `ESC[31m` would otherwise recolour or rewrite the operator's terminal and journal."""
        message = (format % args).translate(LOG_ESCAPES)
        print(f"monitor: {self.address_string()} {message}", file=self.server.log_stream, flush=True)

    def _guarded(self, route) -> None:
        if not self.server.active.acquire(blocking=False):
            self._error(503, "too many active requests")
            return
        try:
            length = self.headers.get("Content-Length")
            if length is not None and (not length.isdigit() or int(length) > self.server.settings.max_body_bytes):
                self.close_connection = True
                self._error(413, "request body too large")
                return
            route()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # the desk reports, it never dies on a request
            self.log_message("internal error on %s: %r", self.path, exc)
            self._error(500, "internal error (see the monitor's log)")
        finally:
            self.server.active.release()

    # ---------------------------------------------------------------- verbs
    def do_GET(self) -> None:
        self._guarded(self._route_get)

    def do_HEAD(self) -> None:
        self._guarded(self._route_get)

    def _no_writes(self) -> None:
        self._guarded(lambda: self._error(405, "the monitor is read-only", {"Allow": "GET, HEAD"}))

    do_POST = do_PUT = do_PATCH = do_DELETE = _no_writes

    # ---------------------------------------------------------------- routes
    def _route_get(self) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        if path == "/health":
            self._json(200, {"ok": True, "service": "aiq-monitor", "modes": list(self.server.settings.dbs)})
        elif path in ("/", "/index.html"):
            self._static("index.html")
        elif path.startswith("/static/"):
            self._static(path.removeprefix("/static/"))
        elif path.startswith("/api/") or path == "/metrics":
            if self._admitted():
                self._api(path, query)
        else:
            self._error(404, f"no such path {path}")

    def _admitted(self) -> bool:
        """Rate limit first (so token guessing is throttled too), then the bearer token."""
        if not self.server.limiter.allow(self.client_address[0]):
            self._error(429, "rate limit exceeded", {"Retry-After": "1"})
            return False
        token = self.server.settings.token
        if token is None:
            return True
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True
        self._error(401, "bearer token required", {"WWW-Authenticate": 'Bearer realm="aiq-monitor"'})
        return False

    def _modes(self, query: dict[str, list[str]], default_all: bool) -> list[str] | None:
        raw = (query.get("mode") or [None])[0]
        if raw is None and default_all:
            return list(self.server.settings.dbs)
        try:
            return [resolve_mode(self.server.settings, raw)]
        except ValueError as exc:
            self._error(400, str(exc))
            return None

    def _data(self, code: int, payload: Any) -> None:
        """API data: filesystem paths are cut to file names unless a token is set (and, since
        _admitted let this request through, was given): see live/monitor/redact.py."""
        if self.server.settings.token is None:
            payload = hide_paths(payload, self.server.known_paths)
        self._json(code, payload)

    def _api(self, path: str, query: dict[str, list[str]]) -> None:
        cache = self.server.cache
        if path == "/api/snapshot":
            modes = self._modes(query, default_all=False)
            if modes:
                self._data(200, cache.get(modes[0]))
        elif path == "/api/health":
            modes = self._modes(query, default_all=True)
            if modes:
                self._data(200, {"modes": {m: health_summary(cache.get(m)) for m in modes}})
        elif path == "/api/metrics":
            modes = self._modes(query, default_all=True)
            if modes:
                snaps = [cache.get(m) for m in modes]
                self._data(200, {s["mode"]: {name: metrics.gauge_value(getter, s)
                                             for name, _, getter in metrics.JSON_GAUGES} for s in snaps})
        elif path == "/metrics":
            modes = self._modes(query, default_all=True)
            if modes:
                tallies = self.server.tallies
                body = metrics.exposition(lambda: [metrics.ModeReading(cache.get(m), tallies[m].read()) for m in modes])
                self._send(200, body, metrics.CONTENT_TYPE)
        else:
            self._error(404, f"no such path {path}")

    def _static(self, relative: str) -> None:
        root = STATIC_DIR.resolve()
        target = (root / relative).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            self._error(404, "no such file")
            return
        ctype = CONTENT_TYPES.get(target.suffix, "application/octet-stream")
        self._send(200, target.read_bytes(), ctype)


class MonitorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, settings: MonitorSettings, log_stream: TextIO = sys.stderr) -> None:
        self.request_queue_size = settings.request_queue_size
        if ":" in settings.bind:
            self.address_family = socket.AF_INET6
        self.settings = settings
        self.log_stream = log_stream
        self.limiter = RateLimiter(settings.rate_rps, settings.rate_burst, settings.rate_max_ips)
        self.active = threading.BoundedSemaphore(settings.max_active_requests)
        self.cache = SnapshotCache(settings)
        self.tallies = {mode: metrics.DbTally(path) for mode, path in settings.dbs.items()}  # /metrics counters
        self.known_paths = known_paths([*settings.dbs.values(), *([settings.candles_db] if settings.candles_db else [])])
        super().__init__((settings.bind.strip("[]"), settings.port), MonitorHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(settings: MonitorSettings, out: TextIO = sys.stderr) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code. Raises OSError when the port is taken."""
    os.umask(0o077)  # the -wal/-shm files SQLite may create beside a watched DB stay private
    server = MonitorServer(settings, log_stream=out)
    stop = threading.Event()

    def _on_signal(signum, frame) -> None:
        if not stop.is_set():
            stop.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    dbs = ", ".join(f"{m}={p}" for m, p in settings.dbs.items())
    print(f"monitor: serving {server.url} (read-only; {dbs}; token {'on' if settings.token else 'off'})",
          file=out, flush=True)
    try:
        server.serve_forever(poll_interval=0.25)
    finally:
        server.server_close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    print("monitor: stopped", file=out, flush=True)
    return 0


def run_monitor(bind: str | None = None, port: int | None = None, environ: dict[str, str] | None = None,
                out: TextIO = sys.stderr) -> int:
    """`trader monitor`: settings -> bind policy -> serve; a user mistake is one line and exit 2."""
    from live.env import EnvError
    from live.monitor.settings import bind_policy, load_monitor_settings

    try:
        settings = load_monitor_settings(environ, bind=bind, port=port)
        warning = bind_policy(settings)
    except EnvError as exc:
        print(f"error: {exc}", file=out, flush=True)
        return 2
    if warning:
        print(warning, file=out, flush=True)
    try:
        return serve(settings, out)
    except OSError as exc:
        print(f"error: cannot listen on {settings.bind}:{settings.port}: {exc.strerror or exc}", file=out,
              flush=True)
        return 1
