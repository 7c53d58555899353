"""live/alerts.py against real HTTP receivers on 127.0.0.1 (http.server threads started here).

What must hold (issue 16, item 3): each channel gets the right payload exactly once; 5xx is retried
and delivered once; a dead receiver (closed port, or one that never answers) costs `send()` nothing
and `close()` is bounded; a full queue drops and counts; no secret in any log line, even on failure;
bad settings fail with one line naming the variable; a group/world-readable secrets file is refused.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from live import alerts
from live.alerts import Alerter, AlertSettings, cap_text, check_url, make_alert
from live.env import EnvError

REPO = Path(__file__).resolve().parents[1]
TOKEN = "987654321:AAFakeBotTokenSecret_abcdefXYZ"
DISCORD_SECRET = "discord-secret-token-0123456789"
HOOK_SECRET = "generic-hook-secret-path-42"
QS_SECRET = "qs-secret-value-777"
SECRETS = (TOKEN, TOKEN.partition(":")[2], DISCORD_SECRET, HOOK_SECRET, QS_SECRET)


class Receiver:
    """A tiny JSON receiver: records (path, body); answers from `script` (status list), then 200."""

    def __init__(self, script: list[int] | None = None, gate: threading.Event | None = None,
                 body: dict | None = None) -> None:
        self.requests: list[tuple[str, dict]] = []
        self.script = list(script or [])
        self.gate, self.body = gate, body
        self.got = threading.Event()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self):
        rx = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with rx._lock:
                    rx.requests.append((self.path, body))
                    status = rx.script.pop(0) if rx.script else 200
                rx.got.set()
                if rx.gate is not None:
                    rx.gate.wait(10)
                out = json.dumps(rx.body if rx.body is not None and status >= 400 else {"ok": status < 400})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out.encode())

            def log_message(self, *args) -> None:
                pass

        return Handler

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(**kw) -> Receiver:
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for rx in made:
        rx.close()


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def hanging_port():
    """Accepts TCP connections (kernel backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    yield sock.getsockname()[1]
    sock.close()


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def fast(**extra: str) -> dict[str, str]:
    env = {"AI_QUANT_ALERT_SEND_TIMEOUT_S": "1", "AI_QUANT_ALERT_BACKOFF_S": "0.01", "AI_QUANT_ALERT_RETRIES": "3"}
    env.update(extra)
    return env


def hook_url(rx: Receiver) -> str:
    return f"{rx.base}/hooks/{HOOK_SECRET}?key={QS_SECRET}"


def discord_url(rx: Receiver) -> str:
    return f"{rx.base}/api/webhooks/4242/{DISCORD_SECRET}"


def all_logs(caplog, capsys, lines: list[str]) -> str:
    out = capsys.readouterr()
    return "\n".join([r.getMessage() for r in caplog.records] + lines + [out.out, out.err])


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_each_channel_gets_each_event_once(receivers, caplog, capsys):
    tg, dc, wh = receivers(), receivers(), receivers()
    env = fast(AI_QUANT_ALERT_TARGETS="telegram:-1001234567890,discord,webhook",
               AI_QUANT_TELEGRAM_BOT_TOKEN=TOKEN, AI_QUANT_TELEGRAM_API_URL=tg.base,
               AI_QUANT_DISCORD_WEBHOOK_URL=discord_url(dc), AI_QUANT_ALERT_WEBHOOK_URL=hook_url(wh),
               AI_QUANT_ALERT_LABEL="paper-1")
    caplog.set_level(logging.DEBUG)
    lines: list[str] = []
    kinds = [k for k in alerts.TITLES if k != "test"]
    alerter = Alerter(AlertSettings.from_env(env), log=lines.append)
    for kind in kinds:
        assert alerter.send(kind, f"details of {kind}")
    assert alerter.flush(10)
    alerter.close(1)
    assert (alerter.sent, alerter.failed, alerter.dropped) == (3 * len(kinds), 0, 0)

    assert [p for p, _ in tg.requests] == [f"/bot{TOKEN}/sendMessage"] * len(kinds)
    for kind, (_, body) in zip(kinds, tg.requests, strict=True):
        assert set(body) == {"chat_id", "text"} and body["chat_id"] == "-1001234567890"
        assert body["text"].startswith("[paper-1] ") and alerts.TITLES[kind] in body["text"]
        assert body["text"].endswith(f"details of {kind}")
    assert [p for p, _ in dc.requests] == [f"/api/webhooks/4242/{DISCORD_SECRET}"] * len(kinds)
    assert [b["content"].splitlines()[1] for _, b in dc.requests] == [f"details of {k}" for k in kinds]
    assert all(b["allowed_mentions"] == {"parse": []} for _, b in dc.requests)
    assert [p for p, _ in wh.requests] == [f"/hooks/{HOOK_SECRET}?key={QS_SECRET}"] * len(kinds)
    for kind, (_, body) in zip(kinds, wh.requests, strict=True):
        assert set(body) == {"kind", "severity", "title", "text", "ts_ms", "ts_iso", "label"}
        assert (body["kind"], body["title"], body["label"]) == (kind, alerts.TITLES[kind], "paper-1")
        assert body["severity"] == alerts.DEFAULT_SEVERITY[kind] and body["ts_iso"].endswith("Z")
    assert any("POST" in r.getMessage() for r in caplog.records if r.name.startswith("urllib3"))
    assert_no_secret(all_logs(caplog, capsys, lines))


def test_500_then_200_is_retried_and_delivered_once(receivers):
    rx = receivers(script=[500, 503])
    lines: list[str] = []
    alerter = Alerter(AlertSettings.from_env(fast(AI_QUANT_ALERT_TARGETS="webhook",
                                                  AI_QUANT_ALERT_WEBHOOK_URL=hook_url(rx))), log=lines.append)
    alerter.send("kill", "close_only from the kill file", severity="critical")
    assert alerter.flush(5)
    alerter.close(1)
    assert len(rx.requests) == 3 and (alerter.sent, alerter.failed) == (1, 0)
    assert sum("retrying" in line for line in lines) == 2 and "HTTP 500" in lines[0]
    assert_no_secret("\n".join(lines))


def test_failures_never_log_the_secret(receivers, caplog, capsys):
    """A 401 whose body echoes the token, a refused port, retries exhausted: all logged, all redacted."""
    rx = receivers(script=[401, 500, 500], body={"ok": False, "description": f"Unauthorized: bot{TOKEN} rejected"})
    env = fast(AI_QUANT_ALERT_TARGETS=f"telegram:@ops_room,discord,webhook:http://127.0.0.1:{closed_port()}"
                                      f"/x/{HOOK_SECRET}",
               AI_QUANT_TELEGRAM_BOT_TOKEN=TOKEN, AI_QUANT_TELEGRAM_API_URL=rx.base,
               AI_QUANT_DISCORD_WEBHOOK_URL=discord_url(rx), AI_QUANT_ALERT_RETRIES="1")
    caplog.set_level(logging.DEBUG)
    alerter = Alerter(AlertSettings.from_env(env))          # default: the `live.alerts` logger
    alerter.send("order_rejected", "BTC OPEN LONG rejected: Insufficient margin")
    assert alerter.flush(5)
    alerter.close(1)
    assert (alerter.sent, alerter.failed) == (0, 3)
    text = all_logs(caplog, capsys, [])
    assert "HTTP 401: Unauthorized" in text and "connection failed" in text and alerts.REDACTED in text
    assert_no_secret(text)
    assert_no_secret(repr(alerter.settings) + alerter.settings.describe())


def test_dead_receivers_slow_nothing_and_close_is_bounded(hanging_port):
    env = fast(AI_QUANT_ALERT_TARGETS=f"discord:http://127.0.0.1:{hanging_port}/api/webhooks/1/{DISCORD_SECRET},"
                                      f"webhook:http://127.0.0.1:{closed_port()}/h/{HOOK_SECRET}",
               AI_QUANT_ALERT_SEND_TIMEOUT_S="0.5")
    lines: list[str] = []
    alerter = Alerter(AlertSettings.from_env(env), log=lines.append)
    t0 = time.perf_counter()
    for i in range(1000):
        alerter.send("data_lag", f"BTC last bar {i} s old")
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5, f"1000 sends took {elapsed:.3f}s"
    print(f"1000 sends: {elapsed * 1000:.1f} ms")
    t0 = time.perf_counter()
    alerter.close(0.3)
    assert time.perf_counter() - t0 < 1.0
    assert alerter.dropped >= 1000 - 201                     # the hanging lane: 200 queued + 1 in flight
    assert alerter.sent == 0 and alerter.sent + alerter.failed + alerter.dropped <= 2000
    assert any("full" in line for line in lines)
    assert_no_secret("\n".join(lines))
    assert alerter.send("kill", "after close") is False      # closed: refused, never raises


def test_queue_full_drops_and_counts(receivers):
    gate = threading.Event()
    rx = receivers(gate=gate)
    alerter = Alerter(AlertSettings.from_env(fast(AI_QUANT_ALERT_TARGETS=f"webhook:{hook_url(rx)}",
                                                  AI_QUANT_ALERT_QUEUE_MAX="5")), log=lambda m: None)
    assert alerter.send("start", "first")
    assert rx.got.wait(5)                                    # first alert is in flight, held by the gate
    results = [alerter.send("order_rejected", f"n={i}") for i in range(19)]
    assert results.count(True) == 5 and alerter.dropped == 14
    gate.set()
    assert alerter.flush(5)
    alerter.close(1)
    assert (alerter.sent, alerter.dropped, len(rx.requests)) == (6, 14, 6)


def test_dedupe_key_cooldown(receivers):
    rx = receivers()
    alerter = Alerter(AlertSettings.from_env(fast(AI_QUANT_ALERT_TARGETS=f"webhook:{hook_url(rx)}")),
                      log=lambda m: None)
    assert alerter.send("data_lag", "BTC 700 s behind", dedupe_key="data_lag:BTC")
    assert not alerter.send("data_lag", "BTC 760 s behind", dedupe_key="data_lag:BTC")
    assert alerter.send("data_lag", "ETH 700 s behind", dedupe_key="data_lag:ETH")
    assert alerter.send("data_lag", "BTC again", dedupe_key="x", cooldown_s=0)
    assert alerter.send("data_lag", "BTC again", dedupe_key="x", cooldown_s=0)
    assert alerter.flush(5)
    alerter.close(1)
    assert alerter.suppressed == 1 and len(rx.requests) == 4


def test_dry_run_logs_and_posts_nothing(receivers):
    rx = receivers()
    lines: list[str] = []
    alerter = Alerter(AlertSettings.from_env(fast(AI_QUANT_ALERT_TARGETS=f"webhook:{hook_url(rx)}",
                                                  AI_QUANT_ALERT_DRY_RUN="1")), log=lines.append)
    alerter.send("daily_summary", "equity 10123.45 USD")
    assert alerter.flush(5)
    alerter.close(1)
    assert rx.requests == [] and alerter.sent == 1
    assert any("(dry run)" in line and "equity 10123.45" in line for line in lines)
    assert_no_secret("\n".join(lines))


def test_disabled_without_targets_costs_nothing():
    alerter = Alerter(AlertSettings.from_env({}))
    assert not alerter.enabled and alerter.send("kill", "x") is False and alerter.close(0) is True
    off = AlertSettings.from_env({"AI_QUANT_ALERT_TARGETS": "telegram:1", "AI_QUANT_ALERT_ENABLED": "0"})
    assert not off.enabled and off.targets == ()


@pytest.mark.parametrize("env, var", [
    ({"AI_QUANT_ALERT_QUEUE_MAX": "lots"}, "AI_QUANT_ALERT_QUEUE_MAX"),
    ({"AI_QUANT_ALERT_SEND_TIMEOUT_S": "-1"}, "AI_QUANT_ALERT_SEND_TIMEOUT_S"),
    ({"AI_QUANT_ALERT_RETRIES": "99"}, "AI_QUANT_ALERT_RETRIES"),
    ({"AI_QUANT_ALERT_BACKOFF_S": "nan"}, "AI_QUANT_ALERT_BACKOFF_S"),
    ({"AI_QUANT_ALERT_COOLDOWN_S": "x"}, "AI_QUANT_ALERT_COOLDOWN_S"),
    ({"AI_QUANT_ALERT_ENABLED": "maybe"}, "AI_QUANT_ALERT_ENABLED"),
    ({"AI_QUANT_ALERT_DRY_RUN": "perhaps"}, "AI_QUANT_ALERT_DRY_RUN"),
    ({"AI_QUANT_ALERT_ENABLED": "1", "AI_QUANT_ALERT_TARGETS": ""}, "AI_QUANT_ALERT_TARGETS"),
    ({"AI_QUANT_ALERT_LABEL": "a\nb"}, "AI_QUANT_ALERT_LABEL"),
    ({"AI_QUANT_ALERT_TARGETS": "slack:#alerts"}, "AI_QUANT_ALERT_TARGETS"),
    ({"AI_QUANT_ALERT_TARGETS": "discord:#alerts"}, "AI_QUANT_ALERT_TARGETS"),
    ({"AI_QUANT_ALERT_TARGETS": "telegram:"}, "AI_QUANT_ALERT_TARGETS"),
    ({"AI_QUANT_ALERT_TARGETS": "telegram:12345"}, "AI_QUANT_TELEGRAM_BOT_TOKEN"),
    ({"AI_QUANT_ALERT_TARGETS": "telegram:12345", "AI_QUANT_TELEGRAM_BOT_TOKEN": f"x{DISCORD_SECRET}"},
     "AI_QUANT_TELEGRAM_BOT_TOKEN"),
    ({"AI_QUANT_ALERT_TARGETS": "telegram:12345", "AI_QUANT_TELEGRAM_BOT_TOKEN": TOKEN,
      "AI_QUANT_TELEGRAM_API_URL": "http://api.telegram.org"}, "AI_QUANT_TELEGRAM_API_URL"),
    ({"AI_QUANT_ALERT_TARGETS": "discord"}, "AI_QUANT_DISCORD_WEBHOOK_URL"),
    ({"AI_QUANT_ALERT_TARGETS": "discord",
      "AI_QUANT_DISCORD_WEBHOOK_URL": f"http://discord.com/api/webhooks/1/{DISCORD_SECRET}"},
     "AI_QUANT_DISCORD_WEBHOOK_URL"),
    ({"AI_QUANT_ALERT_TARGETS": f"webhook:http://10.0.0.5/{HOOK_SECRET}?k={QS_SECRET}"}, "AI_QUANT_ALERT_TARGETS"),
    ({"AI_QUANT_ALERT_TARGETS": "webhook", "AI_QUANT_ALERT_WEBHOOK_URL": f"ftp://host/{HOOK_SECRET}"},
     "AI_QUANT_ALERT_WEBHOOK_URL"),
])
def test_bad_env_is_one_line_naming_the_variable(env, var):
    with pytest.raises(EnvError) as info:
        AlertSettings.from_env(env)
    msg = str(info.value)
    assert var in msg and "\n" not in msg and isinstance(info.value, alerts.AlertConfigError)
    assert_no_secret(msg)


def _write_secrets(tmp_path: Path, mode: int, data: dict) -> Path:
    path = tmp_path / "alert-secrets.json"
    path.write_text(json.dumps(data))
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_group_or_world_readable_secrets_file_is_refused(tmp_path, mode):
    path = _write_secrets(tmp_path, mode, {"telegram_bot_token": TOKEN})
    with pytest.raises(EnvError) as info:
        AlertSettings.from_env({"AI_QUANT_ALERT_TARGETS": "telegram:12345", "AI_QUANT_ALERT_SECRETS_PATH": str(path)})
    msg = str(info.value)
    assert f"chmod 600 {path}" in msg and "\n" not in msg and "AI_QUANT_ALERT_SECRETS_PATH" in msg
    assert_no_secret(msg)


def test_secrets_file_600_is_used_and_env_wins(tmp_path, receivers):
    rx = receivers()
    path = _write_secrets(tmp_path, 0o600, {"telegram_bot_token": TOKEN, "webhook_url": hook_url(rx),
                                            "discord_webhook_url": "https://discord.com/api/webhooks/1/fromfile"})
    env = {"AI_QUANT_ALERT_TARGETS": "telegram:12345,webhook,discord", "AI_QUANT_ALERT_SECRETS_PATH": str(path),
           "AI_QUANT_DISCORD_WEBHOOK_URL": f"https://discord.com/api/webhooks/2/{DISCORD_SECRET}"}
    settings = AlertSettings.from_env(env)
    urls = {t.channel: t.url for t in settings.targets}
    assert urls["telegram"] == f"https://api.telegram.org/bot{TOKEN}/sendMessage"
    assert urls["webhook"] == hook_url(rx) and urls["discord"].endswith(DISCORD_SECRET)
    assert_no_secret(repr(settings) + settings.describe())


@pytest.mark.parametrize("content, needle", [
    ({"telegram_bot_token": TOKEN, "secret_key": "00" * 32}, "unknown field 'secret_key'"),
    ({"telegram_bot_token": 5}, "telegram_bot_token must be a string"),
    (["not", "an", "object"], "must be a JSON object"),
])
def test_bad_secrets_file_contents(tmp_path, content, needle):
    path = _write_secrets(tmp_path, 0o600, content)  # type: ignore[arg-type]
    with pytest.raises(EnvError, match=needle):
        AlertSettings.from_env({"AI_QUANT_ALERT_TARGETS": "telegram:12345", "AI_QUANT_ALERT_SECRETS_PATH": str(path)})
    with pytest.raises(EnvError, match="not found"):
        AlertSettings.from_env({"AI_QUANT_ALERT_TARGETS": "discord",
                                "AI_QUANT_ALERT_SECRETS_PATH": str(tmp_path / "missing.json")})


@pytest.mark.parametrize("url, ok", [
    ("https://discord.com/api/webhooks/1/x", True), ("http://127.0.0.1:8080/h", True),
    ("http://127.9.9.9/h", True), ("http://localhost:9/h", True), ("http://[::1]:9/h", True),
    ("http://10.0.0.1/h", False), ("http://localhost.evil.com/h", False), ("https:///nohost", False),
])
def test_https_required_except_loopback(url, ok):
    if ok:
        check_url(url, "X")
    else:
        with pytest.raises(EnvError):
            check_url(url, "X")


def test_messages_capped_to_service_limits():
    alert = make_alert("daily_summary", "😀" * 5000 + "x" * 5000)
    tg = alerts.AlertTarget("telegram", "telegram:1", "https://t/botX/sendMessage", "1").payload(alert)["text"]
    dc = alerts.AlertTarget("discord", "discord:d", "https://d/w").payload(alert)["content"]
    assert alerts._u16(tg) <= 4096 and tg.endswith("…") and alerts._u16(dc) <= 2000
    assert cap_text("short", 10) == "short"
    assert make_alert("weird_kind", "t", severity="bogus").severity == "warning"
    assert make_alert("kill", "t").severity == "critical" and make_alert("weird_kind", "t").title == "Weird kind"


def test_cli_test_reports_each_target(receivers, monkeypatch):
    good, bad = receivers(), receivers(script=[400], body={"description": "Bad Request: chat not found"})
    env = fast(AI_QUANT_ALERT_TARGETS=f"webhook:{hook_url(good)},telegram:777",
               AI_QUANT_TELEGRAM_BOT_TOKEN=TOKEN, AI_QUANT_TELEGRAM_API_URL=bad.base)
    runner = CliRunner()
    result = runner.invoke(alerts.app, ["test"], env=env)
    assert result.exit_code == 1, result.output
    assert "ok" in result.output and "FAILED" in result.output and "chat not found" in result.output
    assert_no_secret(result.output)
    assert [b["kind"] for _, b in good.requests] == ["test"] and len(bad.requests) == 1
    result = runner.invoke(alerts.app, ["test"], env=fast(AI_QUANT_ALERT_TARGETS=f"webhook:{hook_url(good)}"))
    assert result.exit_code == 0 and len(good.requests) == 2
    result = runner.invoke(alerts.app, ["show"], env={"AI_QUANT_ALERT_TARGETS": "slack:x"})
    assert result.exit_code == 2 and "AI_QUANT_ALERT_TARGETS" in result.output


def test_cli_module_help():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_QUANT_ALERT")}
    out = subprocess.run([sys.executable, "-m", "live.alerts", "--help"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "test" in out.stdout and "show" in out.stdout
