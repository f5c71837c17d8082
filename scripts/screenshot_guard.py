"""A browser screenshot of the real page showing the number guard at work.

    python scripts/screenshot_guard.py --index DIR --question "..." [--model M] [--k 4]
        [--max-tokens 96] [--temperature T] [--out docs/screenshot-number-guard.png]
        [--chromium /usr/bin/chromium]

Starts ``streamlit run ui/app.py`` on the index with the model (SmolLM2 by default), asks the
question in headless Chromium (playwright), waits for the answer and its notice, checks that
the page flags a number ("(not in sources)" next to it, and the footer's count), then saves a
screenshot.  Exits 1 without a screenshot when the answer holds no flagged number (pick a
question whose answer does: ``python -m assistant eval --json`` lists
``unsupported_numbers`` per question).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assistant.answer import UNSUPPORTED_MARK  # noqa: E402
from assistant.config import FAST_MODEL  # noqa: E402
from assistant.notice import ADVISORY_NOTICE  # noqa: E402
from ui.server import ServerNotReady  # noqa: E402
from ui.server import wait_healthy as server_ready  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
TIMEOUT_S = 900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen) -> None:
    try:
        server_ready(url, server, 180)
    except ServerNotReady as e:
        raise SystemExit(str(e)) from e


def shoot(url: str, args: argparse.Namespace) -> int:
    from playwright import sync_api

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            chat = page.get_by_test_id("stChatInputTextArea")
            sync_api.expect(chat).to_be_enabled(timeout=TIMEOUT_S * 1000)
            slider = page.get_by_role("slider", name="Passages")
            slider.focus()
            slider.press("Home")
            for _ in range(args.k - 1):
                slider.press("ArrowRight")
            if args.temperature:
                temp = page.get_by_role("slider", name="Temperature")
                temp.focus()
                temp.press("Home")
                for _ in range(round(args.temperature / 0.05)):
                    temp.press("ArrowRight")
            field = page.get_by_label("Max tokens", exact=True)
            field.fill(str(args.max_tokens))
            field.press("Enter")
            page.wait_for_timeout(1500)
            chat.fill(args.question)
            chat.press("Enter")
            answer = page.get_by_test_id("stChatMessage").filter(has_text=ADVISORY_NOTICE)
            answer.wait_for(timeout=TIMEOUT_S * 1000)
            text = answer.inner_text()
            if UNSUPPORTED_MARK not in text or "not found in the sources" not in text:
                print(f"no flagged number in the answer:\n{text}", file=sys.stderr)
                return 1
            height = int(page.evaluate(
                "() => document.querySelector('[data-testid=stMainBlockContainer]')"
                ".scrollHeight"))
            page.set_viewport_size({"width": 1280, "height": min(max(height + 150, 800), 2600)})
            page.wait_for_timeout(800)
            out = ROOT / args.out
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
            print(f"wrote {out}")
            return 0
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="", help="the index folder (ui/app.py)")
    parser.add_argument("--question", required=True)
    parser.add_argument("--model", default=FAST_MODEL,
                        help=f"preset or GGUF path (default {FAST_MODEL}, as in docs/)")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="the page's Temperature slider (sampled with the page's seed)")
    parser.add_argument("--out", default="docs/screenshot-number-guard.png")
    parser.add_argument("--app", default="ui/app.py",
                        help="the page to serve (tests/ui/fake_app.py: the layout tests' fake "
                        "assistant, whose question 'flagged ...' gives a flagged number)")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "GUIDELINES_INDEX": args.index, "PYTHONPATH": str(ROOT)}
    env["GUIDELINES_MODEL"] = args.model
    cmd = [sys.executable, "-m", "streamlit", "run", args.app, "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port),
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
           "--client.toolbarMode", "minimal"]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, server)
            return shoot(url, args)
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    raise SystemExit(main())
