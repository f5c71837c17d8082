"""``python -m assistant eval`` end to end: a small real index, the real default model, two
answerable dev questions and one unanswerable one, the JSON written and read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.cli import main
from assistant.notice import ADVISORY_NOTICE
from tests.conftest import shared_path

# dev questions whose gold document is in the small index (tests/assistant/conftest.py)
QA_LINES = (11, 137)  # body lice, asthma (1-based lines of qa-dev.jsonl)
OFF_TOPIC = {"id": "u-test", "question": "What are the rules for castling in chess?"}

pytestmark = pytest.mark.slow


def test_eval_writes_the_summary_and_every_record(small_index: Path, default_model_path: Path,
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    lines = shared_path("data", "qa-dev.jsonl").read_text(encoding="utf-8").splitlines()
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(lines[n - 1] + "\n" for n in QA_LINES), encoding="utf-8")
    una = tmp_path / "unanswerable.jsonl"
    una.write_text(json.dumps(OFF_TOPIC) + "\n", encoding="utf-8")
    out = tmp_path / "eval.json"
    code = main(["eval", "--index", str(small_index), "--qa", str(qa), "--unanswerable",
                 str(una), "--model", str(default_model_path), "--k", "2", "--max-tokens", "24",
                 "--json", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "cited_gold_rate" in printed and "refusal_rate" in printed
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["notice"] == ADVISORY_NOTICE and data["settings"]["max_tokens"] == 24
    records = data["records"]
    assert [r["kind"] for r in records] == ["answerable", "answerable", "unanswerable"]
    assert all(r["error"] is None for r in records)
    off = records[2]
    assert off["refused"] and off["answer"].startswith("The indexed guidelines do not cover")
    for r in records[:2]:
        assert r["retrieved_gold"], r  # the gold guideline is among the passages
        assert not r["refused"] and r["answer"], r
        assert r["evidence"] and r["evidence_first_overlaps_gold"] is not None
        assert 0 < r["ttft_s"] <= r["total_s"]
        assert r["usage"]["completion_tokens"] <= 24
        assert isinstance(r["unsupported_numbers"], list)
    answerable = data["summary"]["all"]["answerable"]
    assert answerable["questions"] == 2 and answerable["false_refusal_rate"]["of"] == 2
    assert answerable["cited_rate"]["of"] == 2
    assert data["summary"]["all"]["unanswerable"]["refusal_rate"] == {"rate": 1.0, "n": 1,
                                                                      "of": 1}
    assert data["summary"]["all"]["answerable"]["ttft_s"]["p50"] > 0
