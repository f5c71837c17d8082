"""Chat messages → one prompt string, in the model's chat format.

The turn layouts of the families are the engine's (``engine.tokenizer.chat``, as llama.cpp's
built-in formats): ChatML (Qwen, SmolLM2), Llama-3 headers, Gemma turns (no system role: the
system text opens the first user turn).  A model gets the layout whose opening marker is a
token of its vocabulary; without one (a Llama-2 vocabulary, e.g. Meditron's fine-tunes) it gets
ChatML as plain text, which the engine tokenizes as text and matches as literal stop strings.
When a GGUF carries a ``tokenizer.chat_template``, it is rendered in Jinja's *sandbox* (a
template from a file never runs code); a template that does not render falls back to the
built-in layout.  Stop strings are the layout's end-of-turn marker and next-turn opening
(``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``) plus the model's EOS text.

Untrusted text (questions, passages, prior messages) has every family's turn markers removed,
and with a model's format the texts of all its special tokens (``<|endoftext|>``, ``</s>``, ...),
until none is left (removing one cannot join the pieces of another): the engine tokenizes the
prompt with special tokens parsed, so a document cannot open or close a turn or end the prompt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.tokenizer.chat import (
    ALL_MARKERS,
    CHAT_TURNS,
    CHATML,
    ROLES,
    ChatFormatError,
    ChatTurns,
    chat_turns_for,
    check_messages,
)

IM_START = CHATML.start
IM_END = CHATML.end_marker
CHATML_STOP: tuple[str, ...] = CHATML.stop

__all__ = [
    "CHATML_STOP", "CHAT_TURNS", "IM_END", "IM_START", "ROLES", "ChatFormat", "ChatFormatError",
    "chat_format_for", "render_chatml", "strip_markers",
]  # fmt: skip


_MARKERS = re.compile("|".join(re.escape(m) for m in sorted(ALL_MARKERS, key=len, reverse=True)))


def strip_markers(text: str, markers: Sequence[str] = ()) -> str:
    """``text`` without any family's turn markers and without ``markers`` (a model's
    special-token texts), so it cannot forge a turn.

    Removal repeats until none is left: ``<|im_<|im_end|>start|>`` does not become a marker.
    """
    extra = [m for m in markers if m]
    while True:
        stripped = _MARKERS.sub("", text)
        for m in extra:
            stripped = stripped.replace(m, "")
        if stripped == text:
            return text
        text = stripped


def _clean(messages: Sequence[tuple[str, str]],
           markers: Sequence[str] = ()) -> list[tuple[str, str]]:
    check_messages(messages)
    return [(role, strip_markers(text, markers)) for role, text in messages]


def render_chatml(messages: Sequence[tuple[str, str]], add_generation_prompt: bool = True,
                  markers: Sequence[str] = ()) -> str:
    """``<|im_start|>role\ncontent<|im_end|>\n`` per message, then the assistant's opening;
    ``markers`` are removed from the contents as well as every family's turn markers."""
    return CHATML.render(_clean(messages, markers), add_generation_prompt)


@dataclass(frozen=True)
class ChatFormat:
    """How one model wants its messages: its GGUF Jinja template, else its family's layout."""

    template: str | None = None  # tokenizer.chat_template from the GGUF, if any
    eos_token: str = ""  # the EOS token's text, for templates that close turns with it
    turns: ChatTurns = CHATML  # the built-in layout (and the stop strings)
    special_tokens: tuple[str, ...] = ()  # the model's special-token texts: kept out of contents

    @property
    def markers(self) -> tuple[str, ...]:
        """Texts removed from every message: every family's markers and the model's specials."""
        return tuple(dict.fromkeys((*sorted(ALL_MARKERS), *self.special_tokens)))

    @property
    def name(self) -> str:
        return "gguf-template" if self.template else self.turns.name

    @property
    def stop(self) -> tuple[str, ...]:
        """Literal stop strings that end an assistant turn in this format."""
        return tuple(dict.fromkeys(s for s in (*self.turns.stop, self.eos_token) if s))

    def render(self, messages: Sequence[tuple[str, str]],
               add_generation_prompt: bool = True) -> str:
        clean = _clean(messages, self.special_tokens)
        if self.template:
            try:
                return self._render_template(clean, add_generation_prompt)
            except Exception:  # a template we cannot run: the built-in layout is the fallback
                pass
        return self.turns.render(clean, add_generation_prompt)

    def _render_template(self, messages: Sequence[tuple[str, str]],
                         add_generation_prompt: bool) -> str:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message: str) -> None:
            raise ChatFormatError(message)

        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.template or "").render(
            messages=[{"role": r, "content": c} for r, c in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token="",  # the engine adds BOS itself, as the GGUF says
            eos_token=self.eos_token,
        )


def chat_format_for(model: Any) -> ChatFormat:
    """The chat format of an :class:`engine.Model`: the layout its vocabulary's markers name
    (ChatML without any), and its GGUF template when present."""
    turns = chat_turns_for(getattr(model, "tokenizer", None)) or CHATML
    template = getattr(model, "chat_template", None)
    return ChatFormat(template=template or None, eos_token=_special_text(model, "eos"),
                      turns=turns, special_tokens=_special_texts(model))


def _special_texts(model: Any) -> tuple[str, ...]:
    """The texts the model's tokenizer would read as special tokens (control, user-defined)."""
    tokenizer = getattr(model, "tokenizer", None)
    table = getattr(tokenizer, "special_tokens", None)
    if not isinstance(table, dict):
        return ()
    # whitespace runs are user-defined tokens of some vocabularies (Gemma's): text, not markers
    texts = {str(t) for t in table.values() if str(t).strip()}
    unk = _special_text(model, "unk")  # parsed as the unknown token too
    if unk:
        texts.add(unk)
    return tuple(sorted(texts, key=lambda t: (-len(t), t)))


def _special_text(model: Any, which: str) -> str:
    """The text of the model's BOS/EOS token, or ``""`` when the model does not say."""
    tokenizer = getattr(model, "tokenizer", None)
    holders = (tokenizer, getattr(tokenizer, "vocab", None))
    token_id = next((getattr(h, f"{which}_id", None) for h in holders
                     if getattr(h, f"{which}_id", None) is not None), None)
    if token_id is None:
        return ""
    for holder in holders:
        tokens = getattr(holder, "tokens", None)
        if tokens is not None and 0 <= token_id < len(tokens):
            return str(tokens[token_id])
    return ""
