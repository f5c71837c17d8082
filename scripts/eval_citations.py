"""How often the answering chain's answers cite a passage by number, per prompt variant.

    python scripts/eval_citations.py --index DIR [--corpus DOCS.jsonl] [--questions FILE]
        [--n 12] [--k 3] [--max-tokens 64] [--n-ctx 1024] [--variants NAME ...] [--show]

Runs the same questions (spread evenly over the question file), greedy, through
:class:`assistant.chain.RAGChain` with each prompt variant, and prints per variant how many
answers hold at least one ``[n]`` that resolves to a passage given ("cited"), how many have a
citation of kind cited or matched (quoted text, :mod:`assistant.checks.attribution`), and how many
``[n]`` resolve to nothing.  The variants differ only in generic instructions, never in
question-specific text, or in the passages' layout.  Numbers are recorded in docs/assistant.md
("Citation rate").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assistant import prompts  # noqa: E402
from assistant.answer import CITED, MATCHED  # noqa: E402
from assistant.chain import build_chain  # noqa: E402
from assistant.config import Settings  # noqa: E402
from assistant.model.chat_format import strip_markers  # noqa: E402
from assistant.prompts import CITATION_REMINDER, SYSTEM_PROMPT  # noqa: E402

# A format example with no clinical content, tried in the system message.
CITATION_EXAMPLE = (" Answer format example: \"The guideline recommends this for adults [1], "
                    "but not for children [2].\"")
# A reminder that asks for sentences, each ending with its passage's number.
SENTENCE_REMINDER = ("Answer in one or two sentences of your own from the passages above, and "
                     "end each sentence with the number of the passage it comes from, like [1].")
DEFAULT_LAYOUT = prompts.format_passages


def origin_above(passages) -> str:
    """The earlier layout: ``[n] Title — Heading (source)`` as a header line above the text."""
    if not passages:
        return prompts.NO_PASSAGES_TEXT
    return "\n\n".join(f"[{i}] {prompts.passage_source(d)}\n{strip_markers(d.page_content.strip())}"
                       for i, d in enumerate(passages, start=1))


# name -> (system message, reminder, passage layout)
VARIANTS: dict[str, tuple[str, str | None, object]] = {
    "system only": (SYSTEM_PROMPT, None, DEFAULT_LAYOUT),
    "+ reminder after the question": (SYSTEM_PROMPT, CITATION_REMINDER, DEFAULT_LAYOUT),
    "+ format example": (SYSTEM_PROMPT + CITATION_EXAMPLE, None, DEFAULT_LAYOUT),
    "+ both": (SYSTEM_PROMPT + CITATION_EXAMPLE, CITATION_REMINDER, DEFAULT_LAYOUT),
    "+ sentence reminder": (SYSTEM_PROMPT, SENTENCE_REMINDER, DEFAULT_LAYOUT),
    "+ reminder, origin above": (SYSTEM_PROMPT, CITATION_REMINDER, origin_above),
}


def spread(path: Path, n: int, corpus: Path | None = None) -> list[str]:
    """``n`` questions taken at even steps through the JSONL file; with ``corpus``, only those
    whose ``doc_id`` is a document of that corpus (the one the index was built from)."""
    ids = None
    if corpus is not None:
        with corpus.open(encoding="utf-8") as f:
            ids = {json.loads(line)["id"] for line in f if line.strip()}
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [r["question"] for r in rows if ids is None or r["doc_id"] in ids]
    n = min(n, len(rows))
    return [rows[i * len(rows) // n] for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, required=True)
    shared = Path(os.environ.get("GUIDELINES_SHARED") or ROOT.parent / "shared")
    ap.add_argument("--questions", type=Path, default=shared / "data/qa-dev.jsonl")
    ap.add_argument("--corpus", type=Path, help="only questions on documents of this JSONL")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--show", action="store_true", help="print every answer")
    args = ap.parse_args(argv)
    settings = replace(Settings.from_env(), index_dir=args.index, k=args.k,
                       max_tokens=args.max_tokens, n_ctx=args.n_ctx, temperature=0.0)
    chain = build_chain(settings)
    questions = spread(args.questions, args.n, args.corpus)
    for name in args.variants:
        chain.system_prompt, chain.reminder, layout = VARIANTS[name]
        prompts.format_passages = layout  # read by prompts.user_message at each call
        cited = drawn = unresolved = answered = 0
        t0 = time.perf_counter()
        for q in questions:
            answer = chain.invoke(q)
            if answer.refused:
                continue
            answered += 1
            kinds = {c.kind for c in answer.citations}
            cited += CITED in kinds
            drawn += bool(kinds & {CITED, MATCHED})
            unresolved += len(answer.unresolved_citations)
            if args.show:
                print(f"  [{name}] {q!r}\n    -> {answer.text!r}", flush=True)
        print(f"{name:32s} answered {answered}/{len(questions)}  resolving [n]: {cited}  "
              f"cited or matched: {drawn}  unresolved [n]: {unresolved}  "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
