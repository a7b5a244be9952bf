"""A small driver of real headless Chromium over the DevTools protocol (CDP), for the page tests and ``bench.ui_load``.

:class:`Chromium` starts Debian's ``chromium`` with ``--remote-debugging-port=0`` and a throwaway profile, reads the
port it chose from ``DevToolsActivePort``, opens one page target and talks to it over its WebSocket (``websockets``'
synchronous client; it comes with ``uvicorn[standard]``). It offers what the tests need: navigate, evaluate
JavaScript (awaiting promises), wait for a condition, click and type through the DOM, screenshots, and the console
messages and uncaught exceptions the page produced. Nothing goes over the network but loopback.

What it leaves out: several tabs, input events at the OS level (clicks are ``element.click()`` in the page),
downloads, and any browser but Chromium.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
         "--disable-extensions", "--mute-audio", "--remote-allow-origins=*")


def find_chromium() -> str | None:
    """The Chromium binary on PATH (``chromium`` or ``chromium-browser``), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class CdpError(RuntimeError):
    """A DevTools command failed, or the page threw while evaluating."""


class Chromium:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, binary: str, width: int = 1400, height: int = 1000, timeout_s: float = 60.0):
        self.binary, self.width, self.height, self.timeout_s = binary, width, height, timeout_s
        self._ids = itertools.count(1)
        self.console: list[str] = []
        self.exceptions: list[str] = []
        self.dialogs: list[str] = []
        self._profile = tempfile.TemporaryDirectory(prefix="tandem-cdp-", ignore_cleanup_errors=True)
        self._proc: subprocess.Popen | None = None
        self._ws: Any = None

    def __enter__(self) -> Chromium:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        profile = Path(self._profile.name)
        self._proc = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={self.width},{self.height}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout_s
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._proc.poll() is not None:
                raise CdpError(f"chromium exited with {self._proc.returncode}: {self._proc.stderr.read()[-2000:]!r}")
            if time.monotonic() > deadline:
                raise CdpError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        if not pages:
            with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank",
                                                               method="PUT"), timeout=10) as r:
                pages = [json.load(r)]
        self._ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=10)
        for domain in ("Page", "Runtime"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1,
                  mobile=False)

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001 - the browser may already be gone
                pass
            self._ws = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._profile.cleanup()

    # ------------------------------------------------------------------ protocol

    def _event(self, msg: dict[str, Any]) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            self.exceptions.append(str(d.get("exception", {}).get("description") or d.get("text")))
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(str(params.get("message")))
            self.send("Page.handleJavaScriptDialog", accept=False)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one DevTools command and return its result (events that arrive meanwhile are recorded)."""
        mid = next(self._ids)
        self._ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError(f"{method}: no answer in {self.timeout_s:.0f}s")
            msg = json.loads(self._ws.recv(timeout=left))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise CdpError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    # ------------------------------------------------------------------ page

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        res = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise CdpError(f"page threw: {d.get('exception', {}).get('description') or d.get('text')}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float = 30.0, poll_s: float = 0.05) -> Any:
        """Poll ``expression`` until it is truthy; returns its value (raises after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                v = self.eval(expression)
            except CdpError:
                v = None  # mid-navigation
            if v:
                return v
            if time.monotonic() > deadline:
                raise CdpError(f"timed out waiting for {expression}")
            time.sleep(poll_s)

    def type_into(self, selector: str, text: str) -> None:
        self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.focus(); "
                  f"e.value = {json.dumps(text)}; e.dispatchEvent(new Event('input', {{bubbles: true}})); }})()")

    def click(self, selector: str) -> None:
        ok = self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false; "
                       f"e.click(); return true; }})()")
        if not ok:
            raise CdpError(f"nothing to click at {selector}")

    def screenshot(self, path: str | Path, full_page: bool = True, selector: str | None = None,
                   max_height: int | None = None) -> Path:
        """A PNG of the page: the whole document when ``full_page``, or the box of the element at ``selector``;
        at most ``max_height`` pixels tall."""
        params: dict[str, Any] = {"format": "png"}
        if selector is not None:
            box = self.eval(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                            f".getBoundingClientRect(); return [r.left + scrollX, r.top + scrollY, r.width, r.height]; }})()")
            h = box[3] if max_height is None else min(box[3], max_height)
            params["clip"] = {"x": box[0], "y": box[1], "width": box[2], "height": h, "scale": 1}
            params["captureBeyondViewport"] = True
        elif full_page:
            size = self.eval("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            h = size[1] if max_height is None else min(size[1], max_height)
            params["clip"] = {"x": 0, "y": 0, "width": max(size[0], self.width), "height": h, "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", **params)["data"]
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data))
        return out
