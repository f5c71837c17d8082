"""Several users at once, short: ``scripts/load_test.py`` with 4 headless Chromium sessions on the
real page (the tests' model, SmolLM2, a small real index) for 20 s after the warm-up, then LangChain
``batch()`` of 8 questions. The long run is the command itself (README, "Reliability")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SESSIONS, SECONDS, BATCH = 4, 20, 8
LOAD_QUESTIONS = [  # the small index (tests/ui/ui_test_data.py) covers all but the last
    "Who should be screened for lung cancer?",
    "How is chickenpox prevented with a vaccine?",
    "Who should be screened for gestational diabetes?",
    "What are the symptoms of Eastern equine encephalitis?",
    "How is bronchitis treated?",
    "What is the recommended screening test for lung cancer?",
    "Who should not get the varicella vaccine?",
    "What is the acute treatment for a migraine attack?",
]


@pytest.mark.slow
@pytest.mark.browser
def test_four_sessions_and_a_batch_of_eight(tmp_path, small_index, default_model_path):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    pytest.importorskip("playwright.async_api", reason="playwright is in the test extra")
    report_path = tmp_path / "load.json"
    questions = tmp_path / "questions.txt"  # what the small index can answer, and one it cannot
    questions.write_text("\n".join(LOAD_QUESTIONS) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "GUIDELINES_HOME"}
    done = subprocess.run(
        [sys.executable, "scripts/load_test.py", "--index", str(small_index), "--sessions",
         str(SESSIONS), "--seconds", str(SECONDS), "--batch", str(BATCH), "--max-tokens", "16",
         "--json", str(report_path), "--log", str(tmp_path / "streamlit.log"),
         "--questions", str(questions)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert report_path.exists(), done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["problems"] == [] and done.returncode in (0, 3), report["problems"]
    # every session asked at least twice (one warm-up answer, then under load), all complete
    assert len(report["answers_per_session"]) == SESSIONS
    assert min(report["answers_per_session"]) >= 2
    assert report["complete_answers"] == report["answers"]
    assert report["refused_answers"] < report["answers"]  # most are answered, not refused
    assert 0 < report["ttft_p50_s"] <= report["ttft_p95_s"]
    # Memory is reported, not asserted, on this 20-s run: its halves are a few answers each, and
    # RSS swings by a hundred MB with the answers in flight. The 180-s run is in the README.
    assert report["rss_after_warmup_mb"] > 0 and isinstance(report["memory_flat"], bool)
    assert report["rss_first_half_max_mb"] > 0 and report["rss_timeline_mb"]
    batch = report["batch"]
    assert batch["questions"] == BATCH and batch["complete"] == BATCH
    assert batch["same_as_single"] == [True, True]
    print(f"\n{json.dumps({k: v for k, v in report.items() if k != 'batch'})}\nbatch: {batch}")


def _load_test_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("load_test", ROOT / "scripts" / "load_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_memory_check_compares_the_halves_peaks() -> None:
    """Swings of the answers in flight are flat; a steady climb (a leak) is not."""
    load_test = _load_test_module()
    sampler = load_test.RssSampler(os.getpid())
    swings = [1000 + (150 if i % 7 < 3 else 0) for i in range(360)]  # a 0.5-s sample, 180 s
    sampler.samples = [(10 + i / 2, v) for i, v in enumerate(swings)]
    first, second = load_test.half_peaks(sampler, warm_at=10)
    assert (first, second) == (1150, 1150)
    sampler.samples = [(10 + i / 2, 1000 + i) for i in range(360)]  # +2 MB a second
    first, second = load_test.half_peaks(sampler, warm_at=10)
    assert second > first * (1 + load_test.FLAT_GROWTH)
    timeline = load_test.rss_timeline(sampler, warm_at=10, every_s=30)
    assert [t for t, _ in timeline] == [0, 30, 60, 90, 120, 150]
