"""EngineLLM on the real default model (SmolLM2-135M-Instruct Q4_1) through the real engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate

from assistant.chat_format import IM_END, render_chatml
from assistant.llm import EngineLLM

MAX_TOKENS = 24
# A pattern any language model continues: the greedy text holds "<5 mg" again.
COPY_PROMPT = "Dose table\nDrug A: <5 mg daily\nDrug B: <5 mg daily\nDrug C: <5 mg daily\nDrug D:"
CHAT_PROMPT = render_chatml([("user", "What is hypertension?")])


@pytest.fixture(scope="module")
def llm(default_model_path: Path) -> EngineLLM:
    return EngineLLM(model=str(default_model_path), max_tokens=MAX_TOKENS, temperature=0.0)


@pytest.fixture(scope="module")
def copied(llm: EngineLLM) -> str:
    """The greedy answer to the copy prompt, with no stop string at all."""
    return llm.invoke(COPY_PROMPT)


class TokenCounter(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def test_greedy_invoke_is_deterministic(llm: EngineLLM, copied: str) -> None:
    assert copied.strip()
    assert llm.invoke(COPY_PROMPT) == copied


def regex_traps(text: str) -> list[str]:
    """Stop strings that match ``text`` as regular expressions but never occur in it literally."""
    traps = [IM_END]  # as a regex: "<" or "im_end" or ">"
    for i in range(len(text) - 2):
        dotted = f"{text[i]}.{text[i + 2]}"  # "." as a regex matches any character
        if text[i] not in ".|\\" and text[i + 2] not in ".|\\" and dotted not in text:
            traps.append(dotted)
            break
    traps.append("qqq|" + text[:3])  # "|" as a regex: an alternative that matches at 0
    assert all(t not in text for t in traps)
    return traps


def test_stop_strings_are_literal_not_regex(llm: EngineLLM, copied: str) -> None:
    assert "<5 mg" in copied, f"the model did not continue the pattern: {copied!r}"
    # LangChain's enforce_stop_tokens would cut at each trap; the engine matches them literally.
    assert llm.invoke(COPY_PROMPT, stop=regex_traps(copied)) == copied
    # "<5 mg" ends the text right before it, and nothing of it is returned.
    assert llm.invoke(COPY_PROMPT, stop=["<5 mg"]) == copied[: copied.index("<5 mg")]
    cut = copied.index("mg", copied.index("<5 mg")) + 2  # a stop set at construction
    stopped = EngineLLM(model=llm.model, max_tokens=MAX_TOKENS, temperature=0.0,
                        stop=[copied[cut - 4: cut + 1]])
    assert stopped.invoke(COPY_PROMPT) == copied[: cut - 4]


def test_chatml_prompt_ends_at_the_turn_marker(llm: EngineLLM) -> None:
    text = llm.invoke(CHAT_PROMPT, stop=[IM_END], max_tokens=48)
    assert "hypertension" in text.lower() or "blood pressure" in text.lower()
    assert IM_END not in text and "<|im_start|>" not in text


def test_stream_reports_each_piece_and_finishes_with_generation_info(llm: EngineLLM,
                                                                     copied: str) -> None:
    counter = TokenCounter()
    pieces = list(llm.stream(COPY_PROMPT, config={"callbacks": [counter]}))
    assert "".join(pieces) == copied
    assert [t for t in counter.tokens if t] == [p for p in pieces if p] and len(pieces) > 3
    result = llm.generate([COPY_PROMPT])
    info = result.generations[0][0].generation_info
    assert info["finish_reason"] in {"eos", "length", "stop"}
    assert 0 < info["n_generated_tokens"] <= MAX_TOKENS
    assert info["n_prompt_tokens"] == len(llm.get_token_ids(COPY_PROMPT))
    assert info["quantization"] == "Q4_1" and info["model_name"].endswith(".gguf")


def test_lcel_invoke_batch_and_async(llm: EngineLLM) -> None:
    prompt = PromptTemplate.from_template(
        "<|im_start|>user\nName one {thing}.<|im_end|>\n<|im_start|>assistant\n")
    chain = prompt | llm.bind(max_tokens=8) | StrOutputParser()
    one = chain.invoke({"thing": "fruit"})
    assert isinstance(one, str) and one.strip()
    both = chain.batch([{"thing": "fruit"}, {"thing": "colour"}])
    assert both[0] == one and isinstance(both[1], str) and both[1].strip()


async def test_async_invoke_and_stream(llm: EngineLLM, copied: str) -> None:
    assert await llm.ainvoke(COPY_PROMPT) == copied
    pieces = [p async for p in llm.astream(COPY_PROMPT)]
    assert "".join(pieces) == copied


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


def test_per_call_overrides(llm: EngineLLM) -> None:
    short = llm.invoke(COPY_PROMPT, max_tokens=3)
    info = llm.generate([COPY_PROMPT], max_tokens=3).generations[0][0].generation_info
    assert info["n_generated_tokens"] == 3 and info["finish_reason"] == "length"
    assert llm.invoke(COPY_PROMPT).startswith(short)
