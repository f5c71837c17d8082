"""What the chain returns: an :class:`Answer` with resolved citations, passages and the notice.

A citation has a ``kind``: ``"cited"`` when the model wrote its ``[n]``; ``"matched"`` when the
model did not, but a sentence of the answer reproduces that passage
(:mod:`assistant.checks.attribution`: eight or more consecutive words in common); ``"given"``
when the answer neither cites nor reproduces any passage, so the passages it was given are
listed as such. The answer's text is the model's, unaltered: attribution only adds to the list
of citations.

Also the one error type of the chain, :class:`AnswerError`, whose message carries the notice.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from langchain_core.documents import Document

from assistant.checks.attribution import CITATION_MARKER, MATCH_MIN_WORDS, match_passages
from assistant.checks.evidence import EvidenceSentence, evidence_text
from assistant.checks.refusal import REFUSAL_TEXT as REFUSAL_TEXT
from assistant.notice import ADVISORY_NOTICE, with_notice

_NUMBER_OR_RANGE = re.compile(r"(\d{1,3})\s*(?:(?:–|-)\s*(\d{1,3}))?")

CitationKind = Literal["cited", "matched", "given"]
CITED: CitationKind = "cited"
MATCHED: CitationKind = "matched"
GIVEN: CitationKind = "given"
QUOTE_SHOWN_CHARS = 160  # a longer quote is shown cut, with "…" (the JSON keeps it whole)
KIND_LABELS: dict[str, str] = {  # how each kind is described to a reader
    CITED: "cited by the model",
    MATCHED: "matched by quoted text; not cited by the model",
    GIVEN: "given to the model; neither cited nor quoted",
}

UNSUPPORTED_MARK = "(not in sources)"  # written after a flagged number or term

REPETITION_NOTE = ("Generation was stopped: the answer began repeating itself "
                   "(the repetition guard); what it wrote before that is shown.")


def shorten(text: str, limit: int) -> str:
    """``text`` cut at a word to at most ``limit`` characters, ``…`` marking the cut."""
    if len(text) <= limit:
        return text
    return text[:limit - 1].rsplit(" ", 1)[0] + " …"


def cited_numbers(text: str) -> list[int]:
    """The passage numbers cited in ``text``, in order of first appearance."""
    seen: list[int] = []
    for group in CITATION_MARKER.finditer(text):
        for m in _NUMBER_OR_RANGE.finditer(group.group(1)):
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) else lo
            for n in range(lo, min(hi, lo + 50) + 1):
                if n not in seen:
                    seen.append(n)
    return seen


@dataclass
class Passage:
    """One guideline passage given to the model, numbered as the model saw it."""

    number: int
    id: str  # the guideline (document) id
    chunk_id: str | None
    title: str
    source: str
    url: str
    heading: str | None
    text: str
    score: float | None = None
    similarity: float | None = None  # cosine of question and passage (our retriever's)

    @classmethod
    def from_document(cls, number: int, doc: Document) -> Passage:
        meta = doc.metadata
        score = meta.get("score")
        similarity = meta.get("similarity")
        chunk_id = meta.get("chunk_id") or doc.id
        return cls(
            number=number,
            id=str(meta.get("id") or meta.get("doc_id") or doc.id or ""),
            chunk_id=str(chunk_id) if chunk_id else None,
            title=str(meta.get("title") or ""),
            source=str(meta.get("source") or ""),
            url=str(meta.get("url") or ""),
            heading=str(meta["heading"]) if meta.get("heading") else None,
            text=doc.page_content,
            score=float(score) if score is not None else None,
            similarity=float(similarity) if similarity is not None else None,
        )


@dataclass
class Citation:
    """A numbered passage the answer draws on, resolved to its guideline (see ``kind``)."""

    number: int
    id: str
    title: str
    source: str
    url: str
    heading: str | None
    chunk_id: str | None
    kind: CitationKind = CITED
    quote: str | None = None  # the answer's words found in this passage (longest run), if any

    @property
    def cited_in_text(self) -> bool:
        """The model wrote this passage's ``[n]``."""
        return self.kind == CITED

    @property
    def label(self) -> str:
        return KIND_LABELS[self.kind]

    @property
    def head(self) -> str:
        """``[n] Title — Heading (source)``: how sources are listed (CLI, Markdown download)."""
        line = f"[{self.number}] {self.title or self.id}"
        if self.heading and self.heading != self.title:
            line += f" — {self.heading}"
        if self.source:
            line += f" ({self.source})"
        return line

    @classmethod
    def from_passage(cls, p: Passage, kind: CitationKind, quote: str | None = None) -> Citation:
        return cls(p.number, p.id, p.title, p.source, p.url, p.heading, p.chunk_id, kind, quote)


def resolve_citations(text: str, passages: list[Passage], min_words: int = MATCH_MIN_WORDS,
                      question: str = "") -> tuple[list[Citation], list[int]]:
    """(citations, unresolved numbers) of an answer over the numbered ``passages``.

    First the ``[n]`` the text writes, in order (kind ``"cited"``); then the passages the text
    reproduces without citing them (kind ``"matched"``, :func:`match_passages`).  Each passage
    appears once, with the longest quote found in it.  When there is neither, every passage
    given is listed with kind ``"given"``: the answer was generated from those passages only.
    Words the answer echoes from ``question`` are not a match.
    """
    by_number = {p.number: p for p in passages}
    numbers = cited_numbers(text)
    unresolved = [n for n in numbers if n not in by_number]
    quotes: dict[int, tuple[int, str]] = {}  # number -> (words, quote), the longest per passage
    order: list[int] = []  # matched numbers, in order of first matching sentence
    for m in match_passages(text, {p.number: p.text for p in passages}, min_words,
                            question):
        if m.number not in order:
            order.append(m.number)
        if m.n_words > quotes.get(m.number, (0, ""))[0]:
            quotes[m.number] = (m.n_words, m.quote)
    cited = [n for n in numbers if n in by_number]
    citations = [Citation.from_passage(by_number[n], CITED, quotes.get(n, (0, None))[1])
                 for n in cited]
    citations += [Citation.from_passage(by_number[n], MATCHED, quotes[n][1])
                  for n in order if n not in cited]
    if not citations:
        citations = [Citation.from_passage(p, GIVEN) for p in passages]
    return citations, unresolved


@dataclass
class Answer:
    """An answer to one question, with its sources and the advisory notice."""

    question: str
    text: str  # the model's answer (or the refusal), without the notice
    citations: list[Citation]
    passages: list[Passage]
    refused: bool = False
    unresolved_citations: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    model: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notice: str = ADVISORY_NOTICE
    # what was searched when it differs from the question (a follow-up rewritten with the
    # conversation's previous query, see assistant/retrieval/followup.py); None: the question itself
    search_query: str | None = None
    receipt: dict[str, Any] | None = None  # what reproduces it (assistant.receipt)
    # the checks (assistant.checks.evidence, .number_guard, .term_guard, .refusal)
    evidence: list[EvidenceSentence] = field(default_factory=list)
    unsupported_numbers: list[str] = field(default_factory=list)
    unsupported_terms: list[str] = field(default_factory=list)
    n_numbers: int = 0  # quantities the answer states (numbers, ranges, ratios, dates)
    refusal: dict[str, Any] | None = None  # the refusal signals (RefusalSignals.to_dict())

    def evidence_text(self) -> str:
        """The evidence sentences, ``[n] "sentence" (Title)``, shown above the answer."""
        return evidence_text(self.evidence, {p.number: p.title for p in self.passages})

    def checks_text(self) -> str:
        """The guards' footer: numbers and drug names of the answer found in no source."""
        if self.refused and self.refusal and self.refusal.get("by") == "retrieval":
            return ""
        lines = []
        n = len(self.unsupported_numbers)
        if self.n_numbers:
            line = (f"Numbers not found in the sources: {n} of {self.n_numbers}"
                    if n else f"All {self.n_numbers} numbers were found in the sources.")
            if n:
                line += " — " + ", ".join(self.unsupported_numbers)
            lines.append(line)
        if self.unsupported_terms:
            lines.append(f"Drug names not found in the sources: {len(self.unsupported_terms)} — "
                         + ", ".join(self.unsupported_terms))
        return "\n".join(lines)

    def closest_text(self) -> str:
        """For a refusal by retrieval: the closest passages found, one line each."""
        lines = ["Closest sources found (not relevant enough to answer):"]
        for p in self.passages[:3]:
            lines.append(f"[{p.number}] {p.title or p.id}" + (f" ({p.source})" if p.source else "")
                         + (f" {p.url}" if p.url else ""))
        return "\n".join(lines) if self.passages else ""

    def status_note(self) -> str:
        """A sentence on how generation ended, when the reader should know (else "")."""
        return REPETITION_NOTE if self.finish_reason == "repetition" else ""

    def sources_text(self) -> str:
        """``Sources:`` then one line per citation: ``[n] Title (source) url``, its kind noted
        when the model did not cite it by number."""
        if self.refused and not self.citations:
            return self.closest_text()
        if not self.citations:
            return ""
        lines = ["Sources:"]
        for c in self.citations:
            line = c.head
            if c.url:
                line += f" {c.url}"
            if c.kind == MATCHED:
                line += f"\n    {c.label}: \"{shorten(c.quote or '', QUOTE_SHOWN_CHARS)}\""
            lines.append(line)
        if any(c.kind == MATCHED for c in self.citations):
            lines.append(f"(matched: a sentence of the answer shares {MATCH_MIN_WORDS} or more "
                         "consecutive words with that passage; the answer is shown as the model "
                         "wrote it)")
        if any(c.kind == GIVEN for c in self.citations):
            lines.append("(the answer neither cites a passage by number nor quotes one; "
                         "these are the passages it was given)")
        quoted = self._evidence_only()
        for p in quoted:  # every [n] shown above resolves to a source
            lines.append(Citation.from_passage(p, GIVEN).head + (f" {p.url}" if p.url else ""))
        if quoted:
            lines.append(f"({', '.join(f'[{p.number}]' for p in quoted)}: quoted in the evidence "
                         "above; the answer does not draw on it)")
        return "\n".join(lines)

    def _evidence_only(self) -> list[Passage]:
        """The passages an evidence sentence quotes that are not among the citations."""
        listed = {c.number for c in self.citations}
        quoted = {e.number for e in self.evidence}
        return [p for p in self.passages if p.number in quoted and p.number not in listed]

    def full_text(self) -> str:
        """The answer, its sources and the notice: what a reader is shown."""
        body = self.text.strip()
        if self.status_note():
            body = f"{body}\n\n({self.status_note()})"
        evidence = self.evidence_text()
        if evidence:
            body = f"{evidence}\n\n{body}"
        checks = self.checks_text()
        if checks:
            body = f"{body}\n\n{checks}"
        sources = self.sources_text()
        if sources:
            body = f"{body}\n\n{sources}"
        return with_notice(body)

    def __str__(self) -> str:
        return self.full_text()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the CLI's ``--json`` output)."""
        data = asdict(self)
        data["answer"] = data.pop("text")
        for c, d in zip(self.citations, data["citations"], strict=True):
            d["label"] = c.label
            d["cited_in_text"] = c.cited_in_text  # kept for readers of the earlier JSON
        return data


class AnswerError(RuntimeError):
    """The chain could not answer; ``str(error)`` ends with the advisory notice."""

    def __init__(self, message: str, question: str | None = None) -> None:
        self.message = message
        self.question = question
        self.notice = ADVISORY_NOTICE
        super().__init__(with_notice(message))

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "error": self.message, "notice": self.notice}
