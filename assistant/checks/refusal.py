"""Refusals: deciding, before the model runs, that the indexed guidelines do not cover a question.

The default 135M model cannot be relied on to refuse, so the decision is taken on what the
retriever returned and the index's own word counts, with no model, in three features
(:data:`FEATURES`):

``similarity``
    The cosine similarity of the question's embedding and the best passage's.
``mean_similarity``
    The mean of that similarity over the passages returned (up to ``k``).  A question whose
    topic one passage of another guideline mentions in passing has one close passage and
    distant others: the mean falls where the best alone does not.
``title_coverage``
    How much of the question the passages' titles and headings hold: the question's content
    words (``\\w+``, lower-cased, minus bm25s' English stop words, as the lexical search drops
    them), each weighted by its rarity in the index (BM25's idf, ``ln((N - df + 0.5) / (df +
    0.5) + 1)`` with ``df`` the chunks holding the word and ``N`` all chunks), and the share of
    that weight whose words occur in the titles and headings (:func:`coverage`).  A word occurs
    when a title word is the same or, for words of five letters or more, shares its first five
    letters (``treated`` ~ ``treatment``).  The guideline a question is about names its topic;
    a guideline that mentions it in passing does not.

A logistic model over them (:class:`RefusalPolicy`: one weight per feature and an intercept,
fitted on the even-numbered questions of both dev files by scripts/calibrate_refusal.py, see
docs/assistant.md "Refusals") gives the probability that the index cannot answer; the question
is refused when it reaches ``policy.threshold``, and always when nothing was retrieved.  Two
more signals are recorded with every decision but do not decide: ``coverage`` (the same share
over the passages' texts, titles and headings, and the words they ``miss``) and ``evidence``
(the best evidence sentence's similarity, :mod:`assistant.checks.evidence`).  A refusal is
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


FEATURES = ("similarity", "mean_similarity", "title_coverage")  # RefusalFeatures' order


class RefusalPolicyError(ValueError):
    """A refusal policy whose weights do not match :data:`FEATURES`, or a bad threshold."""

    def __init__(self, value: object, why: str) -> None:
        super().__init__(f"refusal policy: {why} (got {value!r})")
        self.value = value


@dataclass(frozen=True)
class RefusalFeatures:
    """The features the decision is taken on (see the module docstring), in :data:`FEATURES`
    order."""

    similarity: float
    mean_similarity: float
    title_coverage: float

    def values(self) -> tuple[float, ...]:
        return tuple(float(getattr(self, name)) for name in FEATURES)


@dataclass(frozen=True)
class RefusalPolicy:
    """P(the index cannot answer) = sigmoid(intercept + weights · features); refuse at
    ``threshold`` or above.  The defaults are scripts/calibrate_refusal.py's fit on the
    even-numbered dev questions (docs/assistant.md "Refusals"); nothing else holds them."""

    intercept: float = 21.0026
    weights: tuple[float, ...] = (-14.5591, -18.8332, -5.5923)  # one per FEATURES name, in order
    threshold: float = 0.836

    def __post_init__(self) -> None:
        if len(self.weights) != len(FEATURES):
            raise RefusalPolicyError(self.weights, f"expected {len(FEATURES)} weights, one "
                                     f"per feature {FEATURES}")
        if not 0.0 < self.threshold < 1.0:
            raise RefusalPolicyError(self.threshold, "threshold must be a probability in (0, 1)")

    def probability(self, features: RefusalFeatures) -> float:
        """The logistic model's probability that the index cannot answer."""
        z = self.intercept + sum(w * x for w, x in zip(self.weights, features.values(),
                                                       strict=True))
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def refuses(self, features: RefusalFeatures) -> bool:
        return self.probability(features) >= self.threshold


@dataclass(frozen=True)
class RefusalSignals:
    """The retrieval's evidence for one question, and the decision taken on it."""

    coverage: float  # recorded, not deciding: the passages' share of the question's words
    evidence: float  # recorded, not deciding: the best evidence sentence's similarity
    refuse: bool
    similarity: float = 0.0  # the best passage's cosine similarity with the question
    by: str | None = None  # "retrieval", "model" or None (answered)
    missing: tuple[str, ...] = ()  # the question's content words no passage holds
    mean_similarity: float = 0.0
    title_coverage: float = 0.0
    probability: float | None = None  # the policy's P(cannot answer); None: not computed

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


def read_once(term_counts: TermCounts | None) -> TermCounts | None:
    """``term_counts`` remembering its answers, so one decision asks the index once."""
    if term_counts is None:
        return None
    seen: dict[tuple[str, ...], tuple[Mapping[str, int], int]] = {}

    def counts(words: Sequence[str]) -> tuple[Mapping[str, int], int]:
        key = tuple(words)
        if key not in seen:
            seen[key] = term_counts(words)
        return seen[key]
    return counts


def features_of(question: str, titles: Sequence[str], similarities: Sequence[float],
                term_counts: TermCounts | None = None) -> RefusalFeatures:
    """The decision's features from what the retriever returned: the passages' titles (with
    their headings) and cosine similarities with the question (at least one)."""
    if not similarities:
        raise ValueError("features_of needs the similarity of at least one passage")
    title_cov, _ = coverage(question, titles, term_counts)
    return RefusalFeatures(float(max(similarities)),
                           float(sum(similarities) / len(similarities)), title_cov)


def decide(question: str, passages: Sequence[str], titles: Sequence[str],
           similarities: Sequence[float] | None, best_evidence: float | None,
           policy: RefusalPolicy, term_counts: TermCounts | None = None) -> RefusalSignals:
    """The refusal decision for ``question`` over the texts shown with it (``passages``: each
    passage's text, title and heading; ``titles``: its title and heading; ``similarities``:
    the passages' cosine with the question, None when the retriever gives none, which then
    refuses only an empty retrieval)."""
    if not passages:
        return RefusalSignals(0.0, 0.0, True, 0.0, "retrieval", tuple(question_terms(question)))
    term_counts = read_once(term_counts)
    cov, missing = coverage(question, passages, term_counts)
    ev = float(best_evidence) if best_evidence is not None else 0.0
    if not similarities:
        return RefusalSignals(round(cov, 4), round(ev, 4), False, missing=tuple(missing))
    feats = features_of(question, titles, similarities, term_counts)
    prob = policy.probability(feats)
    refuse = prob >= policy.threshold
    return RefusalSignals(round(cov, 4), round(ev, 4), refuse, round(feats.similarity, 4),
                          "retrieval" if refuse else None, tuple(missing),
                          round(feats.mean_similarity, 4), round(feats.title_coverage, 4),
                          round(prob, 4))


def model_refused(text: str) -> bool:
    """The answer's first sentence says the passages do not answer the question."""
    first = re.split(r"(?<=[.!?])\s+|\n+", text.strip(), maxsplit=1)[0] if text.strip() else ""
    return bool(first) and bool(_MODEL_REFUSAL.search(first))


def term_counts_of(retriever: Any) -> TermCounts | None:
    """Our retriever's index word counts (``index.term_counts``), if it has them."""
    index = getattr(retriever, "index", None)
    fn = getattr(index, "term_counts", None) if index is not None else None
    return fn if callable(fn) else None
