"""Choose the refusal thresholds on the even halves of the dev files; report the odd halves.

    python scripts/calibrate_refusal.py --index DIR --qa QA.jsonl --unanswerable U.jsonl
        [--k 4] [--max-false-refusal 0.03] [--json OUT]

No model runs: per question it retrieves the passages as the chain does and computes the two
refusal signals (:mod:`assistant.refusal`: idf-weighted coverage of the question's words, best
evidence sentence similarity, best passage similarity). On the questions at even positions of
both files it tries a grid of (min_coverage, min_evidence, min_similarity) and keeps the triple
that refuses the most unanswerable questions while refusing at most ``--max-false-refusal`` of
the answerable ones (ties: fewer false refusals, then lower thresholds). It prints the rates of
that triple on the even half (where it was chosen) and on the odd half (held out), and of the
retriever's threshold alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assistant.answer import Passage  # noqa: E402
from assistant.checks import passage_texts  # noqa: E402
from assistant.config import Settings  # noqa: E402
from assistant.evaluate import ANSWERABLE, UNANSWERABLE, load_questions  # noqa: E402
from assistant.evidence import embedder_of, select_evidence  # noqa: E402
from assistant.refusal import coverage, term_counts_of  # noqa: E402
from assistant.retriever import GuidelineRetriever  # noqa: E402

COVERAGE_GRID = np.round(np.arange(0.0, 1.0001, 0.05), 2)
EVIDENCE_GRID = np.round(np.arange(0.0, 0.7001, 0.025), 3)
SIMILARITY_GRID = np.round(np.arange(0.25, 0.7001, 0.025), 3)


def signals(retriever: GuidelineRetriever, question: str) -> dict:
    docs = retriever.invoke(question)
    if not docs:
        return {"docs": 0, "coverage": 0.0, "evidence": 0.0}
    passages = [Passage.from_document(i, d) for i, d in enumerate(docs, start=1)]
    ev = select_evidence(question, [(p.number, p.text) for p in passages], embedder_of(retriever))
    cov, missing = coverage(question, passage_texts(passages), term_counts_of(retriever))
    return {"docs": len(docs), "coverage": round(cov, 4),
            "evidence": ev[0].score if ev else 0.0, "missing": missing,
            "similarity": max(float(d.metadata.get("similarity", 0.0)) for d in docs)}


def rates(rows: list[dict], min_cov: float, min_ev: float,
          min_sim: float = 0.0) -> tuple[float, float]:
    """(refusal rate on unanswerable, false refusal rate on answerable); nan when empty."""
    def refused(r: dict) -> bool:
        return (r["docs"] == 0 or r["coverage"] < min_cov or r["evidence"] < min_ev
                or r.get("similarity", 0.0) < min_sim)
    una = [refused(r) for r in rows if r["kind"] == UNANSWERABLE]
    ans = [refused(r) for r in rows if r["kind"] == ANSWERABLE]
    return (float(np.mean(una)) if una else float("nan"),
            float(np.mean(ans)) if ans else float("nan"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True)
    parser.add_argument("--qa", required=True)
    parser.add_argument("--unanswerable", required=True)
    parser.add_argument("--k", type=int, default=Settings().k)
    parser.add_argument("--max-false-refusal", type=float, default=0.03)
    parser.add_argument("--half", choices=("all", "even", "odd"), default="all",
                        help="even: only the even half (to choose); odd: only the odd half "
                        "(to report the thresholds given by --use)")
    parser.add_argument("--use", nargs=3, type=float,
                        metavar=("MIN_COVERAGE", "MIN_EVIDENCE", "MIN_SIMILARITY"),
                        help="report these thresholds instead of choosing")
    parser.add_argument("--json")
    args = parser.parse_args()
    settings = Settings()
    retriever = GuidelineRetriever(index_path=args.index, k=args.k,
                                   score_threshold=settings.min_similarity)
    questions = (load_questions(Path(args.qa), ANSWERABLE)
                 + load_questions(Path(args.unanswerable), UNANSWERABLE))
    from tqdm import tqdm

    if args.half != "all":
        questions = [q for q in questions if q.position % 2 == (args.half == "odd")]

    questions.sort(key=lambda q: q.kind != UNANSWERABLE)  # the short file first
    rows = []
    for i, q in enumerate(tqdm(questions, desc="questions", unit="q"), start=1):
        rows.append({"qid": q.qid, "kind": q.kind, "half": "even" if q.position % 2 == 0
                     else "odd", **signals(retriever, q.question)})
        if args.json and i % 10 == 0:  # partial rows survive an interrupted run
            Path(args.json).write_text(json.dumps({"partial": True, "rows": rows}, indent=1),
                                       encoding="utf-8")
    even = [r for r in rows if r["half"] == "even"]
    odd = [r for r in rows if r["half"] == "odd"]
    best = None
    if args.use:
        best = ((), *args.use)
    grid = [] if args.use else [(c, e, m) for c in COVERAGE_GRID for e in EVIDENCE_GRID
                                 for m in SIMILARITY_GRID]
    for c, e, m in grid:
        refusal, false = rates(even, float(c), float(e), float(m))
        if false > args.max_false_refusal:
            continue
        key = (refusal, -false, -c, -e, -m)
        if best is None or key > best[0]:
            best = (key, float(c), float(e), float(m))
    assert best is not None  # the lowest thresholds refuse only empty retrievals
    _, c, e, m = best
    out = {"chosen": {"min_coverage": c, "min_evidence": e, "min_similarity": m},
           "retriever_only": {h: rates(rs, 0.0, 0.0) for h, rs in
                              (("even", even), ("odd", odd))},
           "chosen_rates": {h: rates(rs, c, e, m) for h, rs in (("even", even), ("odd", odd))},
           "current_default": {h: rates(rs, settings.refusal_policy.min_coverage,
                                        settings.refusal_policy.min_evidence,
                                        settings.refusal_policy.min_similarity)
                               for h, rs in (("even", even), ("odd", odd))}
           if settings.refusal_policy else None,
           "rows": rows}
    print(f"{'given' if args.use else 'chosen on the even half'}: min_coverage={c} "
          f"min_evidence={e} min_similarity={m}")
    for name in ("retriever_only", "chosen_rates", "current_default"):
        if out[name]:
            for h, (refusal, false) in out[name].items():
                if (h == "odd" and not odd) or (h == "even" and not even):
                    continue
                print(f"{name:16s} {h:4s}  refusal_rate {refusal:.3f}  "
                      f"false_refusal_rate {false:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
