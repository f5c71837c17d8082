"""What the page needs from the assistant, as plain values: where ``ui`` meets ``assistant``.

The page (``ui/app.py``) only sees the small interface below: :class:`Services` opens an index
and loads a model (both wrapped in ``st.cache_resource`` by the page), then streams an answer as
text pieces followed by one :class:`Reply`.  :class:`AssistantServices` implements it over the
assistant package's public API; layout tests may pass a fake.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from assistant.notice import ADVISORY_NOTICE


class SetupProblem(Exception):
    """The page cannot answer yet; ``message`` says what is wrong and how to fix it."""

    kind = "setup"

    def __init__(self, message: str, value: object = None, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.value = value  # the index folder or model spec at fault
        self.fix = fix  # the command that fixes it, shown copyable


class NoIndex(SetupProblem):
    kind = "no-index"


class IndexUnusable(NoIndex):
    """An index folder that is there but cannot be used (damaged, another embedding model)."""

    kind = "index-unusable"


class ModelMissing(SetupProblem):
    kind = "model-missing"


@dataclass(frozen=True)
class Options:
    """The sidebar's settings for one question."""

    k: int
    temperature: float
    max_tokens: int
    sources: tuple[str, ...] = ()  # empty: every source
    history: tuple[str, ...] = ()  # the conversation's earlier search queries, oldest first


@dataclass(frozen=True)
class SourceView:
    """One numbered source under an answer: the cited document and the passage used."""

    number: int
    title: str
    source: str  # the source organisation's code in the corpus, e.g. "ngc", "cdc"
    url: str
    heading: str
    passage: str
    doc_id: str = ""
    kind: str = "cited"  # "cited" (the model wrote [n]), "matched" (quoted), "given", or
    # "closest" (a refusal's nearest passage, not relevant enough to answer)
    quote: str = ""  # for "matched": the answer's words found in the passage

    @property
    def cited_in_text(self) -> bool:
        return self.kind == "cited"


@dataclass(frozen=True)
class EvidenceView:
    """One evidence sentence: a sentence of a passage that best answers the question."""

    number: int  # the passage's number
    text: str
    title: str = ""
    source: str = ""
    passage: str = ""  # the whole passage, where the sentence is highlighted
    start: int = 0  # the sentence's place in ``passage``
    end: int = 0


@dataclass(frozen=True)
class EvidenceBlock:
    """What ``Services.ask`` may yield before the first text piece: the evidence sentences,
    shown above the answer as it streams."""

    sentences: tuple[EvidenceView, ...] = ()


@dataclass(frozen=True)
class Reply:
    """The end of a streamed answer: its text, its sources and the notice."""

    text: str
    sources: tuple[SourceView, ...] = ()
    notice: str = ADVISORY_NOTICE
    refused: bool = False  # nothing relevant was found; ``text`` says so
    error: str | None = None  # a generation error, shown under the partial text
    details: Mapping[str, Any] = field(default_factory=dict)  # timings, token counts
    evidence: tuple[EvidenceView, ...] = ()  # shown above the text
    unsupported_numbers: tuple[str, ...] = ()  # numbers of the text found in no passage
    unsupported_terms: tuple[str, ...] = ()  # drug-like words of the text found in no passage
    n_numbers: int = 0  # the numbers the text states
    markdown: str = ""  # "Download answer": the answer, sources, receipt and notice as Markdown
    receipt_json: str = ""  # the answer's receipt (assistant.receipt), for `replay`


@dataclass(frozen=True)
class IndexView:
    """An opened index (``handle``) and what the sidebar shows about it."""

    path: Path
    documents: int
    chunks: int
    sources: Mapping[str, int]  # source code -> documents from that source
    embedding_model: str
    handle: Any = None


@dataclass(frozen=True)
class ModelView:
    """A loaded engine model (``handle``) and what the sidebar shows about it."""

    spec: str  # the preset name or path the user chose
    path: Path
    quantization: str
    description: str = ""
    handle: Any = None


class Services(Protocol):
    """What the page calls; ``name`` keys the page's resource cache."""

    name: str

    def presets(self) -> Mapping[str, str]: ...  # preset name -> description

    def open_index(self, path: Path) -> IndexView: ...  # raises NoIndex

    def load_model(self, spec: str) -> ModelView: ...  # raises ModelMissing

    def ask(
        self, index: IndexView, model: ModelView, question: str, options: Options
    ) -> Iterator[str | EvidenceBlock | Reply]: ...  # [evidence], text pieces, one Reply
