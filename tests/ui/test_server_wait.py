"""ui.server.wait_healthy: the one wait for a started page, used by the scripts and browser tests
(the real server's success path is exercised by tests/ui/test_ui_browser.py)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from ui.server import ServerNotReady, wait_healthy


def _closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_server_that_exits_is_reported_with_its_code() -> None:
    server = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    server.wait()
    with pytest.raises(ServerNotReady, match="exited with 3") as info:
        wait_healthy(_closed_url(), server, timeout_s=30)
    assert info.value.returncode == 3


def test_a_server_that_never_answers_times_out() -> None:
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(ServerNotReady, match="did not answer") as info:
            wait_healthy(_closed_url(), server, timeout_s=1.5)
        assert info.value.returncode is None
    finally:
        server.kill()
        server.wait()
