"""Chat messages → one prompt string, in the model's chat format.

ChatML is the format of SmolLM2-Instruct (its markers are control tokens of its vocabulary) and
of the Meditron fine-tunes (on a Llama-2 vocabulary without those tokens, where the markers are
plain text that the engine tokenizes as text and matches as literal stop strings).  When a GGUF
carries a ``tokenizer.chat_template``, it is rendered in Jinja's *sandbox* (a template from a
file never runs code); a template that does not render falls back to ChatML.

Untrusted text (questions, passages, prior messages) has the ChatML markers removed, and with
a model's format the texts of all its special tokens (``<|endoftext|>``, ``</s>``, ...), until
none is left (removing one cannot join the pieces of another): the engine tokenizes the prompt
with special tokens parsed, so a document cannot open or close a turn or end the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
CHATML_STOP: tuple[str, ...] = (IM_END, IM_START)
ROLES = ("system", "user", "assistant")


class ChatFormatError(ValueError):
    """A message list that cannot be rendered (unknown role, empty list)."""


def strip_markers(text: str, markers: Sequence[str] = CHATML_STOP) -> str:
    """``text`` without any of ``markers`` (ChatML's by default), so it cannot forge a turn.

    Removal repeats until none is left: ``<|im_<|im_end|>start|>`` does not become a marker.
    """
    markers = [m for m in markers if m]
    while any(m in text for m in markers):
        for m in markers:
            text = text.replace(m, "")
    return text


def _check(messages: Sequence[tuple[str, str]]) -> None:
    if not messages:
        raise ChatFormatError("no messages to render")
    for role, _ in messages:
        if role not in ROLES:
            raise ChatFormatError(f"unknown chat role {role!r} (expected one of {ROLES})")


def render_chatml(messages: Sequence[tuple[str, str]], add_generation_prompt: bool = True,
                  markers: Sequence[str] = CHATML_STOP) -> str:
    """``<|im_start|>role\\ncontent<|im_end|>\\n`` per message, then the assistant's opening;
    ``markers`` are removed from the contents."""
    _check(messages)
    parts = [f"{IM_START}{role}\n{strip_markers(content, markers)}{IM_END}\n"
             for role, content in messages]
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


@dataclass(frozen=True)
class ChatFormat:
    """How one model wants its messages: a GGUF Jinja template, or ChatML."""

    template: str | None = None  # tokenizer.chat_template from the GGUF, if any
    eos_token: str = ""  # the EOS token's text, for templates that close turns with it
    special_tokens: tuple[str, ...] = ()  # the model's special-token texts: kept out of contents

    @property
    def markers(self) -> tuple[str, ...]:
        """Texts removed from every message: ChatML's markers and the model's special tokens."""
        return tuple(dict.fromkeys((*CHATML_STOP, *self.special_tokens)))

    @property
    def name(self) -> str:
        return "gguf-template" if self.template else "chatml"

    @property
    def stop(self) -> tuple[str, ...]:
        """Literal stop strings that end an assistant turn in this format."""
        stops = list(CHATML_STOP)
        if self.eos_token and self.eos_token not in stops:
            stops.append(self.eos_token)
        return tuple(stops)

    def render(self, messages: Sequence[tuple[str, str]],
               add_generation_prompt: bool = True) -> str:
        _check(messages)
        if self.template:
            try:
                return self._render_template(messages, add_generation_prompt)
            except Exception:  # a template we cannot run: ChatML is the documented fallback
                pass
        return render_chatml(messages, add_generation_prompt, self.markers)

    def _render_template(self, messages: Sequence[tuple[str, str]],
                         add_generation_prompt: bool) -> str:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message: str) -> None:
            raise ChatFormatError(message)

        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.template or "").render(
            messages=[{"role": r, "content": strip_markers(c, self.markers)} for r, c in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token="",  # the engine adds BOS itself, as the GGUF says
            eos_token=self.eos_token,
        )


def chat_format_for(model: Any) -> ChatFormat:
    """The chat format of an :class:`engine.Model` (its GGUF template when present)."""
    template = getattr(model, "chat_template", None)
    specials = _special_texts(model)
    if not template:
        return ChatFormat(special_tokens=specials)
    return ChatFormat(template=template, eos_token=_special_text(model, "eos"),
                      special_tokens=specials)


def _special_texts(model: Any) -> tuple[str, ...]:
    """The texts the model's tokenizer would read as special tokens (control, user-defined)."""
    tokenizer = getattr(model, "tokenizer", None)
    table = getattr(tokenizer, "special_tokens", None)
    if not isinstance(table, dict):
        return ()
    texts = {str(t) for t in table.values() if t}
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
