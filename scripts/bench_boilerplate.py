"""How often a search puts a guideline's metadata sections first (what a user sees on the page).

    python scripts/bench_boilerplate.py --index DIR [--corpus FILE] [--rerank "STEP STEP"]...

The National Guideline Clearinghouse summaries (source ``ngc``) share one template: besides the
sections that answer (*Major Recommendations*, *Potential Benefits*, *Potential Harms*, …) each
has metadata sections (*Guideline Title*, *Bibliographic Source(s)*, *Guideline Status*,
*Clinical Algorithm(s)*, *Type of Evidence…*; small ones merged into a *General* chunk). For every
``ngc`` document of the corpus, one question is made from its title by a fixed template (a title
"Screening for X: …" gives "Who should be screened for X?", any other "What is recommended for
X?"), searched with each list of re-ranking steps (space-separated; "" for none; default: the
index's default and the earlier ``parts:depth=5``), and the share of metadata sections among the
first 1 and first 3 passages is printed, with how often the first passage is from the question's
own document. The heading list is this measurement's, not the search's: no step reads it.
``--novelty`` also counts, over every chunk of the index, the metadata and the other chunks whose
novelty (``ingest.rerank.restated``) is below each threshold: how the ``restated`` step's
default was chosen (on the corpus, not on questions).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ingest
from ingest.index import VISIBLE_AT
from ingest.search import HybridSettings, open_index

METADATA = ("Guideline Title", "Bibliographic Source", "Guideline Status", "Clinical Algorithm",
            "Type of Evidence")


def is_metadata(heading: str) -> bool:
    """A metadata section's heading path, or the *General* chunk its small sections merge into."""
    return heading == "General" or any(m in heading for m in METADATA)


def title_questions(corpus: Path) -> list[tuple[str, str]]:
    """(doc id, question) for every ``ngc`` document of the corpus."""
    out = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            if doc.get("source") != "ngc" or not doc.get("title"):
                continue
            subject = doc["title"].split(":")[0].rstrip(".")
            if subject.lower().startswith("screening for "):
                q = f"Who should be screened for {subject[len('screening for '):]}?"
            else:
                q = f"What is recommended for {subject[0].lower()}{subject[1:]}?"
            out.append((doc["id"], q))
    return out


def novelty_counts(store, thresholds: tuple[float, ...]) -> None:
    """Print, per threshold, the metadata and other chunks of the index below it."""
    from ingest.rerank.restated import novelty

    meta: list[float] = []
    other: list[float] = []
    with store.snapshot() as (conn, gen):
        rows = conn.execute(
            f"SELECT text, metadata FROM chunks WHERE {VISIBLE_AT}", (gen, gen)
        ).fetchall()
    for text, md in rows:
        md = json.loads(md)
        (meta if is_metadata(md.get("heading") or "") else other).append(
            novelty(text, str(md.get("title") or ""))
        )
    print(f"{len(rows)} chunks: {len(meta)} of metadata sections, {len(other)} others")
    print("| novelty below | metadata chunks | other chunks |")
    print("|---|---|---|")
    for t in thresholds:
        print(f"| {t} | {sum(x < t for x in meta)} | {sum(x < t for x in other)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("--corpus", type=Path, default=Path(ingest.SAMPLE_CORPUS))
    ap.add_argument("--rerank", action="append", default=None, metavar="STEPS")
    ap.add_argument("--novelty", action="store_true", help="also count chunks by novelty")
    args = ap.parse_args()
    questions = title_questions(args.corpus)
    default = open_index(args.index)
    if args.novelty:
        novelty_counts(default.store, (0.5, 0.6, 0.7, 0.8))
    runs = args.rerank if args.rerank is not None else [" ".join(default.hybrid.rerank),
                                                        "parts:depth=5"]
    print(f"{len(questions)} questions from the ngc titles of {args.corpus}")
    print("| re-ranking steps | first passage: metadata | first 3: metadata | first: own doc |")
    print("|---|---|---|---|")
    for spec in runs:
        steps = tuple(s for s in spec.split() if s)
        idx = open_index(args.index, embedder=default.embedder, hybrid=HybridSettings(rerank=steps))
        first = top3 = own = 0
        for doc_id, q in questions:
            hits = idx.search(q, k=3)
            meta = [is_metadata(h.metadata.get("heading") or "") for h in hits]
            first += bool(meta and meta[0])
            top3 += sum(meta)
            own += bool(hits and hits[0].metadata.get("doc_id") == doc_id)
        n = max(1, len(questions))
        print(f"| {spec or 'none'} | {first / n:.3f} | {top3 / (3 * n):.3f} | {own / n:.3f} |")


if __name__ == "__main__":
    main()
