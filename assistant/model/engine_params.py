"""What ``EngineLLM`` and ``ChatEngine`` share: the model spec, sampling settings, one call.

:class:`EngineParams` is a pydantic mixin holding the fields; :class:`GenerationRun` streams one
engine generation: its pieces and, at the end, a ``generation_info`` dict
(``finish_reason``, token counts, engine timings, model file and quantization).  Stop strings
go to the engine, which matches them literally (never as regular expressions).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from assistant.config import Settings
from assistant.model.chat_format import ChatFormat, chat_format_for
from assistant.model.engine_runtime import get_engine_model
from engine.repetition import DEFAULT_SEQUENCE_BREAKERS
from engine.sampling import SamplingParams

_DEFAULTS = Settings()  # the assistant's own choices
_ENGINE = SamplingParams()  # the rest: the engine's (llama.cpp's) defaults

# Per-call keyword arguments that override a field (``llm.invoke(p, temperature=0.2)``).
SAMPLING_KEYS = ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty",
                 "repeat_last_n", "seed", "dry_multiplier", "dry_base", "dry_allowed_length",
                 "dry_penalty_last_n", "dry_sequence_breakers", "loop_stop_tokens")
# DRY's breakers: llama.cpp's, and "[" so that citing a passage again ("... [1]") is no repeat
DRY_SEQUENCE_BREAKERS = (*DEFAULT_SEQUENCE_BREAKERS, "[")


class EngineParams(BaseModel):
    """The model to run and how to sample from it."""

    model: str = Field(default_factory=lambda: Settings.from_env().model)
    """A preset name (``qwen2.5-coder-1.5b``, ``smollm2-135m``, ...) or a GGUF path; default:
    the ``GUIDELINES_MODEL`` environment variable, else ``config.DEFAULT_MODEL``."""
    models_dir: str | None = None
    """Where presets live; default: ``Settings.from_env().models_dir``."""
    max_tokens: int = _DEFAULTS.max_tokens
    temperature: float = _DEFAULTS.temperature
    top_k: int = _ENGINE.top_k
    top_p: float = _ENGINE.top_p
    min_p: float = _ENGINE.min_p
    repeat_penalty: float = _DEFAULTS.repeat_penalty
    """1.0 = off: answers may quote passages and repeat citations."""
    repeat_last_n: int = _ENGINE.repeat_last_n
    seed: int | None = _DEFAULTS.seed
    dry_multiplier: float = _DEFAULTS.dry_multiplier
    """DRY repetition penalty (engine.repetition) over the answer's own tokens; 0 = off."""
    dry_base: float = _ENGINE.dry_base
    dry_allowed_length: int = _ENGINE.dry_allowed_length
    dry_penalty_last_n: int = _ENGINE.dry_penalty_last_n
    dry_sequence_breakers: list[str] = Field(default_factory=lambda: list(DRY_SEQUENCE_BREAKERS))
    loop_stop_tokens: int = _DEFAULTS.loop_stop_tokens
    """Stop (finish reason "repetition") when the answer starts repeating itself; 0 = never."""
    stop: list[str] | None = None
    """Stop strings, matched literally by the engine, added to each call's own."""
    n_ctx: int | None = _DEFAULTS.n_ctx
    """Upper bound on the context used (the model's own length caps it too)."""
    streaming: bool = False
    """Accepted for LangChain compatibility; ``stream()`` streams either way."""

    # -- the model ---------------------------------------------------------------------------

    @property
    def engine_model(self) -> Any:
        """The shared ``engine.Model`` (loaded on first use, then reused)."""
        return self.engine_model_for(None)

    def engine_model_for(self, spec: str | None) -> Any:
        """The engine model for a per-call ``model=`` override (``None``: this one's own)."""
        models_dir = Path(self.models_dir) if self.models_dir else None
        return get_engine_model(spec or self.model, models_dir)

    @property
    def context_length(self) -> int:
        model = self.engine_model
        n_train = int(getattr(model, "n_ctx_train", 0) or getattr(model.config, "n_ctx_train", 0))
        return min(n_train, self.n_ctx) if self.n_ctx else n_train

    @property
    def chat_format(self) -> ChatFormat:
        return chat_format_for(self.engine_model)

    @property
    def model_file(self) -> str:
        return Path(self.engine_model.path).name

    def engine_token_ids(self, text: str) -> list[int]:
        """Token ids as generation sees a prompt string (GGUF's BOS, control tokens parsed)."""
        model = self.engine_model
        add_bos = bool(getattr(model.config, "add_bos", True))
        return list(model.tokenize(text, add_bos=add_bos, special=True))

    def sampling(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        """The engine's ``generate`` arguments: fields, overridden by per-call kwargs."""
        args = {key: kwargs.get(key, getattr(self, key)) for key in SAMPLING_KEYS}
        stops = [*(self.stop or []), *(stop or [])]
        args["stop"] = list(dict.fromkeys(s for s in stops if s))
        return args

    def sampling_params(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in SAMPLING_KEYS}


class GenerationRun:
    """One engine generation of ``model``, streamed: iterate for its pieces; when it ends,
    ``info`` holds its generation_info.

    Closing the iterator early (a consumer that stops reading) cancels the engine's generation.
    """

    def __init__(self, model: Any, prompt: str | list[int], sampling: dict[str, Any]) -> None:
        self.model = model
        self.info: dict[str, Any] = {}
        self._generation = model.generate(prompt, stream=True, **sampling)

    def __iter__(self) -> Iterator[str]:
        finished = False
        try:
            for piece in self._generation:
                if piece:
                    yield piece
            finished = True
        finally:
            if not finished:
                self._generation.cancel()
            self.info = generation_info(self.model, self._generation)


def generation_info(model: Any, generation: Any) -> dict[str, Any]:
    return {
        "finish_reason": getattr(generation, "finish_reason", None),
        "n_prompt_tokens": int(getattr(generation, "n_prompt_tokens", 0) or 0),
        "n_generated_tokens": int(getattr(generation, "n_generated_tokens", 0) or 0),
        "timings": dict(getattr(generation, "timings", None) or {}),
        "model_name": Path(model.path).name,
        "model_path": str(model.path),
        "quantization": getattr(model, "quantization", None),
    }
