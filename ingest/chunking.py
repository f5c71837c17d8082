"""Structure-following chunking, bounded in tokens of the embedding model's own tokenizer.

A document's ``clean_text`` is read as sections (``#`` headings), paragraphs (blank lines), lines
(``- `` bullets and line breaks) and sentences. Chunks never cross a heading, prefer to end at a
paragraph, then a line, then a sentence end, and start with a small overlap of whole sentences from
the previous chunk. Every chunk is a span ``clean_text[start:end]``; the text that is embedded and
indexed lexically is that span after a one-line context (title › heading path), and its length
including the model's special tokens never exceeds ``max_tokens``: the embedder never truncates.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

# Break strengths: where a chunk may end, strongest first.
PARAGRAPH, LINE, SENTENCE, PIECE = 3, 2, 1, 0
CONTEXT_SEPARATOR = " › "
# Implicit headings: at most this many words and characters, one level below ``######``.
IMPLICIT_HEADING_WORDS = 8
IMPLICIT_HEADING_CHARS = 80
IMPLICIT_HEADING_LEVEL = 7
# At most this share of the token budget goes to the context line (title › headings).
CONTEXT_SHARE = 0.25
# A chunk ends at a weaker break only if the stronger one would leave it shorter than this share.
MIN_FILL = 0.5
# At most this many tokens of a subheading go into the context line.
SUBHEADING_TOKENS = 16

_LINE = re.compile(r"[^\n]*\n?")
_HEADING = re.compile(r"#{1,6}[ \t]+(\S.*?)[ \t#]*")
_BULLET = re.compile(r"[ \t]*(?:[-*•▪◦]|\d{1,3}[.)])[ \t]+")
# A sentence ends after . ! ? (and closing quotes/brackets) followed by white space.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*[ \t]+(?=\S)")


@dataclass(frozen=True)
class ChunkingSettings:
    """How documents are cut; recorded in the index manifest (a change needs a new index)."""

    max_tokens: int = 256  # including the model's special tokens; <= the model's max length
    overlap_tokens: int = 32  # whole sentences carried over from the previous chunk
    context: bool = True  # prefix "title › heading path" to the embedded and lexical text
    # short stand-alone title lines open sub-sections (off: it lowered passage hit@1 on the dev
    # questions, 0.73 -> 0.65 dense, by cutting passages into small, misleadingly titled pieces)
    implicit_headings: bool = False
    # consecutive heading sections of fewer body tokens than this are chunked together (one-line
    # boilerplate such as "Guideline Status" is then never a chunk of its own); 0: off (indexes
    # built before it existed). On by default: no loss on the even dev half (docs/retrieval.md)
    min_section_tokens: int = 64
    # the last short stand-alone title line before a chunk (e.g. "Treatment") joins its context
    # line, without cutting the section there (see :func:`_is_implicit_heading`)
    subheadings: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ChunkingSettings:
        return cls(
            max_tokens=int(data["max_tokens"]),
            overlap_tokens=int(data["overlap_tokens"]),
            context=bool(data["context"]),
            implicit_headings=bool(data.get("implicit_headings", False)),
            min_section_tokens=int(data.get("min_section_tokens", 0)),
            subheadings=bool(data.get("subheadings", False)),
        )


@dataclass(frozen=True, slots=True)
class Chunk:
    """A span of one document's ``clean_text`` and what is known of its place in it."""

    doc_id: str
    index: int
    start: int
    end: int
    text: str  # clean_text[start:end]
    heading: str  # heading path, " › "-joined ("" before the first heading)
    context: str  # the context line embedded before the text ("" when disabled)
    token_ids: np.ndarray | None = None  # ids of embed_text with special tokens (the model's)
    # (n_parts, 2) token ranges [a, b) in token_ids of the chunk's sentences (its parts, see
    # ``embedding.Embedder.embed_ids``): each part is pooled with the context tokens around it
    parts: np.ndarray | None = None
    n_lead: int = 0  # tokens before the text in token_ids ([CLS] and the context line)

    @property
    def n_tokens(self) -> int:
        return 0 if self.token_ids is None else len(self.token_ids)

    @property
    def embed_text(self) -> str:
        return f"{self.context}\n{self.text}" if self.context else self.text


@dataclass(slots=True)
class _Unit:
    start: int
    end: int
    strength: int  # the break strength before this unit


@dataclass(slots=True)
class _Section:
    headings: tuple[str, ...]
    units: list[_Unit] = field(default_factory=list)
    # (start offset, text) of the short stand-alone title lines inside the section
    subheads: list[tuple[int, str]] = field(default_factory=list)


class TokenCounter:
    """Token ids and offsets from a ``tokenizers.Tokenizer`` (its truncation and padding off)."""

    def __init__(self, tokenizer) -> None:
        tok = tokenizer.__class__.from_str(tokenizer.to_str())
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok
        plain = tok.encode("a", add_special_tokens=False).ids
        full = tok.encode("a", add_special_tokens=True).ids
        at = next((i for i in range(len(full)) if full[i : i + len(plain)] == plain), 0)
        self.prefix = np.asarray(full[:at], dtype=np.int64)  # e.g. [CLS]
        self.suffix = np.asarray(full[at + len(plain) :], dtype=np.int64)  # e.g. [SEP]
        self.n_special = len(self.prefix) + len(self.suffix)

    def encode(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per text: token start offsets, end offsets and ids, without special tokens."""
        out = []
        for enc in self._tok.encode_batch(list(texts), add_special_tokens=False):
            offs = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)  # (n_tokens, 2)
            out.append((offs[:, 0].copy(), offs[:, 1].copy(), np.asarray(enc.ids, dtype=np.int64)))
        return out

    def encode_one(self, text: str) -> np.ndarray:
        """Ids of one short text, without special tokens."""
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def with_special(self, *parts: np.ndarray) -> np.ndarray:
        return np.concatenate([self.prefix, *parts, self.suffix])

    def ids(self, texts: Sequence[str], max_tokens: int) -> list[np.ndarray]:
        """Ids with special tokens, at most ``max_tokens`` (the text is cut beyond)."""
        room = max_tokens - self.n_special
        return [self.with_special(ids[:room]) for _, _, ids in self.encode(texts)]

    def truncate(self, text: str, n_tokens: int) -> str:
        """The longest prefix of ``text`` made of at most ``n_tokens`` tokens."""
        offs = self._tok.encode(text, add_special_tokens=False).offsets
        return text if len(offs) <= n_tokens else text[: offs[n_tokens - 1][1]].rstrip()


def _sentences(text: str, start: int, end: int, strength: int) -> list[_Unit]:
    units, pos = [], start
    for m in _SENTENCE_END.finditer(text, start, end):
        units.append(_Unit(pos, m.start(), strength))
        pos, strength = m.end(), SENTENCE
    units.append(_Unit(pos, end, strength))
    return [u for u in units if u.end > u.start]


def _is_implicit_heading(lines: list[tuple[int, str]], i: int) -> bool:
    """A title line that lost its markup: a short stand-alone paragraph without end punctuation,
    followed by a blank line and more text (e.g. "Treatment", "Physician Diagnosis")."""
    text = lines[i][1].strip()
    if (
        len(text) > IMPLICIT_HEADING_CHARS
        or len(text.split()) > IMPLICIT_HEADING_WORDS
        or text[-1] in ".!?;,)"
        or ":" in text
        or not text[0].isupper()
        or _BULLET.match(text)
    ):
        return False
    if i + 2 >= len(lines) or lines[i + 1][1].strip():
        return False
    nxt = next((lines[j][1] for j in range(i + 2, len(lines)) if lines[j][1].strip()), None)
    return nxt is not None and not _HEADING.fullmatch(nxt)


def parse_sections(
    text: str, implicit_headings: bool = True, subheadings: bool = False
) -> list[_Section]:
    """Split a document into heading sections of sentence units with their break strengths.

    ``#`` headings set the heading path; with ``implicit_headings``, a short stand-alone title
    line (see :func:`_is_implicit_heading`) opens a sub-section below the current ``#`` heading;
    with ``subheadings`` instead, such lines are only recorded (``_Section.subheads``).
    """
    sections = [_Section(())]
    stack: list[tuple[int, str]] = []
    pending = PARAGRAPH
    lines = [(m.start(), m.group().rstrip("\n")) for m in _LINE.finditer(text) if m.group()]
    for i, (line_start, line) in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            pending = PARAGRAPH
            continue
        heading = _HEADING.fullmatch(line)
        level, title = 0, ""
        if heading:
            level, title = len(line) - len(line.lstrip("#")), heading.group(1).strip()
        elif (implicit_headings or subheadings) and pending == PARAGRAPH and _is_implicit_heading(
            lines, i
        ):
            if implicit_headings:
                level, title = IMPLICIT_HEADING_LEVEL, stripped
            else:
                lead = len(line) - len(line.lstrip())
                sections[-1].subheads.append((line_start + lead, stripped))
        if level:
            stack = [(lv, h) for lv, h in stack if lv < level] + [(level, title)]
            sections.append(_Section(tuple(h for _, h in stack)))
            pending = PARAGRAPH
            continue
        bullet = _BULLET.match(line)
        strength = max(pending, PARAGRAPH if bullet else LINE)
        lead = len(line) - len(line.lstrip())
        a, b = line_start + lead, line_start + len(line.rstrip())
        sections[-1].units.extend(_sentences(text, a, b, strength))
        pending = PARAGRAPH if bullet else LINE
    return [s for s in sections if s.units]


class Chunker:
    """Cuts documents into chunks of at most ``settings.max_tokens`` tokens of the model."""

    def __init__(self, counter: TokenCounter, settings: ChunkingSettings) -> None:
        if settings.max_tokens <= counter.n_special + 8:
            raise ValueError(f"max_tokens {settings.max_tokens} leaves no room for text")
        self.counter = counter
        self.settings = settings

    def chunk(self, doc_id: str, text: str, title: str | None = None) -> list[Chunk]:
        return self.chunk_many([(doc_id, text, title)])[0]

    def chunk_many(self, docs: Sequence[tuple[str, str, str | None]]) -> list[list[Chunk]]:
        """Chunks of several documents (tokenized together in one batch)."""
        encoded = self.counter.encode([text for _, text, _ in docs])
        return [
            self._chunk_doc(doc_id, text, title, *enc)
            for (doc_id, text, title), enc in zip(docs, encoded, strict=True)
        ]

    def _context(
        self, title: str | None, headings: tuple[str, ...], subheading: str = ""
    ) -> tuple[str, np.ndarray]:
        empty = np.zeros(0, dtype=np.int64)
        if not self.settings.context:
            return "", empty
        parts = [p for p in ((title or "").strip(), *headings) if p]
        line = " ".join(CONTEXT_SEPARATOR.join(parts).split())
        cap = int(self.settings.max_tokens * CONTEXT_SHARE)
        if line:
            ids = self.counter.encode_one(line)
            if len(ids) > cap:
                line = self.counter.truncate(line, cap)
        if subheading:
            sub = self.counter.truncate(" ".join(subheading.split()), SUBHEADING_TOKENS)
            line = f"{line}{CONTEXT_SEPARATOR}{sub}" if line else sub
            cap += SUBHEADING_TOKENS + 1  # the separator and the subheading
        if not line:
            return "", empty
        ids = self.counter.encode_one(line)
        return line, ids[:cap]

    def _sections(self, text: str, count) -> list[_Section]:
        """The document's heading sections; with ``min_section_tokens``, runs of consecutive
        small sections merged into one (their common heading path, their headings kept as text)."""
        sections = parse_sections(
            text, self.settings.implicit_headings, self.settings.subheadings
        )
        small = self.settings.min_section_tokens
        if small <= 0:
            return sections
        out: list[_Section] = []
        run: list[_Section] = []

        def flush() -> None:
            if len(run) == 1:
                out.append(run[0])
            elif run:
                common = run[0].headings
                for sec in run[1:]:
                    n = 0
                    while n < min(len(common), len(sec.headings)) and common[n] == sec.headings[n]:
                        n += 1
                    common = common[:n]
                units = [u for sec in run for u in sec.units]
                subheads = [h for sec in run for h in sec.subheads]
                out.append(_Section(common, units, subheads))
            run.clear()

        for sec in sections:
            if count(sec.units[0].start, sec.units[-1].end) < small:
                run.append(sec)
            else:
                flush()
                out.append(sec)
        flush()
        return out

    def _chunk_doc(self, doc_id, text, title, starts, ends, ids) -> list[Chunk]:
        starts, ends = starts.tolist(), ends.tolist()  # bisect is fastest on lists

        def count(a: int, b: int) -> int:
            return bisect.bisect_right(ends, b) - bisect.bisect_left(starts, a)

        chunks: list[Chunk] = []
        for section in self._sections(text, count):
            context, ctx_ids = self._context(title, section.headings)
            subheads = section.subheads if self.settings.subheadings else []
            reserve = 0
            if subheads:  # room for the longest subheading's context line
                reserve = max(
                    len(self._context(title, section.headings, h)[1]) for _, h in subheads
                ) - len(ctx_ids)
            budget = self.settings.max_tokens - self.counter.n_special - len(ctx_ids) - reserve
            units = _split_long(text, section.units, budget, count, starts, ends)
            heading = CONTEXT_SEPARATOR.join(section.headings)
            unit_starts = [u.start for u in units]
            sub_starts = [p for p, _ in subheads]
            for a, b in _pack(units, budget, self.settings.overlap_tokens, count):
                c_line, c_ids = context, ctx_ids
                at = bisect.bisect_right(sub_starts, a) - 1  # the last subheading from a back
                if at >= 0 and sub_starts[at] < a:  # (one at a is in the chunk's text)
                    c_line, c_ids = self._context(title, section.headings, subheads[at][1])
                lead = len(self.counter.prefix) + len(c_ids)  # tokens before the body
                i0, i1 = bisect.bisect_left(starts, a), bisect.bisect_right(ends, b)
                token_ids = self.counter.with_special(c_ids, ids[i0:i1])
                assert len(token_ids) <= self.settings.max_tokens, (doc_id, a, b)
                parts = _part_ranges(units, unit_starts, (a, b), (starts, ends), i0, lead)
                chunks.append(
                    Chunk(
                        doc_id, len(chunks), a, b, text[a:b], heading, c_line, token_ids,
                        parts, lead,
                    )
                )
        return chunks


def _part_ranges(units: list[_Unit], unit_starts, span, offsets, i0: int, lead: int):
    """Token ranges (n, 2) in a chunk's token ids of its units (sentences, lines, pieces)."""
    (a, b), (starts, ends) = span, offsets
    lo = bisect.bisect_left(unit_starts, a)  # units are in text order
    out = []
    for u in units[lo:]:
        if u.start >= b:
            break
        j0, j1 = bisect.bisect_left(starts, u.start), bisect.bisect_right(ends, u.end)
        if j1 > j0:
            out.append((lead + j0 - i0, lead + j1 - i0))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def _split_long(text: str, units: list[_Unit], budget: int, count, starts, ends) -> list[_Unit]:
    """Cut units longer than the budget into pieces of at most ``budget`` tokens.

    A piece ends where white space follows if it can, else between a word and a punctuation mark,
    and only inside a word (a URL, a long code) when the budget leaves no other choice.
    """
    out: list[_Unit] = []
    for u in units:
        if count(u.start, u.end) <= budget:
            out.append(u)
            continue
        i0 = bisect.bisect_left(starts, u.start)
        i1 = bisect.bisect_right(ends, u.end)
        j, strength = i0, u.strength
        while j < i1:
            k = min(j + budget, i1)
            if k < i1:
                k = _best_cut(text, starts, ends, j, k)
            a = u.start if j == i0 else starts[j]
            b = u.end if k == i1 else ends[k - 1]
            out.append(_Unit(a, b, strength))
            j, strength = k, PIECE
    return out


def _best_cut(text: str, starts, ends, j: int, k: int) -> int:
    """The latest token index in (j + (k-j)//2, k] to cut before: white space, else a word edge."""
    low = j + max(1, (k - j) // 2)
    for good in (
        lambda m: starts[m] > ends[m - 1],
        lambda m: not (text[ends[m - 1] - 1].isalnum() and text[starts[m]].isalnum()),
    ):
        for m in range(k, low - 1, -1):
            if good(m):
                return m
    return k


def _pack(units: list[_Unit], budget: int, overlap: int, count) -> list[tuple[int, int]]:
    """Greedy packing of units into spans within the budget, cut at the strongest late break."""
    spans, i, n = [], 0, len(units)
    while i < n:
        j = i + 1
        while j < n and count(units[i].start, units[j].end) <= budget:
            j += 1
        cut = j
        if j < n:  # prefer the strongest break that keeps the chunk at least half full
            best = units[j].strength
            for m in range(j - 1, i, -1):
                if count(units[i].start, units[m - 1].end) < budget * MIN_FILL:
                    break
                if units[m].strength > best:
                    best, cut = units[m].strength, m
        spans.append((units[i].start, units[cut - 1].end))
        if cut >= n:
            break
        k = cut
        while (
            k - 1 > i
            and units[k - 1].strength >= PIECE
            and count(units[k - 1].start, units[cut - 1].end) <= overlap
        ):
            k -= 1
        i = k if k < cut and units[k].strength >= SENTENCE else cut
    return spans
