"""A served model as the assistant's LLM: any OpenAI-compatible server through ``langchain-openai``.

``GUIDELINES_MODEL=openai:<base_url>#<model>`` (or the page's "served model" choice) makes the
chain (``assistant.chain.build_chain``) talk to vLLM, llama.cpp's server, TGI or any other
server of the OpenAI chat-completions API, through LangChain's own ``ChatOpenAI``.  The chain is
unchanged: the same system and user messages, citations, refusal (the server is not called when
no passage is relevant) and notice; the answer streams.

What the served path adds:

* **Errors that say what happened.**  A server that cannot be reached, answers with an error or
  stays silent longer than ``Settings.served_timeout`` raises :class:`ServedModelError` naming
  the server; the chain turns it into an ``AnswerError`` (the page and ``ask`` show it, with the
  notice).  One request, no retries: nothing hangs.
* **Token counting without the network.**  ``ChatOpenAI`` counts tokens with ``tiktoken``, whose
  encodings are downloaded, and the served model's tokenizer is not ours: the chain fits
  passages with a deliberately high estimate (one token per ``BYTES_PER_TOKEN`` bytes of UTF-8;
  English and clinical text run 3.5-4.5 bytes per token in the Llama, SmolLM2 and Qwen
  vocabularies), so the prompt stays within the context.
* ``max_tokens`` is sent under both names: ``ChatOpenAI`` sends ``max_completion_tokens``, which
  some servers (llama-cpp-python's) ignore.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI

from assistant.model.presets import ServedModel

BYTES_PER_TOKEN = 3  # the token estimate's divisor (high: see the module docstring)
MAX_RETRIES = 0  # one request: a failure is shown at once


class ServedModelError(RuntimeError):
    """The served model failed: unreachable, an error status, or silent past the timeout."""

    def __init__(self, served: ServedModel, what: str) -> None:
        self.served = served
        super().__init__(f"the model server at {served.base_url} ({served.model}) {what}")


def estimate_token_ids(text: str) -> list[int]:
    """A stand-in token list as long as the estimate (``get_num_tokens`` counts it)."""
    return [0] * (len(text.encode("utf-8")) // BYTES_PER_TOKEN + 1)


class ServedChat(ChatOpenAI):
    """``ChatOpenAI`` whose failures are :class:`ServedModelError`s naming the server."""

    served_timeout: float = 60.0

    def _explain(self, e: Exception) -> ServedModelError:
        import openai

        served = ServedModel(str(self.openai_api_base), self.model_name)
        if isinstance(e, openai.APITimeoutError):
            return ServedModelError(served, f"did not answer within {self.served_timeout:g} s")
        if isinstance(e, openai.APIConnectionError):
            return ServedModelError(served, f"cannot be reached ({e.__cause__ or e})")
        if isinstance(e, openai.APIStatusError):
            return ServedModelError(served, f"answered HTTP {e.status_code}: {e.message}")
        return ServedModelError(served, f"failed ({type(e).__name__}: {e})")

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        import openai

        try:
            yield from super()._stream(*args, **kwargs)
        except openai.OpenAIError as e:
            raise self._explain(e) from e

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        import openai

        try:
            return super()._generate(*args, **kwargs)
        except openai.OpenAIError as e:
            raise self._explain(e) from e


def served_chat_model(served: ServedModel, *, max_tokens: int, temperature: float, seed: int,
                      timeout: float, api_key: str) -> ServedChat:
    """The chat model for ``served`` with the assistant's generation settings."""
    return ServedChat(
        model=served.model,
        base_url=served.base_url,
        api_key=api_key,
        max_tokens=max_tokens,
        extra_body={"max_tokens": max_tokens},
        temperature=temperature,
        seed=seed,
        timeout=timeout,
        served_timeout=timeout,
        max_retries=MAX_RETRIES,
        stream_usage=True,
        custom_get_token_ids=estimate_token_ids,
    )
