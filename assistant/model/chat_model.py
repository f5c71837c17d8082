"""``ChatEngine``: our GGUF engine as a LangChain chat model (messages in, ``AIMessage`` out).

Messages are rendered in the model's chat format (``assistant.model.chat_format``: the GGUF's own
template when it has one, otherwise ChatML — control tokens for SmolLM2, literal text for a
Llama-2 vocabulary such as Meditron's).  The turn-ending markers are added to the stop strings,
which the engine matches literally.  Results carry ``usage_metadata`` (input / output tokens)
and ``response_metadata`` (``model_name`` = the GGUF file, ``quantization``,
``finish_reason``, engine ``timings``).  Streaming yields ``AIMessageChunk``s, the last one
with ``chunk_position="last"`` and the usage.

Tool calling and structured output are not supported: ``bind_tools`` and
``with_structured_output`` keep LangChain's defaults (which raise ``NotImplementedError``), and
LangChain's standard tests read exactly that to skip their tool and structured-output tests.
Content must be text: image, audio or file blocks raise :class:`UnsupportedContent`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.chat_models import generate_from_stream
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk, ChatResult

from assistant.model.chat_format import chat_format_for
from assistant.model.engine_params import EngineParams, GenerationRun

CHAT_TYPE = "guidelines-engine-chat"
LS_PROVIDER = "guidelines_engine"


class UnsupportedContent(ValueError):
    """A message the engine cannot take: a non-text block, or a role with no chat turn."""

    def __init__(self, message: BaseMessage, what: str) -> None:
        self.message = message
        super().__init__(f"{type(message).__name__} with {what} is not supported by the engine "
                         "(text-only chat: system, user and assistant turns)")


def message_text(message: BaseMessage) -> str:
    """The text of a message; raises on image, audio or file content."""
    if isinstance(message.content, str):
        return message.content
    parts = []
    for block in message.content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise UnsupportedContent(message, f"a {kind!r} content block")
    return "".join(parts)


def to_turns(messages: list[BaseMessage]) -> list[tuple[str, str]]:
    """LangChain messages → ``(role, text)`` turns of the chat format."""
    turns = []
    for m in messages:
        if isinstance(m, SystemMessage):
            role = "system"
        elif isinstance(m, HumanMessage):
            role = "user"
        elif isinstance(m, AIMessage):
            if m.tool_calls:
                raise UnsupportedContent(m, "tool calls")
            role = "assistant"
        elif isinstance(m, ChatMessage) and m.role in ("system", "user", "assistant"):
            role = m.role
        else:
            raise UnsupportedContent(m, f"role {getattr(m, 'role', m.type)!r}")
        turns.append((role, message_text(m)))
    return turns


class ChatEngine(EngineParams, BaseChatModel):
    """A LangChain chat model over the built-in engine (see the module docstring)."""

    @property
    def _llm_type(self) -> str:
        return CHAT_TYPE

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, **self.sampling_params(), "stop": self.stop}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=LS_PROVIDER,
            ls_model_name=str(kwargs.get("model") or self.model),
            ls_model_type="chat",
            ls_temperature=float(kwargs.get("temperature", self.temperature)),
            ls_max_tokens=int(kwargs.get("max_tokens", self.max_tokens)),
        )
        stops = stop or self.stop
        if stops:
            params["ls_stop"] = list(stops)
        return params

    def get_token_ids(self, text: str) -> list[int]:
        return self.engine_token_ids(text)

    def render(self, messages: list[BaseMessage]) -> str:
        """The prompt string the engine receives for ``messages``."""
        return self.chat_format.render(to_turns(messages), add_generation_prompt=True)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        model = self.engine_model_for(kwargs.get("model"))  # a per-call override, or our own
        chat_format = chat_format_for(model)
        prompt = chat_format.render(to_turns(messages), add_generation_prompt=True)
        sampling = self.sampling([*(stop or []), *chat_format.stop], **kwargs)
        run = GenerationRun(model, prompt, sampling)
        for piece in run:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(message=_last_chunk(run.info), generation_info=_finish(run.info))


def _finish(info: dict[str, Any]) -> dict[str, Any]:
    return {"finish_reason": info.get("finish_reason")}


def _last_chunk(info: dict[str, Any]) -> AIMessageChunk:
    n_in, n_out = info.get("n_prompt_tokens", 0), info.get("n_generated_tokens", 0)
    usage = UsageMetadata(input_tokens=n_in, output_tokens=n_out, total_tokens=n_in + n_out)
    metadata = {
        "model_name": info.get("model_name"),
        "model_provider": LS_PROVIDER,
        "quantization": info.get("quantization"),
        "finish_reason": info.get("finish_reason"),
        "timings": info.get("timings", {}),
    }
    return AIMessageChunk(content="", usage_metadata=usage, response_metadata=metadata,
                          chunk_position="last")
