"""Several users at once: the real page under concurrent browser sessions, then LangChain batch().

    python scripts/load_test.py [--index DIR] [--sessions 4] [--seconds 180] [--batch 8] [--json F]

1. ``streamlit run ui/app.py`` (the default model unless ``GUIDELINES_MODEL`` says otherwise) on a
   free localhost port; ``--sessions`` headless Chromium contexts (separate Streamlit sessions)
   each ask their own questions, one after the other, for ``--seconds`` after the warm-up (every
   session has had its first answer: model loaded, kernels compiled). Measured per question:
   time to first token (Enter → first streamed text on the page) and to the complete answer.
   Checked: every answer is complete (text, "Sources", the advisory notice, no error), no session
   shows another session's question or answer, the server's memory (RSS, sampled every 0.5 s)
   is flat after the warm-up.
2. ``RAGChain.batch()`` of ``--batch`` questions in this process: every answer complete (text,
   passages, notice) and for its own question; the first and last are asked again one at a time
   (greedy decoding) and must be the same text.

Prints the figures (and writes them as JSON with ``--json``); exits 1 when an answer check
fails, 3 when only the memory check fails (the peak RSS of the second half of the time after
warm-up more than 10 % above the first half's: ``half_peaks``).
The engine serialises forward passes (one process-wide lock), so sessions queue for the model:
the time to first token includes that wait.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from assistant.notice import ADVISORY_NOTICE  # noqa: E402
from ui.app import WAITING  # noqa: E402  (the caption shown until the first token)
from ui.server import ServerNotReady, wait_healthy  # noqa: E402
from ui.views import CLOSEST_TITLE  # noqa: E402

CLOSEST_TEXT = CLOSEST_TITLE.split("**")[1]  # a refusal's closest sources, as the page renders it

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SERVER_START_S = 180
ANSWER_TIMEOUT_S = 900  # the first answer loads the model and may compile the engine's kernels
POLL_S = 0.05
RSS_EVERY_S = 0.5
FLAT_GROWTH = 0.10  # the second half's peak RSS may exceed the first half's by this share
# General questions, one list per session (not taken from the dev or held-out questions).
QUESTIONS = [
    "Who should be screened for high blood pressure?",
    "How is a fever in a young child managed?",
    "When should antibiotics be given for a sore throat?",
    "What are the recommendations for influenza vaccination?",
    "How should type 2 diabetes be monitored?",
    "What is recommended for smoking cessation?",
    "How is asthma treated in adults?",
    "When is a colonoscopy recommended?",
    "What advice is given about physical activity?",
    "How is depression screened for in primary care?",
    "What are the signs of sepsis?",
    "How should chronic kidney disease be followed up?",
    "What is the advice on breastfeeding?",
    "How is osteoporosis prevented?",
    "What should be done after a head injury?",
    "How is obesity managed in children?",
]
# The page as the test reads it: each chat message's role and text.
MESSAGES_JS = """() => [...document.querySelectorAll('[data-testid=stChatMessage]')].map(m => ({
  role: m.querySelector('[data-testid=stChatMessageAvatarUser]') ? 'user' : 'assistant',
  text: m.innerText}))"""


# ---- the server -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "GUIDELINES_INDEX": str(index)}
    cmd = [sys.executable, "-m", "streamlit", "run", "ui/app.py", "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port),
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with log.open("w") as out:
        server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, SERVER_START_S)
    except ServerNotReady as e:
        server.kill()
        detail = f": {log.read_text()}" if e.returncode is not None else ""
        raise RuntimeError(f"{e}{detail}") from e
    return server, url


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


class RssSampler(threading.Thread):
    """The resident memory of process ``pid`` (MB) every ``RSS_EVERY_S``, with timestamps."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def read(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def run(self) -> None:
        while not self.stop.is_set():
            rss = self.read()
            if rss is not None:
                self.samples.append((time.monotonic(), rss))
            self.stop.wait(RSS_EVERY_S)

    def at(self, t: float) -> float:
        """The last sample taken at or before ``t``."""
        before = [rss for ts, rss in self.samples if ts <= t]
        return before[-1] if before else self.samples[0][1]


# ---- one browser session ------------------------------------------------------------------------
async def _set_controls(page, passages: int, max_tokens: int) -> None:
    from playwright.async_api import expect

    chat = page.get_by_test_id("stChatInputTextArea")  # enabled once index and model are loaded
    await expect(chat).to_be_enabled(timeout=ANSWER_TIMEOUT_S * 1000)
    slider = page.get_by_role("slider", name="Passages")
    await slider.focus()
    await slider.press("Home")
    for _ in range(passages - 1):
        await slider.press("ArrowRight")
    field = page.get_by_label("Max tokens", exact=True)
    await field.fill(str(max_tokens))
    await field.press("Enter")
    await page.wait_for_timeout(1500)  # the rerun that takes the new values


async def _ask(page, question: str) -> dict:
    """Ask one question; the times to first token and to the complete answer, and the answer."""
    from playwright.async_api import expect

    chat = page.get_by_test_id("stChatInputTextArea")
    await expect(chat).to_be_enabled(timeout=ANSWER_TIMEOUT_S * 1000)
    n_before = len(await page.evaluate(MESSAGES_JS))
    await chat.fill(question)
    t0 = time.monotonic()
    await chat.press("Enter")
    ttft = None
    while True:
        messages = await page.evaluate(MESSAGES_JS)
        now = time.monotonic()
        new = messages[n_before:]
        answer = new[1]["text"] if len(new) >= 2 and new[1]["role"] == "assistant" else ""
        if ttft is None and answer.replace(WAITING, "").strip():
            ttft = now - t0
        if ADVISORY_NOTICE in answer:
            break
        if now - t0 > ANSWER_TIMEOUT_S:
            return {"question": question, "ttft_s": ttft, "total_s": None, "answer": answer,
                    "problems": ["no complete answer in time"]}
        await asyncio.sleep(POLL_S)
    body = answer.split("Sources")[0].replace(ADVISORY_NOTICE, "").strip()
    problems = []
    if not body:
        problems.append("empty answer")
    if not any(s in answer for s in ("Sources", "nothing relevant", CLOSEST_TEXT)):
        problems.append("no sources")
    if "could not be completed" in answer or "stopped before" in answer:
        problems.append("error shown")
    if len(new) != 2 or new[0]["role"] != "user" or question not in new[0]["text"]:
        problems.append(f"the page shows {len(new)} new messages, not this question and answer")
    return {"question": question, "ttft_s": ttft, "total_s": time.monotonic() - t0,
            "refused": CLOSEST_TEXT in answer or "nothing relevant" in answer,
            "answer": body, "problems": problems}


async def run_session(browser, url: str, sid: int, questions: list[str], args, clock: dict,
                      warm: asyncio.Event, n_sessions: int) -> dict:
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(ANSWER_TIMEOUT_S * 1000)  # a loaded machine: be patient
    page = await context.new_page()
    await page.goto(url, timeout=ANSWER_TIMEOUT_S * 1000)
    await _set_controls(page, args.passages, args.max_tokens)
    results, i = [], 0
    try:
        while True:
            result = await _ask(page, questions[i % len(questions)])
            result.update(session=sid, finished=time.monotonic())
            results.append(result)
            i += 1
            if i == 1:
                clock["warm"] += 1
                if clock["warm"] == n_sessions:
                    clock["warm_at"] = time.monotonic()
                    warm.set()
                await warm.wait()
            if "warm_at" in clock and time.monotonic() - clock["warm_at"] >= args.seconds:
                break
        page_text = await page.inner_text("body")
        messages = await page.evaluate(MESSAGES_JS)
    finally:
        await context.close()
    return {"session": sid, "results": results, "page_text": page_text, "messages": messages}


async def run_sessions(url: str, args) -> tuple[list[dict], dict]:
    from playwright.async_api import async_playwright

    per_session = [args.questions[s::args.sessions] for s in range(args.sessions)]
    clock: dict = {"warm": 0}
    warm = asyncio.Event()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            return await asyncio.gather(*[
                run_session(browser, url, s, per_session[s], args, clock, warm, args.sessions)
                for s in range(args.sessions)
            ]), clock
        finally:
            await browser.close()


def leaks(sessions: list[dict]) -> list[str]:
    """Another session's question or answer on a session's page (answers compared whole)."""
    found = []
    for s in sessions:
        own = {r["question"] for r in s["results"]}
        own_answers = {r["answer"] for r in s["results"]}  # two refusals may read the same
        for other in sessions:
            if other is s:
                continue
            for r in other["results"]:
                if r["question"] not in own and r["question"] in s["page_text"]:
                    found.append(f"session {s['session']} shows session {other['session']}'s "
                                 f"question {r['question']!r}")
                if len(r["answer"]) > 40 and r["question"] not in own and (
                        r["answer"] not in own_answers) and r["answer"] in s["page_text"]:
                    found.append(f"session {s['session']} shows session {other['session']}'s "
                                 f"answer to {r['question']!r}")
        users = [m["text"] for m in s["messages"] if m["role"] == "user"]
        asked = [r["question"] for r in s["results"]]
        if len(users) != len(asked) or not all(q in u for q, u in zip(asked, users, strict=False)):
            found.append(f"session {s['session']}'s conversation is not its own questions")
    return found


# ---- LangChain batch() ------------------------------------------------------------------------
def run_batch(index: Path, n: int, args) -> dict:
    from assistant.chain import build_chain
    from assistant.config import Settings

    settings = replace(Settings.from_env(), index_dir=index, k=args.passages,
                       max_tokens=args.max_tokens, temperature=0.0)
    chain = build_chain(settings)
    questions = [args.questions[i % len(args.questions)] for i in range(n)]
    inputs = [{"question": q} for q in questions]
    t0 = time.monotonic()
    answers = chain.batch(inputs)
    seconds = time.monotonic() - t0
    problems, complete = [], 0
    for q, a in zip(questions, answers, strict=True):
        found = []
        if a.question != q:
            found.append(f"the answer to {q!r} is for {a.question!r}")
        if not a.text.strip():
            found.append(f"empty answer to {q!r}")
        if not a.refused and not a.passages:
            found.append(f"no passages for {q!r}")
        if a.notice != ADVISORY_NOTICE or ADVISORY_NOTICE not in a.full_text():
            found.append(f"no notice with {q!r}")
        complete += not found
        problems += found
    same = []
    for i in (0, n - 1):  # greedy: one at a time gives the same text as inside the batch
        alone = chain.invoke(inputs[i])
        same.append(alone.text == answers[i].text)
        if alone.text != answers[i].text:
            problems.append(f"{questions[i]!r}: batch and single answers differ")
    return {"questions": n, "seconds": round(seconds, 2), "complete": complete,
            "same_as_single": same, "problems": problems}


# ---- the report ---------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def rss_timeline(rss: RssSampler, warm_at: float, every_s: float = 10.0) -> list[list[float]]:
    """[seconds after warm-up, RSS MB] every ``every_s`` seconds: whether memory still grows
    at the end or settled, which one end-to-start ratio cannot say."""
    out: list[list[float]] = []
    for t, value in rss.samples:
        if t >= warm_at and (not out or t - warm_at >= out[-1][0] + every_s):
            out.append([round(t - warm_at, 1), round(value, 1)])
    return out


def half_peaks(rss: RssSampler, warm_at: float) -> tuple[float, float]:
    """The highest RSS in the first and in the second half of the time after warm-up.

    With several answers in flight, RSS swings by a hundred MB and more as KV caches and
    activations come and go, so two single samples (after warm-up, at the end) compare two
    random phases of that swing; a leak instead lifts the second half's peak above the first's.
    """
    after = [(t, v) for t, v in rss.samples if t >= warm_at] or rss.samples[-1:]
    middle = (after[0][0] + after[-1][0]) / 2
    first = [v for t, v in after if t <= middle]
    second = [v for t, v in after if t > middle] or first
    return max(first), max(second)


def summarise(sessions, clock, rss: RssSampler, batch: dict | None, args) -> dict:
    results = [r for s in sessions for r in s["results"]]
    after_warm = [r for r in results if r["finished"] > clock.get("warm_at", 0)]
    ttft = [r["ttft_s"] for r in after_warm if r["ttft_s"] is not None]
    total = [r["total_s"] for r in after_warm if r["total_s"] is not None]
    warm_rss = rss.at(clock.get("warm_at", time.monotonic()))
    end_rss = rss.samples[-1][1]
    problems = [f"session {r['session']}, {r['question']!r}: {p}" for r in results
                for p in r["problems"]]
    problems += leaks(sessions)
    first_max, second_max = half_peaks(rss, clock.get("warm_at", time.monotonic()))
    memory_flat = second_max <= first_max * (1 + FLAT_GROWTH)
    if batch:
        problems += [f"batch: {p}" for p in batch["problems"]]
    return {
        "sessions": args.sessions, "seconds_after_warmup": args.seconds,
        "passages": args.passages, "max_tokens": args.max_tokens,
        "answers": len(results), "answers_after_warmup": len(after_warm),
        "memory_flat": memory_flat,
        "refused_answers": sum(1 for r in results if r.get("refused")),
        "answers_per_session": [len(s["results"]) for s in sessions],
        "complete_answers": sum(not r["problems"] for r in results),
        "ttft_p50_s": _round(percentile(ttft, 50)), "ttft_p95_s": _round(percentile(ttft, 95)),
        "answer_p50_s": _round(percentile(total, 50)),
        "answer_p95_s": _round(percentile(total, 95)),
        "rss_after_warmup_mb": round(warm_rss, 1), "rss_end_mb": round(end_rss, 1),
        "rss_max_after_warmup_mb": round(max(
            (v for t, v in rss.samples if t >= clock.get("warm_at", 0)), default=end_rss), 1),
        "rss_first_half_max_mb": round(first_max, 1),
        "rss_second_half_max_mb": round(second_max, 1),
        "rss_timeline_mb": rss_timeline(rss, clock.get("warm_at", time.monotonic())),
        "batch": batch, "problems": problems, "ok": not problems and memory_flat,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=Path, default=None, help="index folder (default: the page's)")
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--seconds", type=float, default=180, help="asking time after the warm-up")
    p.add_argument("--batch", type=int, default=8, help="questions in one batch() (0: skip)")
    p.add_argument("--passages", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--log", type=Path, default=Path("load_test.streamlit.log"))
    p.add_argument("--questions", type=Path, default=None,
                   help="a text file, one question a line (default: a built-in list of 16)")
    args = p.parse_args(argv)
    if args.questions is None:
        args.questions = QUESTIONS
    else:
        args.questions = [q.strip() for q in args.questions.read_text(encoding="utf-8").splitlines()
                          if q.strip()]
        if len(args.questions) < args.sessions:
            p.error(f"{len(args.questions)} questions for {args.sessions} sessions")
    from assistant.config import Settings

    index = (args.index or Settings.from_env().index).resolve()
    server, url = start_server(index, args.log)
    rss = RssSampler(server.pid)
    rss.start()
    try:
        sessions, clock = asyncio.run(run_sessions(url, args))
    finally:
        rss.stop.set()
        rss.join()
        stop_server(server)
    report = summarise(sessions, clock, rss, None, args)  # the page's figures, kept at once
    print(json.dumps({k: v for k, v in report.items() if k != "batch"}, indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.batch:
        batch = run_batch(index, args.batch, args)
        report = summarise(sessions, clock, rss, batch, args)
        print("batch:", json.dumps(batch, indent=2), flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    # 1: an answer was incomplete, leaked or wrong; 3: answers fine, memory not flat
    return 0 if report["ok"] else (1 if report["problems"] else 3)


if __name__ == "__main__":
    sys.exit(main())
