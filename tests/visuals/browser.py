"""A headless Chromium driven over the DevTools protocol through a pipe (no WebSocket client,
no Selenium): open a page, run JavaScript in it, take a screenshot.

``--remote-debugging-pipe`` makes Chromium read commands from file descriptor 3 and write
replies to 4, each a JSON message ended by a NUL byte. Found as ``chromium`` (Debian) or
``chromium-browser`` / ``google-chrome`` on PATH, or ``$CHROMIUM``.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shlex
import shutil
import subprocess
import tempfile
import time
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    return next((path for path in map(shutil.which, NAMES) if path), None)


class Browser:
    """One headless browser with one page; use as a context manager."""

    def __init__(self, executable: str, width: int = 1600, height: int = 1100):
        self.width, self.height = width, height
        self.profile = tempfile.TemporaryDirectory(prefix="convtrain-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-dev-shm-usage", "--remote-debugging-pipe", "--hide-scrollbars",
                 f"--user-data-dir={self.profile.name}", f"--window-size={width},{height}",
                 "about:blank"]
        # the shell puts the pipe ends where Chromium expects them: 3 (commands), 4 (replies)
        command = (f"exec {shlex.quote(executable)} {' '.join(map(shlex.quote, flags))} "
                   f"3<&{to_browser_r} 4>&{from_browser_w}")
        self.process = subprocess.Popen(["bash", "-c", command],
                                        pass_fds=(to_browser_r, from_browser_w),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._buffer = b""
        self.session: str | None = None

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.profile.cleanup()

    def send(self, method: str, params: dict | None = None, *, session: bool = False,
             timeout: float = 30) -> dict:
        """Send one command and wait for its reply (events in between are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                    raise TimeoutError(f"chromium did not answer {method} in {timeout} s")
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise ConnectionError("chromium closed its DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def open(self, url: str) -> None:
        """Open ``url`` in a new page, which later calls act on."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1,
                   "mobile": False}, session=True)
        self.send("Page.enable", session=True)
        self.send("Page.navigate", {"url": url}, session=True)

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session=True,
                           timeout=timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(f"javascript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60, interval: float = 0.5) -> Any:
        """Evaluate ``expression`` until it is truthy; its value (TimeoutError after
        ``timeout`` seconds, with the last value)."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"the page never satisfied {expression[:80]!r}; last value {value!r}")

    def screenshot(self) -> bytes:
        """The page as PNG bytes."""
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"},
                                          session=True)["data"])


#: JavaScript helpers: every element of the page, shadow roots included (TensorBoard's
#: dashboards are web components)
DEEP_JS = """
function deepElements(root = document) {
  const out = [];
  const walk = node => {
    for (const el of node.querySelectorAll('*')) {
      out.push(el);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(root);
  return out;
}
function leafText(elements) {
  return elements.filter(el => el.childElementCount === 0
                              && !['STYLE', 'SCRIPT'].includes(el.tagName))
    .map(el => (el.textContent || '').trim()).filter(t => t).join('\\n');
}
function deepText() { return leafText(deepElements()); }
function deepTextOf(el) {
  return leafText([...deepElements(el), ...(el.shadowRoot ? deepElements(el.shadowRoot) : [])]);
}
function climb(el) { return el.parentElement || (el.getRootNode() && el.getRootNode().host); }
function imageStats(img) {
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let min = 255, max = 0;
  for (let i = 0; i < data.length; i += 4) {
    const v = (data[i] + data[i + 1] + data[i + 2]) / 3;
    if (v < min) min = v; if (v > max) max = v;
  }
  return {src: img.src, width: img.naturalWidth, height: img.naturalHeight,
          shownWidth: img.getBoundingClientRect().width, min, max};
}
"""
