"""Waiting for a ``streamlit run`` of the page to answer: the scripts and the browser tests that
start one (scripts/load_test.py, scripts/screenshot_guard.py, tests/ui/test_ui_browser.py)."""

from __future__ import annotations

import subprocess
import time
import urllib.request

HEALTH_PATH = "/_stcore/health"  # Streamlit's own readiness endpoint: "ok" once it serves


class ServerNotReady(RuntimeError):
    """The server exited (``returncode`` set) or did not answer within the time allowed."""

    def __init__(self, url: str, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.returncode = returncode


def wait_healthy(url: str, server: subprocess.Popen, timeout_s: float) -> None:
    """Return once ``url``'s health endpoint says "ok"; ``ServerNotReady`` if ``server`` exits
    first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ServerNotReady(url, f"streamlit exited with {server.returncode}",
                                 server.returncode)
        try:
            with urllib.request.urlopen(f"{url}{HEALTH_PATH}", timeout=2) as r:
                if r.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise ServerNotReady(url, f"streamlit did not answer on {url} within {timeout_s:g} s")
