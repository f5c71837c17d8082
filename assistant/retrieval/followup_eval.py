"""``python -m assistant.retrieval.followup_eval``: retrieval of two-turn dialogues, follow-ups
searched bare and as rewritten by :func:`assistant.retrieval.followup.rewrite`.

The dialogues are made from the dev questions' even half only (positions 0, 2, 4, … of the
file; the odd half is kept unseen): for each document with two even-half questions of different
kinds, the first turn is one question as asked, the second a short follow-up about the other
question's kind, written from a fixed template per kind ("How is it treated?", "Who is at
risk?"), whose answer is that other question's answer. Three searches of the second turn are
scored with the dev metrics (``ingest.evaluate``): the follow-up's bare words, the rewritten
query, and the full question it stands for (an upper bound).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from assistant.retrieval.followup import rewrite

# A follow-up for each kind of MedQuAD question (the ``qtype`` field of the dev file).
FOLLOW_UPS = {
    "information": "What is it?",
    "treatment": "How is it treated?",
    "exams and tests": "How is it diagnosed?",
    "susceptibility": "Who is at risk?",
    "prevention": "How can it be prevented?",
    "symptoms": "What are the symptoms?",
    "causes": "What causes it?",
    "outlook": "What is the outlook?",
    "complications": "What are the complications?",
    "frequency": "How common is it?",
}


@dataclass(frozen=True)
class Dialogue:
    first: str  # the first turn, a dev question as asked
    follow_up: str  # the second turn as a user would type it
    full: str  # the question the follow-up stands for
    answer: str  # its answer (a passage of the document)
    doc_id: str


def dialogues(path: str | Path) -> list[Dialogue]:
    """Two-turn dialogues from the even half of a dev QA file (see the module docstring)."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.strip()]
    by_doc: dict[str, list[dict]] = defaultdict(list)
    for row in rows[0::2]:
        by_doc[row["doc_id"]].append(row)
    out = []
    for doc_id, qs in by_doc.items():
        first = qs[0]
        for other in qs[1:]:
            kind = other.get("qtype")
            if kind in FOLLOW_UPS and kind != first.get("qtype"):
                out.append(Dialogue(first["question"], FOLLOW_UPS[kind], other["question"],
                                    other["answer"], doc_id))
                break
    return out


def evaluate_dialogues(index, items: Sequence[Dialogue], ks: Sequence[int] = (1, 5)) -> dict:
    """Metrics of the second turn searched bare, rewritten, and as the full question."""
    from ingest.evaluate import QA, score_rankings

    qas = [QA(d.full, d.answer, d.doc_id) for d in items]
    runs = {}
    queries = {
        "bare follow-up": [d.follow_up for d in items],
        "rewritten follow-up": [rewrite(d.follow_up, [d.first]).query for d in items],
        "full question (upper bound)": [d.full for d in items],
    }
    for label, texts in queries.items():
        rankings = [
            [(h.metadata.get("doc_id"), h.text) for h in index.search(t, k=max(ks))]
            for t in texts
        ]
        runs[label] = score_rankings(qas, rankings, ks)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assistant.retrieval.followup_eval", description=__doc__
    )
    parser.add_argument("--index", required=True, type=Path)
    parser.add_argument("--qa", required=True, type=Path, help="the dev QA file (qa-dev.jsonl)")
    parser.add_argument("--json", type=Path, default=None, help="write the metrics here")
    parser.add_argument("--show", type=int, default=3, help="print this many dialogues")
    args = parser.parse_args(argv)
    import ingest
    from ingest.evaluate import format_comparison

    items = dialogues(args.qa)
    for d in items[: args.show]:
        print(f"- {d.first} / {d.follow_up} -> {rewrite(d.follow_up, [d.first]).query}")
    runs = evaluate_dialogues(ingest.open_index(args.index), items)
    print(format_comparison(runs, (1, 5)))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
