"""Fit the refusal policy on the even halves of the dev files; report the odd halves once.

    python scripts/calibrate_refusal.py --index DIR --qa QA.jsonl --unanswerable U.jsonl
        [--k 4] [--max-false-refusal 0.03] [--report-odd] [--json OUT]

No model runs: per question it retrieves the passages as the chain does (the real
``GuidelineRetriever``, the chain's threshold and ``k``) and computes the policy's features
(:mod:`assistant.checks.refusal`: the best passage's similarity, the passages' mean similarity, the
idf-weighted share of the question's words in their titles and headings).  Only the questions at
even 0-based positions of both files are read to choose: a logistic regression (scikit-learn,
classes weighted equally, L2 with C = 1, on standardized features, folded back into weights on
the raw features) is fitted to tell the unanswerable from the answerable ones; its probability
threshold is then the middle of the widest gap between consecutive even-half scores among the
thresholds that refuse the most unanswerable questions while refusing at most
``--max-false-refusal`` of the answerable ones (ties: fewer false refusals).  A question with
nothing retrieved is always refused and is not fitted on.

It prints the fitted ``RefusalPolicy(...)`` (copy it into assistant/checks/refusal.py) and the
rates on the even half of: the retriever's threshold alone, the previous rule (best similarity below
0.525), the fitted policy and the current default, and the time taken per question by the
retrieval and by the features (side by side: the decision's cost is the features').
``--report-odd`` also retrieves the odd half (held out: use it once, after choosing) and prints
the same rates there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assistant.answer import Passage  # noqa: E402
from assistant.checks.hooks import passage_similarities, passage_titles  # noqa: E402
from assistant.checks.refusal import (  # noqa: E402
    FEATURES,
    RefusalFeatures,
    RefusalPolicy,
    features_of,
    read_once,
    term_counts_of,
)
from assistant.config import Settings  # noqa: E402
from assistant.evaluate import ANSWERABLE, UNANSWERABLE, EvalQuestion, load_questions  # noqa: E402
from assistant.retrieval.retriever import GuidelineRetriever  # noqa: E402

PREVIOUS_MIN_SIMILARITY = 0.525  # the rule this policy replaced (best similarity alone)
Rule = Callable[[RefusalFeatures], bool]  # features -> refuse


def features_row(retriever: GuidelineRetriever, q: EvalQuestion) -> dict:
    """One question's retrieval as the chain sees it: its features, or none (nothing found)."""
    start = time.perf_counter()
    docs = retriever.invoke(q.question)
    retrieved = time.perf_counter()
    row: dict = {"qid": q.qid, "kind": q.kind, "half": "even" if q.position % 2 == 0 else "odd",
                 "docs": len(docs)}
    if docs:
        passages = [Passage.from_document(i, d) for i, d in enumerate(docs, start=1)]
        feats = features_of(q.question, passage_titles(passages),
                            passage_similarities(passages), read_once(term_counts_of(retriever)))
        row.update(zip(FEATURES, (round(v, 6) for v in feats.values()), strict=True))
    row["retrieval_ms"] = round((retrieved - start) * 1e3, 2)
    row["features_ms"] = round((time.perf_counter() - retrieved) * 1e3, 2)
    return row


def timings(rows: Sequence[dict]) -> str:
    """p50 / p95 of the retrieval and of the features, measured side by side per question."""
    out = []
    for key in ("retrieval_ms", "features_ms"):
        values = [r[key] for r in rows]
        out.append(f"{key} p50 {np.percentile(values, 50):.1f} p95 {np.percentile(values, 95):.1f}")
    return "; ".join(out)


def as_features(row: dict) -> RefusalFeatures:
    return RefusalFeatures(*(float(row[name]) for name in FEATURES))


def rates(rows: Sequence[dict], rule: Rule) -> dict[str, list[int]]:
    """{"refusal": [refused, unanswerable], "false_refusal": [refused, answerable]}."""
    def refused(r: dict) -> bool:
        return r["docs"] == 0 or rule(as_features(r))
    una = [refused(r) for r in rows if r["kind"] == UNANSWERABLE]
    ans = [refused(r) for r in rows if r["kind"] == ANSWERABLE]
    return {"refusal": [sum(una), len(una)], "false_refusal": [sum(ans), len(ans)]}


def fit(rows: Sequence[dict]) -> tuple[float, tuple[float, ...]]:
    """(intercept, weights on the raw features) of the logistic regression on ``rows``."""
    from sklearn.linear_model import LogisticRegression

    found = [r for r in rows if r["docs"]]
    x = np.array([as_features(r).values() for r in found], dtype=np.float64)  # (n, features)
    y = np.array([r["kind"] == UNANSWERABLE for r in found], dtype=np.int64)  # (n,)
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-12)
    model = LogisticRegression(C=1.0, class_weight="balanced").fit((x - mean) / std, y)
    weights = model.coef_[0] / std
    intercept = float(model.intercept_[0] - float(weights @ mean))
    return round(intercept, 4), tuple(round(float(w), 4) for w in weights)


def choose_threshold(rows: Sequence[dict], intercept: float, weights: tuple[float, ...],
                     max_false_refusal: float) -> float:
    """The probability threshold (see the module docstring) for the fitted model on ``rows``."""
    found = [r for r in rows if r["docs"]]
    scores = np.sort([intercept + float(np.dot(weights, as_features(r).values()))
                      for r in found])  # logits, ascending
    best: tuple | None = None
    for lo, hi in pairwise(scores):
        if hi <= lo:
            continue
        t = float(1.0 / (1.0 + np.exp(-(lo + hi) / 2)))  # the gap's middle, as a probability
        got = rates(rows, RefusalPolicy(intercept, weights, t).refuses)
        ans_refused, ans_n = got["false_refusal"]
        if ans_refused > max_false_refusal * ans_n:
            continue
        key = (got["refusal"][0], -ans_refused, hi - lo)
        if best is None or key > best[0]:
            best = (key, t)
    assert best is not None  # the highest gap refuses no answerable question
    return round(best[1], 4)


def fmt(counts: list[int]) -> str:
    n, of = counts
    return f"{n / of:.3f} ({n}/{of})" if of else "-"


def report(name: str, half: str, got: dict[str, list[int]]) -> str:
    return (f"{name:34s} {half:4s}  refusal_rate {fmt(got['refusal']):15s} "
            f"false_refusal_rate {fmt(got['false_refusal'])}")


def collect(args: argparse.Namespace, halves: Sequence[str]) -> list[dict]:
    """The feature rows of the questions at the ``halves`` positions of both files."""
    from tqdm import tqdm

    settings = Settings()
    retriever = GuidelineRetriever(index_path=args.index, k=args.k,
                                   score_threshold=settings.min_similarity)
    questions = (load_questions(Path(args.qa), ANSWERABLE)
                 + load_questions(Path(args.unanswerable), UNANSWERABLE))
    questions = [q for q in questions if ("even", "odd")[q.position % 2] in halves]
    questions.sort(key=lambda q: q.kind != UNANSWERABLE)  # the short file first
    return [features_row(retriever, q) for q in tqdm(questions, desc="questions", unit="q")]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True)
    parser.add_argument("--qa", required=True)
    parser.add_argument("--unanswerable", required=True)
    parser.add_argument("--k", type=int, default=Settings().k)
    parser.add_argument("--max-false-refusal", type=float, default=0.03,
                        help="on the even half (a margin under the issue's 5 %%)")
    parser.add_argument("--report-odd", action="store_true",
                        help="also retrieve the held-out odd half and print its rates (once, "
                        "after choosing)")
    parser.add_argument("--json", help="write the policy, the rates and every question's row")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    rows = collect(args, ("even", "odd") if args.report_odd else ("even",))
    even = [r for r in rows if r["half"] == "even"]
    intercept, weights = fit(even)
    threshold = choose_threshold(even, intercept, weights, args.max_false_refusal)
    fitted = RefusalPolicy(intercept, weights, threshold)
    current = Settings().refusal_policy or fitted
    rules: dict[str, Rule] = {
        "retriever threshold only": lambda f: False,
        f"previous: similarity < {PREVIOUS_MIN_SIMILARITY}":
            lambda f: f.similarity < PREVIOUS_MIN_SIMILARITY,
        "fitted on the even half": fitted.refuses,
        "current default (RefusalPolicy())": current.refuses,
    }
    print(f"fitted on the even half: {fitted!r}  (features {FEATURES})")
    print(f"per question ({len(rows)}): {timings(rows)}")
    out: dict = {"fitted": vars(fitted) | {"features": FEATURES}, "rates": {}, "rows": rows}
    for half in ("even", "odd") if args.report_odd else ("even",):
        part = [r for r in rows if r["half"] == half]
        for name, rule in rules.items():
            got = rates(part, rule)
            out["rates"].setdefault(name, {})[half] = got
            print(report(name, half, got))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
