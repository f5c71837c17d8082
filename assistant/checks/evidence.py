"""Evidence sentences: the sentences of the shown passages that best answer the question.

Shown above the model's text, each with its passage number, so an answer always starts from
the sources' own words, whatever the model then writes.  The rule:

    Every sentence of every numbered passage (split as :func:`assistant.checks.attribution.
    sentence_spans` does; :data:`MIN_WORDS` to :data:`MAX_WORDS` words) is scored by the
    cosine similarity of its embedding and the question's, with the index's own embedding
    model.  The best :data:`MAX_SENTENCES` whose score is within :data:`WITHIN` of the best
    are kept, at least :data:`MIN_SENTENCES` when there are that many; a sentence already
    kept (overlapping chunks repeat text) is not repeated.

Each carries where it sits in its passage (``start``, ``end``), so the page highlights it
there.  The index stores sentence vectors too, but without their character offsets, so the
sentences are embedded again here (a few dozen short texts per question).  Without an
embedding model (a retriever that is not ours) the score is the share of the question's
content words the sentence holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from bm25s.stopwords import STOPWORDS_EN_PLUS

from assistant.checks.attribution import CITATION_MARKER, longest_shared_run, sentence_spans

MIN_WORDS = 5
MAX_WORDS = 80
MAX_SENTENCES = 4
MIN_SENTENCES = 2
WITHIN = 0.15  # cosine below the best sentence's within which a sentence is still shown
OVERLAP_MIN_WORDS = 8  # evidence "overlaps" a text: this many consecutive words in common

Embed = Callable[[Sequence[str]], np.ndarray]  # texts -> (n, dim) unit vectors
_WORD = re.compile(r"\w+")
_STOP = frozenset(STOPWORDS_EN_PLUS)  # the lexical search's stop words


@dataclass(frozen=True)
class EvidenceSentence:
    """One sentence of a shown passage, scored against the question."""

    number: int  # the passage's number, as the model saw it
    text: str
    start: int  # where the sentence is in the passage's text
    end: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _candidates(passages: Sequence[tuple[int, str]]) -> list[EvidenceSentence]:
    out: list[EvidenceSentence] = []
    for number, text in passages:
        for a, b in sentence_spans(text):
            words = _WORD.findall(text[a:b])
            if MIN_WORDS <= len(words) <= MAX_WORDS:
                out.append(EvidenceSentence(number, text[a:b], a, b, 0.0))
    return out


def content_words(text: str) -> list[str]:
    """The lower-cased words of ``text`` minus English stop words, each once."""
    words = [w.lower() for w in _WORD.findall(text)]
    return list(dict.fromkeys(w for w in words if w not in _STOP and len(w) > 1))


def lexical_scores(question: str, sentences: Sequence[str]) -> np.ndarray:
    """The share of the question's content words each sentence holds, (n,)."""
    q = content_words(question)
    if not q:
        return np.zeros(len(sentences), dtype=np.float32)
    return np.asarray([len(set(q) & set(content_words(s))) / len(q) for s in sentences],
                      dtype=np.float32)


def select_evidence(question: str, passages: Sequence[tuple[int, str]],
                    embed: Embed | None = None) -> list[EvidenceSentence]:
    """The evidence sentences of ``passages`` ((number, text) pairs), best first."""
    found = _candidates(passages)
    if not found:
        return []
    texts = [CITATION_MARKER.sub(" ", s.text) for s in found]
    if embed is not None:
        vectors = np.asarray(embed([question, *texts]), dtype=np.float32)  # (1 + n, dim)
        norms = np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
        vectors = vectors / norms[:, None]
        scores = vectors[1:] @ vectors[0]  # (n,)
    else:
        scores = lexical_scores(question, texts)
    order = sorted(range(len(found)), key=lambda i: (-float(scores[i]), i))
    best = float(scores[order[0]])
    kept: list[EvidenceSentence] = []
    seen: set[str] = set()
    for i in order:
        key = " ".join(_WORD.findall(found[i].text.lower()))
        if key in seen:
            continue
        if len(kept) >= MIN_SENTENCES and float(scores[i]) < best - WITHIN:
            break
        s = found[i]
        kept.append(EvidenceSentence(s.number, s.text, s.start, s.end, round(float(scores[i]), 4)))
        seen.add(key)
        if len(kept) == MAX_SENTENCES:
            break
    return kept


def overlaps(sentence: str, text: str, min_words: int = OVERLAP_MIN_WORDS) -> bool:
    """``sentence`` shares ``min_words`` consecutive words with ``text`` (all of its words,
    when it is shorter): how an evidence sentence is judged against a gold answer."""
    a = [w.lower() for w in _WORD.findall(sentence)]
    b = [w.lower() for w in _WORD.findall(text)]
    if not a:
        return False
    size, _ = longest_shared_run(a, b)
    return size >= min(min_words, len(a))


def embedder_of(retriever: Any) -> Embed | None:
    """The embedding function of our retriever's index (``index.embedder.embed``), if any."""
    index = getattr(retriever, "index", None)
    embedder = getattr(index, "embedder", None) if index is not None else None
    embed = getattr(embedder, "embed", None)
    return embed if callable(embed) else None


def evidence_text(evidence: Sequence[EvidenceSentence], titles: dict[int, str]) -> str:
    """``Evidence from the sources:`` then one line per sentence, ``[n] "…" (Title)``."""
    if not evidence:
        return ""
    lines = ["Evidence from the sources (the passages' own sentences, best first):"]
    for e in evidence:
        title = titles.get(e.number, "")
        lines.append(f"[{e.number}] \"{' '.join(e.text.split())}\"" + (f" ({title})" if title
                                                                        else ""))
    return "\n".join(lines)
