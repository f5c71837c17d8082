"""Retrieval evaluation on a QA file (``qa-dev.jsonl`` format): hit@k, MRR, latency.

Each line holds ``question``, ``answer`` (a verbatim passage of its document's ``clean_text``) and
``doc_id``. A *document hit* at k: one of the first k chunks comes from ``doc_id``. A *passage
hit* at k: one of the first k chunks contains one of the answer's sentences of at least
``MIN_SENTENCE_CHARS`` characters (the answer is split at sentence ends and line breaks). MRR is
the mean reciprocal rank of the first passage hit within the largest k (0 when none). Latency is
the wall time of one ``search`` call (query embedding included), after a short warm-up.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CorpusError

MIN_SENTENCE_CHARS = 30
WARMUP_QUERIES = 3
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    doc_id: str
    qid: str = ""

    @property
    def sentences(self) -> list[str]:
        parts = (s.strip() for s in _SPLIT.split(self.answer))
        return [s for s in parts if len(s) >= MIN_SENTENCE_CHARS]


def load_qa(path: str | Path) -> list[QA]:
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out.append(
                    QA(row["question"], row["answer"], row["doc_id"], str(row.get("qid", n)))
                )
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CorpusError(path, f"line {n} is not a QA record: {e}") from e
    return out


def half(qas: Sequence[QA], which: str) -> list[QA]:
    """The questions at even (0, 2, ...) or odd (1, 3, ...) positions, counted from 0: the
    even half is where every choice is made, the odd half is looked at once, at the end."""
    if which not in ("even", "odd"):
        raise ValueError(f"half must be 'even' or 'odd', not {which!r}")
    return list(qas[0 if which == "even" else 1 :: 2])


def passage_hit(text: str, sentences: Sequence[str]) -> bool:
    return any(s in text for s in sentences)


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else 0.0


def score_rankings(
    qas: Sequence[QA], rankings: Sequence[Sequence[tuple[str, str]]], ks: Sequence[int]
) -> dict:
    """Metrics from per-question rankings of (doc_id, chunk text), best first."""
    ks = sorted(ks)
    doc_hits = {k: 0 for k in ks}
    pas_hits = {k: 0 for k in ks}
    rr = []
    for qa, ranking in zip(qas, rankings, strict=True):
        sents = qa.sentences
        first_doc = next((i for i, (d, _) in enumerate(ranking) if d == qa.doc_id), None)
        first_pas = next((i for i, (_, t) in enumerate(ranking) if passage_hit(t, sents)), None)
        for k in ks:
            doc_hits[k] += first_doc is not None and first_doc < k
            pas_hits[k] += first_pas is not None and first_pas < k
        rr.append(0.0 if first_pas is None or first_pas >= ks[-1] else 1.0 / (first_pas + 1))
    n = max(1, len(qas))
    out: dict = {"n": len(qas)}
    for k in ks:
        out[f"doc_hit@{k}"] = round(doc_hits[k] / n, 4)
    for k in ks:
        out[f"passage_hit@{k}"] = round(pas_hits[k] / n, 4)
    out["mrr"] = round(float(np.mean(rr)) if rr else 0.0, 4)
    return out


def run_queries(
    search: Callable[[str, int], list[tuple[str, str]]], qas: Sequence[QA], k: int
) -> tuple[list[list[tuple[str, str]]], list[float]]:
    for qa in qas[:WARMUP_QUERIES]:
        search(qa.question, k)
    rankings, times = [], []
    for qa in qas:
        t0 = time.perf_counter()
        rankings.append(search(qa.question, k))
        times.append((time.perf_counter() - t0) * 1000)
    return rankings, times


def evaluate(
    index,
    qas: Sequence[QA],
    ks: Sequence[int] = (1, 3, 5, 10),
    mode: str = "hybrid",
    sources: Sequence[str] | None = None,
) -> dict:
    """Metrics of ``index.search`` (an :class:`ingest.Index`) on these questions."""

    def search(question: str, k: int) -> list[tuple[str, str]]:
        hits = index.search(question, k=k, sources=sources, mode=mode)
        return [(h.metadata.get("doc_id"), h.text) for h in hits]

    rankings, times = run_queries(search, qas, max(ks))
    metrics = score_rankings(qas, rankings, ks)
    metrics.update(
        p50_ms=round(_percentile(times, 50), 2),
        p95_ms=round(_percentile(times, 95), 2),
        mode=mode,
        index=str(index.path),
    )
    return metrics


def format_table(metrics: dict, ks: Sequence[int], label: str = "this index") -> str:
    """A Markdown table of one run's metrics."""
    return format_comparison({label: metrics}, ks)


def format_comparison(runs: dict[str, dict], ks: Sequence[int]) -> str:
    """A Markdown table, one row per run (label -> metrics)."""
    cols = (
        [f"doc_hit@{k}" for k in ks]
        + [f"passage_hit@{k}" for k in ks]
        + ["mrr", "p50_ms", "p95_ms"]
    )
    lines = ["| run | n | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for label, m in runs.items():
        cells = [
            f"{m[c]:.3f}" if c in m and not c.endswith("_ms") else f"{m.get(c, 0):.1f}"
            for c in cols
        ]
        lines.append(f"| {label} | {m.get('n', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
