"""Chat messages → one prompt string, in the model's chat format.

ChatML is the format of SmolLM2-Instruct (its markers are control tokens of its vocabulary) and
of the Meditron fine-tunes (on a Llama-2 vocabulary without those tokens, where the markers are
plain text that the engine tokenizes as text and matches as literal stop strings).  When a GGUF
carries a ``tokenizer.chat_template``, it is rendered in Jinja's *sandbox* (a template from a
file never runs code); a template that does not render falls back to ChatML.

Untrusted text (questions, passages, prior messages) has the ChatML markers removed, so a
document cannot open or close a turn.
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


def strip_markers(text: str) -> str:
    """``text`` without ChatML turn markers (so it cannot forge a turn)."""
    return text.replace(IM_START, "").replace(IM_END, "")


def _check(messages: Sequence[tuple[str, str]]) -> None:
    if not messages:
        raise ChatFormatError("no messages to render")
    for role, _ in messages:
        if role not in ROLES:
            raise ChatFormatError(f"unknown chat role {role!r} (expected one of {ROLES})")


def render_chatml(messages: Sequence[tuple[str, str]], add_generation_prompt: bool = True) -> str:
    """``<|im_start|>role\\ncontent<|im_end|>\\n`` per message, then the assistant's opening."""
    _check(messages)
    parts = [f"{IM_START}{role}\n{strip_markers(content)}{IM_END}\n" for role, content in messages]
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


@dataclass(frozen=True)
class ChatFormat:
    """How one model wants its messages: a GGUF Jinja template, or ChatML."""

    template: str | None = None  # tokenizer.chat_template from the GGUF, if any
    eos_token: str = ""  # the EOS token's text, for templates that close turns with it

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
        return render_chatml(messages, add_generation_prompt)

    def _render_template(self, messages: Sequence[tuple[str, str]],
                         add_generation_prompt: bool) -> str:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message: str) -> None:
            raise ChatFormatError(message)

        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.template or "").render(
            messages=[{"role": r, "content": strip_markers(c)} for r, c in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token="",  # the engine adds BOS itself, as the GGUF says
            eos_token=self.eos_token,
        )


def chat_format_for(model: Any) -> ChatFormat:
    """The chat format of an :class:`engine.Model` (its GGUF template when present)."""
    template = getattr(model, "chat_template", None)
    if not template:
        return ChatFormat()
    return ChatFormat(template=template, eos_token=_special_text(model, "eos"))


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
