"""The eval's metrics and input checks on hand-made records (the real run:
test_eval_end_to_end.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.evaluate import (
    ANSWERABLE,
    UNANSWERABLE,
    EvalInputError,
    load_questions,
    percentile,
    sentence_support,
    summarise,
    summary_by_half,
    table,
)


def rec(kind: str, position: int, **kw) -> dict:
    base = {"kind": kind, "position": position, "half": "even" if position % 2 == 0 else "odd",
            "refused": False, "refusal": None, "cited": False, "cited_gold": False,
            "attributed_gold": False, "retrieved_gold": False, "sentences": 0,
            "sentences_supported": 0, "sentences_grounded": 0, "numbers": 0,
            "unsupported_numbers": [], "unsupported_terms": [],
            "evidence_first_overlaps_gold": None, "ttft_s": 1.0, "total_s": 2.0, "error": None}
    return {**base, **kw}


def test_sentence_support() -> None:
    passages = ["Adults aged 50 to 75 should be screened for colorectal cancer every year."]
    text = ("Adults aged 50 to 75 should be screened [1]. The moon is made of cheese and "
            "crackers. Yes.")
    assert sentence_support(text, passages) == (2, 1)  # "Yes." has too few content words
    assert sentence_support(text, []) == (2, 0)


def test_summary_counts_and_rates() -> None:
    records = [
        rec(ANSWERABLE, 0, cited=True, cited_gold=True, attributed_gold=True, sentences=4,
            sentences_supported=3, sentences_grounded=4, numbers=2,
            unsupported_numbers=["5 mg"], evidence_first_overlaps_gold=True, ttft_s=0.5),
        rec(ANSWERABLE, 1, cited=True, sentences=2, sentences_supported=0,
            evidence_first_overlaps_gold=False, ttft_s=1.5, total_s=4.0),
        rec(ANSWERABLE, 2, refused=True, refusal={"by": "retrieval"}),
        rec(UNANSWERABLE, 0, refused=True, refusal={"by": "retrieval"}),
        rec(UNANSWERABLE, 1, unsupported_terms=["cimeacillin"]),
    ]
    s = summarise([r for r in records if r["kind"] == ANSWERABLE])
    assert s["cited_rate"] == {"rate": 1.0, "n": 2, "of": 2}  # over the answered questions
    assert s["cited_gold_rate"]["n"] == 1 and s["supported_rate"] == {"rate": 0.5, "n": 3,
                                                                       "of": 6}
    assert s["false_refusal_rate"] == {"rate": 0.3333, "n": 1, "of": 3}
    assert s["evidence_gold_rate"] == {"rate": 0.5, "n": 1, "of": 2}
    assert s["numbers"] == 2 and s["numbers_unsupported"] == 1
    u = summarise([r for r in records if r["kind"] == UNANSWERABLE])
    assert u["refusal_rate"] == {"rate": 0.5, "n": 1, "of": 2} and u["terms_unsupported"] == 1
    halves = summary_by_half(records)
    assert halves["even"]["answerable"]["questions"] == 2
    assert halves["odd"]["unanswerable"]["refusal_rate"]["rate"] == 0.0
    shown = table(halves)
    assert "cited_gold_rate" in shown and "refusal_rate" in shown and "0.50 (1/2)" in shown
    assert table(halves, markdown=True).startswith("| metric | all | even | odd |")


def test_percentile() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0
    assert percentile([], 50) is None


def test_question_files_are_checked(tmp_path: Path) -> None:
    good = tmp_path / "qa.jsonl"
    good.write_text(json.dumps({"qid": "a", "question": "Q?", "doc_id": "d", "answer": "A."})
                    + "\n\n" + json.dumps({"question": "R?", "doc_id": "e", "answer": "B."})
                    + "\n")
    qs = load_questions(good, ANSWERABLE)
    assert [(q.qid, q.position, q.doc_id) for q in qs] == [("a", 0, "d"), ("qa:3", 1, "e")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Q?", "doc_id": "d"}) + "\n")
    with pytest.raises(EvalInputError, match=r"bad.jsonl, line 1: field 'answer'"):
        load_questions(bad, ANSWERABLE)
    assert load_questions(bad, UNANSWERABLE)[0].question == "Q?"
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "Q?"}\n{oops\n')
    with pytest.raises(EvalInputError, match="line 2: not valid JSON"):
        load_questions(broken, UNANSWERABLE)
    with pytest.raises(EvalInputError, match="cannot be read"):
        load_questions(tmp_path / "missing.jsonl", UNANSWERABLE)
