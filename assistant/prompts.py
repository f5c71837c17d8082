"""The answering prompt: a system message, numbered guideline passages, the question.

The system message tells the model to answer only from the numbered passages and to cite
them as [1], [2].  Passages are fitted to the model's context by token count — the rendered
prompt plus the answer budget never exceeds the context length — most relevant first: a
passage that does not fit is left out (a later, shorter one may still fit), and when not even
the most relevant passage fits whole, its beginning is kept.  Token counts come from a callable
(the engine's tokenizer in use; any ``str -> int`` in unit tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from langchain_core.documents import Document

from assistant.model.chat_format import ChatFormat, strip_markers

SYSTEM_PROMPT = (
    "You are a careful assistant for clinical guideline research. Answer the question using "
    "only the numbered guideline passages below. After each sentence, cite the passages it "
    "comes from with their numbers in square brackets, such as [1] or [2]. If none of the "
    "passages is about the question, say that the guidelines provided do not answer the "
    "question. Do not use outside knowledge "
    "and do not give personal medical advice."
)

# Restated after the question, where a small model's attention is: the system message's rule
# on citing, briefly (measured in docs/assistant.md, "Citation rate").
CITATION_REMINDER = (
    "Answer from the passages above and cite each one you use by its number, like [1].")
DEFAULT_REMINDER: str | None = CITATION_REMINDER  # None: the question ends the user turn
NO_PASSAGES_TEXT = "(no passages)"
MIN_TRUNCATED_CHARS = 200  # a truncated passage shorter than this is not worth sending

TokenCounter = Callable[[str], int]


class PromptTooLong(ValueError):
    """The question alone (with the system message and answer budget) exceeds the context."""

    def __init__(self, n_tokens: int, budget: int) -> None:
        self.n_tokens = n_tokens
        self.budget = budget
        super().__init__(
            f"the question needs {n_tokens} prompt tokens but only {budget} are available "
            "(context length minus the answer budget); shorten the question or lower max_tokens"
        )


def passage_source(doc: Document) -> str:
    """``Title — Heading (source)``: where a passage comes from."""
    meta = doc.metadata
    title = str(meta.get("title") or "Untitled guideline")
    heading = meta.get("heading")
    source = meta.get("source")
    line = title
    if heading and str(heading) != title:
        line += f" — {heading}"
    if source:
        line += f" ({source})"
    return strip_markers(line)


def format_passages(passages: Sequence[Document]) -> str:
    """Each passage as ``[n] text`` with ``(from: Title — Heading (source))`` below it.

    The number opens the passage and its origin follows it: with the origin above the text as a
    header line, the default model mostly answered by listing those header lines (titles)
    instead of using the text (measured in docs/assistant.md, "Citation rate").
    """
    if not passages:
        return NO_PASSAGES_TEXT
    blocks = [f"[{i}] {strip_markers(d.page_content.strip())}\n(from: {passage_source(d)})"
              for i, d in enumerate(passages, start=1)]
    return "\n\n".join(blocks)


def user_message(question: str, passages: Sequence[Document],
                 reminder: str | None = DEFAULT_REMINDER) -> str:
    """The passages, the question and, when given, ``reminder`` after the question."""
    text = (f"Guideline passages:\n\n{format_passages(passages)}\n\n"
            f"Question: {strip_markers(question.strip())}")
    return f"{text}\n\n{reminder}" if reminder else text


def rag_messages(question: str, passages: Sequence[Document], system: str = SYSTEM_PROMPT,
                 reminder: str | None = DEFAULT_REMINDER) -> list[tuple[str, str]]:
    """The conversation to send: ``[("system", ...), ("user", passages + question)]``."""
    return [("system", system), ("user", user_message(question, passages, reminder))]


def render_rag_prompt(question: str, passages: Sequence[Document],
                      chat_format: ChatFormat | None = None, system: str = SYSTEM_PROMPT) -> str:
    """The whole prompt string in the model's chat format (ChatML by default)."""
    return (chat_format or ChatFormat()).render(rag_messages(question, passages, system))


@dataclass
class FittedPrompt:
    """The passages that fit, in citation order, and what it cost."""

    passages: list[Document]
    n_prompt_tokens: int
    budget: int  # context length minus the answer budget
    dropped: list[Document] = field(default_factory=list)
    truncated: bool = False


def fit_passages(
    question: str,
    passages: Sequence[Document],
    count_tokens: TokenCounter,
    n_ctx: int,
    max_tokens: int,
    render: Callable[[str, Sequence[Document]], str] = render_rag_prompt,
) -> FittedPrompt:
    """Keep the most relevant passages whose prompt fits ``n_ctx - max_tokens`` tokens."""
    budget = n_ctx - max_tokens
    base = count_tokens(render(question, []))
    if base > budget:
        raise PromptTooLong(base, budget)
    chosen: list[Document] = []
    dropped: list[Document] = []
    for doc in passages:
        trial = [*chosen, doc]
        if count_tokens(render(question, trial)) <= budget:
            chosen = trial
        else:
            dropped.append(doc)
    truncated = False
    if not chosen and passages:
        head = _truncate_to_fit(question, passages[0], count_tokens, budget, render)
        if head is not None:
            chosen, truncated = [head], True
            dropped = dropped[1:]
    n_tokens = count_tokens(render(question, chosen))
    assert n_tokens <= budget
    return FittedPrompt(chosen, n_tokens, budget, dropped, truncated)


def _truncate_to_fit(question: str, doc: Document, count_tokens: TokenCounter, budget: int,
                     render: Callable[[str, Sequence[Document]], str]) -> Document | None:
    """The longest beginning of ``doc`` (cut at a word) whose prompt fits, or None."""
    text = doc.page_content
    lo, hi = 0, len(text)  # binary search on characters: lo fits (or is 0), hi does not
    while hi - lo > 16:
        mid = (lo + hi) // 2
        if count_tokens(render(question, [_with_text(doc, text[:mid])])) <= budget:
            lo = mid
        else:
            hi = mid
    cut = text[:lo].rsplit(" ", 1)[0] if " " in text[:lo] else text[:lo]
    if len(cut) < MIN_TRUNCATED_CHARS:
        return None
    head = _with_text(doc, cut + " …")
    if count_tokens(render(question, [head])) > budget:
        return None
    return head


def _with_text(doc: Document, text: str) -> Document:
    return Document(page_content=text, metadata={**doc.metadata, "truncated": True}, id=doc.id)
