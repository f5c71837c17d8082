"""Refusals: deciding, before the model runs, that the indexed guidelines do not cover a question.

The default 135M model cannot be relied on to refuse, so the decision is taken on the
retrieval's evidence, with three signals of the passages the model would be shown:

``similarity``
    The cosine similarity of the question's embedding and the best passage's.

``coverage``
    How much of the question the passages hold: the question's content words (``\\w+``,
    lower-cased, minus bm25s' English stop words, as the lexical search drops them), each
    weighted by its rarity in the index (BM25's idf, ``ln((N - df + 0.5) / (df + 0.5) + 1)``
    with ``df`` the chunks holding the word and ``N`` all chunks), and the share of that
    weight whose words occur in the passages or their titles and headings.  A word occurs
    when a passage word is the same or, for words of five letters or more, shares its first
    five letters (``treated`` ~ ``treatment``).  A question on a topic the index lacks has
    its rarest words (the topic) missing: coverage falls.
``evidence``
    The cosine similarity of the question and the best sentence of the passages
    (:mod:`assistant.evidence`).

The question is refused when ``similarity < min_similarity``, ``coverage < min_coverage`` or
``evidence < min_evidence`` (:class:`RefusalPolicy`; the defaults were chosen on the
even-numbered questions of the dev files, see docs/assistant.md "Refusals"). A refusal is
:data:`REFUSAL_TEXT`, the closest passages found, and the notice. The model's own refusal (its
answer opens with a sentence such as "The passages do not contain ...", :func:`model_refused`)
also counts as one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bm25s.stopwords import STOPWORDS_EN_PLUS

REFUSAL_TEXT = (
    "The indexed guidelines do not cover this question: no passage found is relevant enough to "
    "answer it, so no answer was generated. The closest passages are listed below, if any. Try "
    "rephrasing the question, widening the source filter, or indexing guidelines on the topic."
)
PREFIX_LETTERS = 5
_WORD = re.compile(r"\w+")
_STOP = frozenset(STOPWORDS_EN_PLUS)
_MODEL_REFUSAL = re.compile(
    r"\b(?:do|does|did)\s+not\s+(?:contain|answer|provide|mention|cover|address|include|"
    r"discuss|specify|say)\b|\bno\s+(?:relevant\s+)?information\b|"
    r"\b(?:cannot|can't|can\s+not|unable\s+to)\s+(?:answer|find|provide)\b|"
    r"\bnot\s+(?:covered|mentioned|addressed|discussed)\b",
    re.IGNORECASE,
)

TermCounts = Callable[[Sequence[str]], tuple[Mapping[str, int], int]]  # words -> (df, N)


@dataclass(frozen=True)
class RefusalPolicy:
    """When the retrieval's evidence is too weak to answer (see the module docstring)."""

    # chosen by scripts/calibrate_refusal.py on the even halves (docs/assistant.md "Refusals"):
    # the best passage's similarity alone separated them; the other two add nothing there (0)
    min_coverage: float = 0.0
    min_evidence: float = 0.0
    min_similarity: float = 0.525


@dataclass(frozen=True)
class RefusalSignals:
    """The retrieval's evidence for one question, and the decision taken on it."""

    coverage: float
    evidence: float
    refuse: bool
    similarity: float = 0.0  # the best passage's cosine similarity with the question
    by: str | None = None  # "retrieval", "model" or None (answered)
    missing: tuple[str, ...] = ()  # the question's content words no passage holds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def question_terms(question: str) -> list[str]:
    """The question's content words, lower-cased, each once."""
    words = (w.lower() for w in _WORD.findall(question))
    return list(dict.fromkeys(w for w in words
                              if w not in _STOP and len(w) > 1 and not w.isdigit()))


def _key(word: str) -> str:
    return word[:PREFIX_LETTERS] if len(word) >= PREFIX_LETTERS else word


def idf(df: int, n: int) -> float:
    """BM25's inverse document frequency of a word held by ``df`` of ``n`` chunks."""
    return math.log((n - df + 0.5) / (df + 0.5) + 1.0)


def coverage(question: str, passages: Sequence[str],
             term_counts: TermCounts | None = None) -> tuple[float, list[str]]:
    """(idf-weighted share of the question's content words the passages hold, the words
    they miss); 1.0 for a question without content words.  Without ``term_counts`` every
    word weighs the same."""
    terms = question_terms(question)
    if not terms:
        return 1.0, []
    held_exact: set[str] = set()
    held_prefix: set[str] = set()
    for text in passages:
        for w in _WORD.findall(text.lower()):
            held_exact.add(w)
            held_prefix.add(_key(w))
    if term_counts is not None:
        counts, n = term_counts(terms)
        weights = {t: idf(int(counts.get(t, 0)), max(n, 1)) for t in terms}
    else:
        weights = dict.fromkeys(terms, 1.0)
    missing = [t for t in terms
               if t not in held_exact and (len(t) < PREFIX_LETTERS or _key(t) not in held_prefix)]
    total = sum(weights.values())
    return (total - sum(weights[t] for t in missing)) / total, missing


def decide(question: str, passages: Sequence[str], best_evidence: float | None,
           policy: RefusalPolicy, term_counts: TermCounts | None = None,
           best_similarity: float | None = None) -> RefusalSignals:
    """The refusal decision for ``question`` over the texts shown with it (``best_similarity``:
    the best passage's cosine with the question; None when the retriever gives none, which
    does not refuse)."""
    if not passages:
        return RefusalSignals(0.0, 0.0, True, 0.0, "retrieval", tuple(question_terms(question)))
    cov, missing = coverage(question, passages, term_counts)
    ev = float(best_evidence) if best_evidence is not None else 0.0
    sim = float(best_similarity) if best_similarity is not None else 1.0
    refuse = cov < policy.min_coverage or ev < policy.min_evidence or sim < policy.min_similarity
    return RefusalSignals(round(cov, 4), round(ev, 4), refuse, round(sim, 4),
                          "retrieval" if refuse else None, tuple(missing))


def model_refused(text: str) -> bool:
    """The answer's first sentence says the passages do not answer the question."""
    first = re.split(r"(?<=[.!?])\s+|\n+", text.strip(), maxsplit=1)[0] if text.strip() else ""
    return bool(first) and bool(_MODEL_REFUSAL.search(first))


def term_counts_of(retriever: Any) -> TermCounts | None:
    """Our retriever's index word counts (``index.term_counts``), if it has them."""
    index = getattr(retriever, "index", None)
    fn = getattr(index, "term_counts", None) if index is not None else None
    return fn if callable(fn) else None
