"""Passages that only restate their document's title go after the others.

Guideline summaries open with sections such as *Guideline Title*, *Bibliographic Source(s)* and
*Guideline Status*: the title again, the citation (the title with authors and journal) and the
release note ("updates a previous version: <title>"). A question that names the guideline's
subject matches them best, yet they answer nothing, and every passage shown already carries its
document's title. A chunk's **novelty** is the share of its words (runs of four or more letters,
case folded) that are not words of its document's title; among the first ``depth`` candidates,
those with novelty below ``min_novelty`` keep their order but move behind the others.

The default 0.7 was chosen on the corpus, not on questions: of the sample index's chunks,
169 of 232 from metadata sections and 26 of 4,541 others fall below it
(``scripts/bench_boilerplate.py --novelty``, ``docs/retrieval.md``).
"""

from __future__ import annotations

import re

from .base import Query, Scored

_WORD = re.compile(r"[^\W\d_]{4,}")


def novelty(text: str, title: str) -> float:
    """Share of ``text``'s words (4+ letters, case folded) not among ``title``'s; 1.0 for a
    text with no such words (nothing to compare: left alone)."""
    words = _WORD.findall(text.casefold())
    if not words:
        return 1.0
    known = set(_WORD.findall(title.casefold()))
    return sum(w not in known for w in words) / len(words)


class Restated:
    def __init__(self, min_novelty: float = 0.7, depth: float = 10) -> None:
        self.min_novelty = float(min_novelty)
        self.depth = int(depth)

    def __call__(self, query: Query, ranked: list[Scored]) -> list[Scored]:
        head = ranked[: self.depth]
        rows = query.rows([r for r, _ in head])
        keep: list[Scored] = []
        later: list[Scored] = []
        for rs in head:
            row = rows.get(rs[0])  # (chunk_id, text, metadata); a row gone since is kept
            restates = row is not None and (
                novelty(row[1], str(row[2].get("title") or "")) < self.min_novelty
            )
            (later if restates else keep).append(rs)
        return keep + later + ranked[self.depth :]
