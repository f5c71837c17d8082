"""EngineLLM on the real default model (SmolLM2-135M-Instruct Q4_1) through the real engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate

from assistant.model.chat_format import IM_END, IM_START, render_chatml
from assistant.model.llm import EngineLLM

MAX_TOKENS = 10
# Greedy decoding without a repeat penalty continues this pattern: the text holds "<5 mg".
COPY_PROMPT = "Dose: <5 mg daily\n" * 8 + "Dose:"


@pytest.fixture(scope="module")
def llm(default_model_path: Path) -> EngineLLM:
    return EngineLLM(model=str(default_model_path), max_tokens=MAX_TOKENS, temperature=0.0,
                     repeat_penalty=1.0)


@pytest.fixture(scope="module")
def copied(llm: EngineLLM) -> str:
    """The greedy continuation of the copy prompt, with no stop string at all."""
    text = llm.invoke(COPY_PROMPT)
    assert "<5 mg" in text, f"the model did not continue the pattern: {text!r}"
    return text


class TokenCounter(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def regex_traps(text: str) -> list[str]:
    """Stop strings that match ``text`` as regular expressions but never occur in it literally."""
    traps = [IM_END]  # as a regex: "<" or "im_end" or ">"
    for i in range(len(text) - 2):
        dotted = f"{text[i]}.{text[i + 2]}"  # "." as a regex matches any character
        if ".|\\" not in dotted.replace(".", "", 1) and dotted not in text:
            traps.append(dotted)
            break
    traps.append("qqq|" + text[:3])  # "|" as a regex: an alternative that matches at 0
    assert all(t not in text for t in traps)
    return traps


def test_stop_strings_are_literal_not_regex(llm: EngineLLM, copied: str) -> None:
    # LangChain's enforce_stop_tokens would cut at each trap (e.g. at the "<" of "<5 mg");
    # the engine matches them literally, so the text comes back whole.
    assert llm.invoke(COPY_PROMPT, stop=regex_traps(copied)) == copied
    # "<5 mg" ends the text right before it, and nothing of it is returned.
    assert llm.invoke(COPY_PROMPT, stop=["<5 mg"]) == copied[: copied.index("<5 mg")]
    at = copied.index("5 mg")  # a stop set at construction, with a space and a newline after
    stopped = llm.model_copy(update={"stop": [copied[at: at + 5]]})
    assert stopped.invoke(COPY_PROMPT) == copied[:at]


def test_chatml_prompt_ends_at_the_turn_marker(llm: EngineLLM) -> None:
    text = llm.invoke(render_chatml([("user", "What is hypertension?")]), stop=[IM_END],
                      max_tokens=16)
    assert "hypertension" in text.lower() or "blood pressure" in text.lower()
    assert IM_END not in text and IM_START not in text


def test_stream_reports_each_piece_and_finishes_with_generation_info(llm: EngineLLM,
                                                                     copied: str) -> None:
    counter = TokenCounter()
    pieces = list(llm.stream(COPY_PROMPT, config={"callbacks": [counter]}))
    assert "".join(pieces) == copied  # greedy: the same text as invoke
    assert [t for t in counter.tokens if t] == [p for p in pieces if p] and len(pieces) > 3
    result = llm.generate([COPY_PROMPT], max_tokens=3)  # per-call override
    gen = result.generations[0][0]
    assert copied.startswith(gen.text) and gen.text
    info = gen.generation_info
    assert info["finish_reason"] == "length" and info["n_generated_tokens"] == 3
    assert info["n_prompt_tokens"] == len(llm.get_token_ids(COPY_PROMPT))
    assert info["quantization"] == "Q4_1" and info["model_name"].endswith(".gguf")
    assert set(info["timings"]) >= {"prompt_s", "gen_s"}


def test_lcel_invoke_batch_and_async(llm: EngineLLM) -> None:
    prompt = PromptTemplate.from_template("Dose: <5 mg {when}\n" * 8 + "Dose:")
    chain = prompt | llm.bind(max_tokens=4) | StrOutputParser()
    one = chain.invoke({"when": "daily"})
    assert one == llm.invoke(COPY_PROMPT, max_tokens=4)
    both = chain.batch([{"when": "daily"}, {"when": "weekly"}])
    assert both[0] == one and isinstance(both[1], str) and both[1].strip()


def test_batch_is_decoded_together_and_equals_one_by_one(llm: EngineLLM) -> None:
    prompts = [COPY_PROMPT.replace("5", str(d)) for d in (3, 5, 7)]
    one_by_one = [llm.invoke(p, max_tokens=12) for p in prompts]
    batcher = llm.engine_model.batcher()
    steps, sequence_steps = batcher.steps, batcher.sequence_steps
    assert llm.batch(prompts, max_tokens=12) == one_by_one
    assert batcher.sequence_steps - sequence_steps > batcher.steps - steps  # shared steps


async def test_async_invoke_and_stream(llm: EngineLLM, copied: str) -> None:
    pieces = [p async for p in llm.astream(COPY_PROMPT)]
    assert "".join(pieces) == copied
    assert copied.startswith(await llm.ainvoke(COPY_PROMPT, max_tokens=2))


def test_model_loaded_once_and_shared(llm: EngineLLM, default_model_path: Path) -> None:
    other = EngineLLM(model="smollm2-135m", temperature=0.7)
    assert other.engine_model is llm.engine_model  # preset name and path share one model
    assert EngineLLM(model=str(default_model_path)).engine_model is llm.engine_model


def test_identifying_params(llm: EngineLLM) -> None:
    params = llm._identifying_params
    assert params["model_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert params["quantization"] == "Q4_1"
    assert params["temperature"] == 0.0 and params["max_tokens"] == MAX_TOKENS
    assert {"top_k", "top_p", "min_p", "repeat_penalty", "seed"} <= params.keys()
    assert llm._llm_type == "guidelines-engine"
