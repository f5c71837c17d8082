"""Quoted-text attribution: which numbered passages an answer reproduces, cited or not.

Small models often copy a passage's words without writing its ``[n]``.  So that such an answer
still shows where its text comes from, each sentence of the answer is compared with each
passage the model was given, and the rule is:

    A sentence *reproduces* a passage when the two share a run of at least
    ``MATCH_MIN_WORDS`` (8) consecutive words.  Words are ``\\w+`` runs compared
    case-insensitively; punctuation, spacing and the answer's own ``[n]`` markers are
    ignored.  The sentence is attributed to the passage(s) with its longest such run
    (every passage tied at that length, e.g. overlapping chunks of one guideline).
    A run that the question itself holds (the answer echoing the question, whose words
    the passage may share) is not evidence of use and does not count.

Sentences end at ``.``, ``!`` or ``?`` followed by white space (not after a single letter, so
``U.S.`` and ``e.g.`` do not end one) and at line breaks.  The rule is deterministic and only
reads text: it never changes the answer.  Its limits: it finds copying, not paraphrase; and
eight words of boilerplate shared by several passages (a long organisation name) can match
each of them.  The chain reports such passages as citations of kind ``"matched"``, apart from
the ``"cited"`` ones the model wrote itself (:mod:`assistant.answer`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

MATCH_MIN_WORDS = 8  # consecutive words a sentence must share with a passage to reproduce it

_WORD = re.compile(r"\w+")
# "[1]", "[1, 3]", "[2-4]": the answer's own citation markers, ignored when matching text
CITATION_MARKER = re.compile(r"\[(\d{1,3}(?:\s*(?:,|–|-|and)\s*\d{1,3})*)\]")
# a sentence ends after .!? that follows two word characters or a closing bracket or quote
_SENTENCE_END = re.compile(r"(?:(?<=\w\w[.!?])|(?<=[)\]\"'”][.!?]))\s+|\n+")


@dataclass(frozen=True)
class Match:
    """One sentence of the answer found in one passage."""

    number: int  # the passage's number, as the model saw it
    sentence: int  # the sentence's position in the answer (0-based)
    quote: str  # the shared words as the answer writes them
    n_words: int  # how many consecutive words are shared


def answer_sentences(text: str) -> list[str]:
    """``text`` cut into sentences (see the module docstring), blank ones left out."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) in ``text`` of each sentence :func:`answer_sentences` finds, blank ones
    left out, ends trimmed of white space."""
    spans, start = [], 0
    for m in [*_SENTENCE_END.finditer(text), None]:
        end = m.start() if m is not None else len(text)
        piece = text[start:end]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            spans.append((start + lead, start + len(piece.rstrip())))
        if m is not None:
            start = m.end()
    return spans


def _words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The lower-cased words of ``text`` and where each one is in it."""
    found = list(_WORD.finditer(text))
    return [m.group().lower() for m in found], [m.span() for m in found]


def longest_shared_run(a: list[str], b: list[str]) -> tuple[int, int]:
    """(length, start in ``a``) of the longest run of consecutive words found in both."""
    if not a or not b:
        return 0, 0
    m = difflib.SequenceMatcher(None, a, b, autojunk=False).find_longest_match(
        0, len(a), 0, len(b))
    return m.size, m.a


def _holds_run(haystack: list[str], run: list[str]) -> bool:
    """``run`` occurs in ``haystack`` as consecutive words."""
    return bool(run) and f" {' '.join(run)} " in f" {' '.join(haystack)} "


def match_passages(text: str, passages: Mapping[int, str], min_words: int = MATCH_MIN_WORDS,
                   question: str = "") -> list[Match]:
    """Every sentence of ``text`` that reproduces one of ``passages`` (number → text).

    In sentence order; within a sentence, tied passages in number order.  A run of words the
    ``question`` holds is not counted (see the module docstring).
    """
    if min_words < 1:
        raise ValueError(f"min_words must be at least 1, got {min_words}")
    passage_words = {n: _words(t)[0] for n, t in sorted(passages.items())}
    question_words = _words(question)[0]
    matches: list[Match] = []
    for i, sentence in enumerate(answer_sentences(text)):
        clean = CITATION_MARKER.sub(" ", sentence)
        words, spans = _words(clean)
        if len(words) < min_words:
            continue
        runs = {n: longest_shared_run(words, pw) for n, pw in passage_words.items()}
        runs = {n: (0, 0) if _holds_run(question_words, words[start:start + size]) else
                (size, start) for n, (size, start) in runs.items()}
        best = max((size for size, _ in runs.values()), default=0)
        if best < min_words:
            continue
        for n, (size, start) in runs.items():
            if size == best:
                quote = clean[spans[start][0]:spans[start + size - 1][1]]
                matches.append(Match(n, i, " ".join(quote.split()), size))
    return matches
