"""What the chain returns: an :class:`Answer` with resolved citations, passages and the notice.

Also the one error type of the chain, :class:`AnswerError`, whose message carries the notice.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from langchain_core.documents import Document

from assistant.notice import ADVISORY_NOTICE, with_notice

# "[1]", "[1, 3]", "[2-4]", "[1][2]": numbers inside square brackets, lists and ranges allowed.
_CITATION = re.compile(r"\[(\d{1,3}(?:\s*(?:,|–|-|and)\s*\d{1,3})*)\]")
_NUMBER_OR_RANGE = re.compile(r"(\d{1,3})\s*(?:(?:–|-)\s*(\d{1,3}))?")

REFUSAL_TEXT = (
    "The indexed guidelines hold no passage relevant enough to this question, so no answer "
    "was generated. Try rephrasing the question, widening the source filter, or indexing "
    "guidelines that cover the topic."
)


def cited_numbers(text: str) -> list[int]:
    """The passage numbers cited in ``text``, in order of first appearance."""
    seen: list[int] = []
    for group in _CITATION.finditer(text):
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

    @classmethod
    def from_document(cls, number: int, doc: Document) -> Passage:
        meta = doc.metadata
        score = meta.get("score")
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
        )


@dataclass
class Citation:
    """A citation ``[number]`` resolved to its guideline."""

    number: int
    id: str
    title: str
    source: str
    url: str
    heading: str | None
    chunk_id: str | None
    cited_in_text: bool  # False: the model cited nothing; listed as the passages it was given

    @classmethod
    def from_passage(cls, p: Passage, cited_in_text: bool) -> Citation:
        return cls(p.number, p.id, p.title, p.source, p.url, p.heading, p.chunk_id, cited_in_text)


def resolve_citations(text: str, passages: list[Passage]) -> tuple[list[Citation], list[int]]:
    """(citations, unresolved numbers): ``[n]`` in ``text`` mapped to ``passages[n-1]``.

    When the text cites no valid passage, every passage given is listed with
    ``cited_in_text=False``: the answer was generated from those passages only.
    """
    by_number = {p.number: p for p in passages}
    numbers = cited_numbers(text)
    unresolved = [n for n in numbers if n not in by_number]
    cited = [Citation.from_passage(by_number[n], True) for n in numbers if n in by_number]
    if not cited:
        cited = [Citation.from_passage(p, False) for p in passages]
    return cited, unresolved


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

    def sources_text(self) -> str:
        """``Sources:`` then one line per citation: ``[n] Title (source) url``."""
        if not self.citations:
            return ""
        lines = ["Sources:"]
        for c in self.citations:
            line = f"[{c.number}] {c.title or c.id}"
            if c.heading and c.heading != c.title:
                line += f" — {c.heading}"
            if c.source:
                line += f" ({c.source})"
            if c.url:
                line += f" {c.url}"
            lines.append(line)
        if not any(c.cited_in_text for c in self.citations):
            lines.append("(the answer cites no passage by number; "
                         "these are the passages it was given)")
        return "\n".join(lines)

    def full_text(self) -> str:
        """The answer, its sources and the notice: what a reader is shown."""
        body = self.text.strip()
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
