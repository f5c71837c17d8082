"""``python -m assistant eval``: the answer-level evaluation (the counterpart of ``ingest eval``).

Each question of the dev files runs through the real chain (retrieval, refusal decision,
model, checks), and per question it records the answer, its citations and checks, and its
timings.  The summary, per file and per half (questions at even / odd 0-based positions of
their file: choices are made on the even half, the odd half is reported), holds:

``cited_rate``            answered questions with an ``[n]`` that resolves to a shown passage
``cited_gold_rate``       answered questions citing (``[n]``) a passage of the gold document
``attributed_gold_rate``  the same, counting passages matched by quoted text (kind ``matched``)
``supported_rate``        answer sentences supported by a passage the answer cites or quotes
``grounded_rate``         answer sentences supported by any shown passage
``numbers_unsupported``   quantities of the answers found in no shown passage (of ``numbers``)
``terms_unsupported``     drug-like words of the answers found in no shown passage
``evidence_gold_rate``    answered questions whose first evidence sentence overlaps the gold answer
``refusal_rate``          unanswerable questions refused (by retrieval or by the model)
``false_refusal_rate``    answerable questions refused
``ttft_s``, ``total_s``   p50 / p95 of the time to the first piece of text and to the end

*Support* (:func:`sentence_support`): an answer sentence with at least
:data:`MIN_CONTENT_WORDS` content words (stop words and citation markers left out) is
supported by a passage when :data:`SUPPORT_SHARE` of those words occur in the passage.
Word overlap, not meaning: a sentence that negates its passage still counts as supported.
Evidence overlaps the gold answer when the two share eight consecutive words (all the
sentence's words if it is shorter; :func:`assistant.checks.evidence.overlaps`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.answer import CITED, MATCHED, Answer, AnswerError
from assistant.checks.attribution import CITATION_MARKER, answer_sentences
from assistant.checks.evidence import content_words, overlaps
from assistant.notice import ADVISORY_NOTICE

MIN_CONTENT_WORDS = 3
SUPPORT_SHARE = 0.6
ANSWERABLE, UNANSWERABLE = "answerable", "unanswerable"
HALVES = ("all", "even", "odd")


class EvalInputError(ValueError):
    """A question file is missing, unreadable or has a bad line; the message names it."""

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        self.path, self.line = path, line
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class EvalQuestion:
    """One question of a dev file."""

    qid: str
    question: str
    kind: str  # ANSWERABLE or UNANSWERABLE
    position: int  # 0-based line position among the file's questions (its half: even / odd)
    doc_id: str | None = None
    gold: str | None = None  # the gold answer passage (answerable questions)


def load_questions(path: Path, kind: str) -> list[EvalQuestion]:
    """The questions of a JSONL file (``question`` always; ``doc_id`` and ``answer`` for
    answerable ones); a bad line raises :class:`EvalInputError` naming line and field."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise EvalInputError(path, f"cannot be read ({e})") from e
    required = ("question", "doc_id", "answer") if kind == ANSWERABLE else ("question",)
    out: list[EvalQuestion] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalInputError(path, f"not valid JSON ({e.msg})", n) from e
        if not isinstance(row, dict):
            raise EvalInputError(path, "expected a JSON object", n)
        for key in required:
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise EvalInputError(path, f"field {key!r} is missing or not a non-empty string",
                                     n)
        qid = str(row.get("qid") or row.get("id") or f"{path.stem}:{n}")
        out.append(EvalQuestion(qid, row["question"], kind, len(out), row.get("doc_id"),
                                row.get("answer")))
    if not out:
        raise EvalInputError(path, "holds no questions")
    return out


def sentence_support(text: str, passages: Sequence[str]) -> tuple[int, int]:
    """(sentences counted, sentences supported by one of ``passages``) of an answer."""
    passage_words = [set(content_words(p)) for p in passages]
    counted = supported = 0
    for sentence in answer_sentences(text):
        words = content_words(CITATION_MARKER.sub(" ", sentence))
        if len(words) < MIN_CONTENT_WORDS:
            continue
        counted += 1
        need = SUPPORT_SHARE * len(words)
        if any(sum(w in pw for w in words) >= need for pw in passage_words):
            supported += 1
    return counted, supported


def record(q: EvalQuestion, answer: Answer, ttft_s: float, total_s: float) -> dict[str, Any]:
    """The per-question record of the JSON output."""
    texts = {p.number: p.text for p in answer.passages}
    cited = [c for c in answer.citations if c.kind == CITED]
    attributed = [c for c in answer.citations if c.kind in (CITED, MATCHED)]
    refused = answer.refused
    n_sent, n_sup = (0, 0) if refused else sentence_support(
        answer.text, [texts[c.number] for c in attributed if c.number in texts])
    _, n_grounded = (0, 0) if refused else sentence_support(answer.text, list(texts.values()))
    first = answer.evidence[0].text if answer.evidence else None
    return {
        "qid": q.qid, "kind": q.kind, "position": q.position,
        "half": "even" if q.position % 2 == 0 else "odd",
        "question": q.question, "doc_id": q.doc_id, "answer": answer.text,
        "refused": refused, "refusal": answer.refusal,
        "cited": bool(cited), "cited_gold": any(c.id == q.doc_id for c in cited),
        "attributed_gold": any(c.id == q.doc_id for c in attributed),
        "retrieved_gold": any(p.id == q.doc_id for p in answer.passages),
        "sentences": n_sent, "sentences_supported": n_sup, "sentences_grounded": n_grounded,
        "numbers": answer.n_numbers, "unsupported_numbers": answer.unsupported_numbers,
        "unsupported_terms": answer.unsupported_terms,
        "evidence": [e.to_dict() for e in answer.evidence],
        "evidence_first_overlaps_gold": (overlaps(first, q.gold) if first and q.gold else None),
        "citations": [{"number": c.number, "id": c.id, "kind": c.kind} for c in answer.citations],
        "unresolved_citations": answer.unresolved_citations,
        "passages": [{"number": p.number, "id": p.id, "chunk_id": p.chunk_id} for p in
                     answer.passages],
        "finish_reason": answer.finish_reason, "usage": answer.usage,
        "ttft_s": round(ttft_s, 4), "total_s": round(total_s, 4), "error": None,
    }


def run_question(chain: Any, q: EvalQuestion) -> dict[str, Any]:
    """Ask one question through ``chain.stream_answer``, timing the first piece and the end."""
    t0 = time.perf_counter()
    ttft = None
    try:
        stream = chain.stream_answer(q.question)
        for piece in stream:
            if ttft is None and piece:
                ttft = time.perf_counter() - t0
        answer = stream.answer
    except AnswerError as e:
        total = time.perf_counter() - t0
        return {"qid": q.qid, "kind": q.kind, "position": q.position,
                "half": "even" if q.position % 2 == 0 else "odd", "question": q.question,
                "error": e.message, "ttft_s": None, "total_s": round(total, 4)}
    total = time.perf_counter() - t0
    return record(q, answer, ttft if ttft is not None else total, total)


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (nearest rank) of ``values``; None when empty."""
    vals = sorted(values)
    if not vals:
        return None
    rank = max(1, math.ceil(p / 100 * len(vals)))
    return round(vals[rank - 1], 3)


def _rate(n: int, d: int) -> dict[str, Any]:
    return {"rate": round(n / d, 4) if d else None, "n": n, "of": d}


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary metrics of some records (one file's, one half's)."""
    ok = [r for r in records if not r.get("error")]
    ans = [r for r in ok if r["kind"] == ANSWERABLE]
    una = [r for r in ok if r["kind"] == UNANSWERABLE]
    answered = [r for r in ans if not r["refused"]]
    spoken = [r for r in ok if not r["refused"]]  # every answer the model wrote
    with_ev = [r for r in answered if r["evidence_first_overlaps_gold"] is not None]
    out: dict[str, Any] = {"questions": len(records), "errors": len(records) - len(ok)}
    if ans:
        out.update({
            "cited_rate": _rate(sum(r["cited"] for r in answered), len(answered)),
            "cited_gold_rate": _rate(sum(r["cited_gold"] for r in answered), len(answered)),
            "attributed_gold_rate": _rate(sum(r["attributed_gold"] for r in answered),
                                          len(answered)),
            "retrieved_gold_rate": _rate(sum(r["retrieved_gold"] for r in ans), len(ans)),
            "supported_rate": _rate(sum(r["sentences_supported"] for r in answered),
                                    sum(r["sentences"] for r in answered)),
            "grounded_rate": _rate(sum(r["sentences_grounded"] for r in answered),
                                   sum(r["sentences"] for r in answered)),
            "evidence_gold_rate": _rate(sum(r["evidence_first_overlaps_gold"] for r in with_ev),
                                        len(with_ev)),
            "false_refusal_rate": _rate(sum(r["refused"] for r in ans), len(ans)),
        })
    if una:
        out["refusal_rate"] = _rate(sum(r["refused"] for r in una), len(una))
        out["refused_by_retrieval"] = sum(bool(r["refused"] and (r["refusal"] or {}).get("by")
                                               == "retrieval") for r in una)
    out.update({
        "numbers": sum(r["numbers"] for r in spoken),
        "numbers_unsupported": sum(len(r["unsupported_numbers"]) for r in spoken),
        "answers_with_unsupported_numbers": sum(bool(r["unsupported_numbers"]) for r in spoken),
        "terms_unsupported": sum(len(r["unsupported_terms"]) for r in spoken),
        "answers_with_unsupported_terms": sum(bool(r["unsupported_terms"]) for r in spoken),
        "ttft_s": {"p50": percentile([r["ttft_s"] for r in ok], 50),
                   "p95": percentile([r["ttft_s"] for r in ok], 95)},
        "total_s": {"p50": percentile([r["total_s"] for r in ok], 50),
                    "p95": percentile([r["total_s"] for r in ok], 95)},
    })
    return out


def summary_by_half(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{"all" | "even" | "odd": {"answerable": ..., "unanswerable": ...}}``."""
    out: dict[str, dict[str, Any]] = {}
    for half in HALVES:
        rs = [r for r in records if half == "all" or r["half"] == half]
        out[half] = {kind: summarise([r for r in rs if r["kind"] == kind])
                     for kind in (ANSWERABLE, UNANSWERABLE) if any(r["kind"] == kind for r in rs)}
    return out


def _fmt(metric: Any) -> str:
    if metric is None:
        return "–"
    if isinstance(metric, dict) and "rate" in metric:
        if metric["rate"] is None:
            return "–"
        return f"{metric['rate']:.2f} ({metric['n']}/{metric['of']})"
    if isinstance(metric, dict):
        return f"{metric['p50']} / {metric['p95']}"
    return str(metric)


TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("answerable", "questions", "answerable questions"),
    ("answerable", "cited_rate", "cited_rate"),
    ("answerable", "cited_gold_rate", "cited_gold_rate"),
    ("answerable", "attributed_gold_rate", "cited or quoted gold"),
    ("answerable", "supported_rate", "supported_rate (sentences)"),
    ("answerable", "grounded_rate", "grounded_rate (sentences)"),
    ("answerable", "evidence_gold_rate", "first evidence overlaps gold"),
    ("answerable", "false_refusal_rate", "false_refusal_rate"),
    ("answerable", "numbers", "numbers stated"),
    ("answerable", "numbers_unsupported", "numbers_unsupported"),
    ("answerable", "terms_unsupported", "terms_unsupported"),
    ("answerable", "ttft_s", "ttft_s p50 / p95"),
    ("answerable", "total_s", "total_s p50 / p95"),
    ("unanswerable", "questions", "unanswerable questions"),
    ("unanswerable", "refusal_rate", "refusal_rate"),
    ("unanswerable", "numbers_unsupported", "numbers_unsupported (unanswerable)"),
    ("unanswerable", "total_s", "total_s p50 / p95 (unanswerable)"),
)


def table(by_half: dict[str, dict[str, Any]], markdown: bool = False) -> str:
    """The short table: one row per metric, one column per half."""
    rows = [(label, *(_fmt(by_half.get(h, {}).get(kind, {}).get(key)) for h in HALVES))
            for kind, key, label in TABLE_ROWS
            if any(key in by_half.get(h, {}).get(kind, {}) for h in HALVES)]
    head = ("metric", *HALVES)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                     for r in (head, *rows))


def evaluate(chain: Any, questions: Iterable[EvalQuestion], progress: bool = True,
             on_record: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run every question (with a progress bar); returns the per-question records."""
    from tqdm import tqdm

    qs = list(questions)
    records = []
    bar = tqdm(qs, desc="questions", unit="q", disable=not progress, dynamic_ncols=True)
    for q in bar:
        r = run_question(chain, q)
        records.append(r)
        if on_record is not None:
            on_record(r)
        refused = sum(bool(x.get("refused")) for x in records)
        bar.set_postfix(refused=refused, errors=sum(bool(x.get("error")) for x in records))
    return records


def report(records: Sequence[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """The whole JSON output: settings, the summary per half, the records, the notice."""
    return {"settings": settings, "summary": summary_by_half(records),
            "definitions": {"support": f"a sentence with >= {MIN_CONTENT_WORDS} content words is "
                            f"supported by a passage holding >= {SUPPORT_SHARE:.0%} of them",
                            "halves": "even/odd 0-based line position within its file"},
            "records": list(records), "notice": ADVISORY_NOTICE}
