"""A real headless Chromium driven over the DevTools protocol, for the HTML pages' tests.

Why not selenium/playwright: both download a browser or a driver of their own at install time,
which CI cannot (only package registries are reachable). Debian's `chromium` plus a websocket is
all the DevTools protocol needs. The tests use `Page.open(url)`, read the console errors the page
produced (console.error, uncaught exceptions, failed resource loads), evaluate JS to check the DOM,
and write a PNG screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """The Chromium binary, or None (the caller skips, or fails on CI where it must be installed)."""
    override = os.environ.get("AIQ_CHROMIUM")
    if override:
        return override
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def require_chromium() -> str:
    """On CI (CI=true) a missing browser is a failure: .ci/run installs it. Elsewhere, a skip."""
    path = chromium_path()
    if path is None:
        message = "chromium not installed (apt-get install chromium; scripts/setup_env.sh does it with CI=true)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


class Browser:
    """One headless Chromium process; each `open` gets its own tab."""

    def __init__(self, binary: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="aiq-chromium-")
        args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}", "about:blank"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.port = self._wait_port()

    def _wait_port(self, timeout_s: float = 30.0) -> int:
        marker = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if marker.exists():
                lines = marker.read_text().split()
                if lines:
                    return int(lines[0])
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("chromium did not open its DevTools port")

    def open(self, url: str, width: int = 1280, height: int = 900) -> Page:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as resp:
            target = json.load(resp)
        page = Page(target["webSocketDebuggerUrl"], target["id"], self.port)
        page.resize(width, height)
        page.goto(url)
        return page

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """One tab: commands are synchronous; events are collected while waiting for replies."""

    def __init__(self, ws_url: str, target_id: str, port: int) -> None:
        import websocket  # websocket-client (dev extra)

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.target_id, self.port = target_id, port
        self.next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def _wait_event(self, name: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        if any(e["method"] == name for e in self.events):
            return
        self.ws.settimeout(max(0.1, timeout_s))
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == name:
                    return
        raise TimeoutError(f"no {name} within {timeout_s}s")

    def resize(self, width: int, height: int) -> None:
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=width < 600)

    def goto(self, url: str, timeout_s: float = 30.0) -> None:
        self.events.clear()
        self.send("Page.navigate", url=url)
        self._wait_event("Page.loadEventFired", timeout_s)

    def js(self, expression: str):
        """Evaluate `expression` in the page (promises awaited); returns its JSON value."""
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 10.0):
        """Poll `expression` until it is truthy (the page renders asynchronously)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still falsy after {timeout_s}s: {expression}")
            time.sleep(0.05)

    def console_errors(self) -> list[str]:
        """console.error/assert calls, uncaught exceptions and failed loads seen since the last goto."""
        self.js("0")  # drain events queued so far
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif e["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(p["entry"].get("text", "") + " " + p["entry"].get("url", ""))
        return out

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            metrics = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": metrics["width"], "height": min(metrics["height"], 8000),
                              "scale": 1}
        data = self.send("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/close/{self.target_id}", timeout=5).close()
        except OSError:
            pass


@pytest.fixture(scope="module")
def browser():
    """One Chromium for a test module (a launch costs ~1 s); skipped without one, off CI."""
    b = Browser(require_chromium())
    yield b
    b.close()


def shoot(page: Page, tmp_path: Path, name: str, full_page: bool = True) -> Path:
    """Screenshot under the test's tmp dir (screens/<name>.png); also copied to $AIQ_SCREENSHOT_DIR
    when set, so a person can look at them after a run."""
    path = page.screenshot(Path(tmp_path) / "screens" / f"{name}.png", full_page=full_page)
    extra = os.environ.get("AIQ_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path
