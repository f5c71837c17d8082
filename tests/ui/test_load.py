"""Several users at once, short: ``scripts/load_test.py`` with 4 headless Chromium sessions on the
real page (the default model, a small real index) for 20 s after the warm-up, then LangChain
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
    # Memory after warm-up is reported, not asserted: in the runs so far it was not flat (RSS grew
    # 926 -> 1,093 MB in 60 s, README "Reliability"), unexplained; the command exits 3 then.
    assert report["rss_after_warmup_mb"] > 0 and isinstance(report["memory_flat"], bool)
    batch = report["batch"]
    assert batch["questions"] == BATCH and batch["complete"] == BATCH
    assert batch["same_as_single"] == [True, True]
    print(f"\n{json.dumps({k: v for k, v in report.items() if k != 'batch'})}\nbatch: {batch}")
