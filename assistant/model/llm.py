"""``EngineLLM``: our GGUF engine as a LangChain ``LLM`` (string in, string out).

>>> llm = EngineLLM(model="smollm2-135m", max_tokens=64, temperature=0.0)
>>> (PromptTemplate.from_template("...{q}...") | llm | StrOutputParser()).invoke({"q": "..."})

The engine model loads once per file and is shared (``assistant.model.engine_runtime``).  ``batch``
(one ``generate`` call with several prompts) runs them on threads, and the engine decodes them
together, one pass over the weights per step (``engine.decode.batcher``).  ``stream``
sends each piece through ``run_manager.on_llm_new_token``; the last chunk carries
``generation_info`` (finish reason, token counts, engine timings, model file, quantization).
Stop strings are matched literally by the engine, so ``<|im_end|>`` or ``<5 mg`` work as
written.  The prompt is sent as is: use ``chat_format.render(...)`` (or ``ChatEngine``) for
chat-formatted prompts.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import LLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult

from assistant.model.engine_params import EngineParams, GenerationRun
from engine.decode.batcher import MAX_SEQUENCES

LLM_TYPE = "guidelines-engine"


class EngineLLM(EngineParams, LLM):
    """A LangChain LLM over the built-in engine (see the module docstring)."""

    @property
    def _llm_type(self) -> str:
        return LLM_TYPE

    @property
    def _identifying_params(self) -> dict[str, Any]:
        model = self.engine_model
        return {
            "model_file": self.model_file,
            "model_path": str(model.path),
            "quantization": getattr(model, "quantization", None),
            "n_ctx": self.context_length,
            **self.sampling_params(),
            "stop": self.stop,
        }

    def get_token_ids(self, text: str) -> list[int]:
        return self.engine_token_ids(text)

    def _call(self, prompt: str, stop: list[str] | None = None,
              run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> str:
        return "".join(c.text for c in self._stream(prompt, stop, run_manager, **kwargs))

    def _generate(self, prompts: list[str], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> LLMResult:
        def one(prompt: str) -> list[Generation]:
            text, info = "", {}
            for chunk in self._stream(prompt, stop, run_manager, **kwargs):
                text += chunk.text
                info.update(chunk.generation_info or {})
            return [Generation(text=text, generation_info=info)]

        if len(prompts) <= 1:
            generations = [one(p) for p in prompts]
        else:  # concurrently: the engine decodes them together (engine.decode.batcher)
            with ThreadPoolExecutor(max_workers=min(len(prompts), MAX_SEQUENCES)) as pool:
                generations = list(pool.map(one, prompts))
        return LLMResult(generations=generations, llm_output={"model_name": self.model_file})

    def _stream(self, prompt: str, stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[GenerationChunk]:
        model = self.engine_model_for(kwargs.get("model"))
        run = GenerationRun(model, prompt, self.sampling(stop, **kwargs))
        for piece in run:
            chunk = GenerationChunk(text=piece)
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield GenerationChunk(text="", generation_info=run.info)
