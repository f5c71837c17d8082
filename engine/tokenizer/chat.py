"""Chat turn formats of the model families, as llama.cpp's built-in ones (``llama-chat.cpp``).

A format is picked by the vocabulary: the first one whose opening marker is a token of it.

* ``chatml`` (Qwen2/2.5/3, SmolLM2): ``<|im_start|>role\\ntext<|im_end|>\\n``;
* ``llama3`` (Llama-3.x and its fine-tunes): ``<|start_header_id|>role<|end_header_id|>\\n\\n``
  then the trimmed text and ``<|eot_id|>``;
* ``gemma`` (Gemma, MedGemma): ``<start_of_turn>role\\ntext<end_of_turn>\\n`` with the assistant's
  role called ``model``; Gemma has no system role: system text (trimmed) goes at the start of
  the next user turn, followed by a blank line.

Each format ends a generation prompt with the assistant's opening, and names the literal stop
strings that end an assistant turn (its end-of-turn marker and the next turn's opening; the
engine stops on the end-of-turn *token* anyway, as one of the vocabulary's end-of-generation
ids).  BOS is not written: the engine adds it when the vocabulary asks for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ROLES = ("system", "user", "assistant")


class ChatFormatError(ValueError):
    """A message list that cannot be rendered (unknown role, empty list)."""


@dataclass(frozen=True)
class ChatTurns:
    """One family's turn layout."""

    name: str
    start: str  # opens a turn; the vocabulary token that identifies the format
    header: str  # after ``start``: "{role}" and what separates it from the text
    end: str  # closes a turn (its first token is the end-of-turn marker)
    trim: bool = False  # the text is stripped of surrounding whitespace
    assistant_role: str = "assistant"
    system_in_user: bool = False  # no system role: system text opens the next user turn
    other_markers: tuple[str, ...] = ()  # other control texts of the format

    @property
    def end_marker(self) -> str:
        return self.end.strip()

    @property
    def stop(self) -> tuple[str, ...]:
        """Literal strings that end an assistant turn: end of turn, start of the next."""
        return (self.end_marker, self.start)

    @property
    def markers(self) -> tuple[str, ...]:
        """Every control text of the format (untrusted text must not contain them)."""
        return (self.start, self.end_marker, *self.other_markers)

    def opening(self, role: str) -> str:
        if role == "assistant":
            role = self.assistant_role
        return self.start + self.header.format(role=role)

    def render(
        self, messages: Sequence[tuple[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """``messages`` (``(role, text)`` pairs) as one prompt string."""
        check_messages(messages)
        parts: list[str] = []
        system = ""
        for role, text in messages:
            if self.trim:
                text = text.strip()
            if role == "system" and self.system_in_user:
                system += text.strip()
                continue
            if system and role == "user":
                text, system = f"{system}\n\n{text}", ""
            parts.append(f"{self.opening(role)}{text}{self.end}")
        if add_generation_prompt:
            parts.append(self.opening("assistant"))
        return "".join(parts)


CHATML = ChatTurns("chatml", "<|im_start|>", "{role}\n", "<|im_end|>\n")
LLAMA3 = ChatTurns(
    "llama3", "<|start_header_id|>", "{role}<|end_header_id|>\n\n", "<|eot_id|>", trim=True,
    other_markers=("<|end_header_id|>", "<|begin_of_text|>", "<|end_of_text|>", "<|eom_id|>"),
)  # fmt: skip
GEMMA = ChatTurns(
    "gemma", "<start_of_turn>", "{role}\n", "<end_of_turn>\n", trim=True,
    assistant_role="model", system_in_user=True,
)  # fmt: skip

# In detection order: the first whose ``start`` is a token of the vocabulary.
CHAT_TURNS: dict[str, ChatTurns] = {t.name: t for t in (CHATML, LLAMA3, GEMMA)}
ALL_MARKERS: tuple[str, ...] = tuple(
    dict.fromkeys(m for t in CHAT_TURNS.values() for m in t.markers)
)


def check_messages(messages: Sequence[tuple[str, str]]) -> None:
    if not messages:
        raise ChatFormatError("no messages to render")
    for role, _ in messages:
        if role not in ROLES:
            raise ChatFormatError(f"unknown chat role {role!r} (expected one of {ROLES})")


def chat_turns_for(tokenizer: object) -> ChatTurns | None:
    """The turn format whose opening marker is a token of ``tokenizer``'s vocabulary, if any
    (``tokenizer``: anything with ``token_id(text) -> int | None``)."""
    token_id = getattr(tokenizer, "token_id", None)
    if token_id is None:
        return None
    return next((t for t in CHAT_TURNS.values() if token_id(t.start) is not None), None)
