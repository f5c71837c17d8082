"""Chat formats on real GGUF files: SmolLM2's template (ChatML control tokens) and a Llama-2
vocabulary without ChatML tokens (Meditron's case: the markers are plain text and stop strings)."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from assistant.chat_format import IM_END, IM_START, render_chatml
from assistant.chat_model import ChatEngine, UnsupportedContent
from tests.conftest import shared_path

TURNS = [("system", "Be brief."), ("user", "Hi")]
MESSAGES = [SystemMessage("Be brief."), HumanMessage("Hi")]


@pytest.fixture(scope="module")
def tiny_llama() -> Path:
    return shared_path("models", "tiny-llama-spm.Q8_0.gguf")


def test_smollm2_uses_its_gguf_template_with_control_tokens(default_model_path: Path) -> None:
    chat = ChatEngine(model=str(default_model_path))
    assert chat.chat_format.name == "gguf-template"
    assert chat.render(MESSAGES) == render_chatml(TURNS)  # its template is ChatML
    # without a system message the template adds SmolLM2's own, as llama.cpp would
    assert chat.render([HumanMessage("Hi")]).startswith(f"{IM_START}system\nYou are")
    model = chat.engine_model
    assert len(model.tokenize(IM_START, add_bos=False, special=True)) == 1  # a control token
    assert IM_END in chat.chat_format.stop


def test_llama2_vocab_gets_chatml_as_text(tiny_llama: Path) -> None:
    chat = ChatEngine(model=str(tiny_llama), max_tokens=4, temperature=0.0)
    assert chat.chat_format.name == "chatml"  # no template in the GGUF
    prompt = chat.render(MESSAGES)
    assert prompt == render_chatml(TURNS)
    model = chat.engine_model
    assert len(model.tokenize(IM_START, add_bos=False, special=True)) > 1  # plain text
    assert {IM_END, IM_START} <= set(chat.chat_format.stop)
    result = chat.invoke(MESSAGES)
    assert isinstance(result, AIMessage) and IM_END not in result.text
    assert result.response_metadata["model_name"] == "tiny-llama-spm.Q8_0.gguf"
    assert result.response_metadata["quantization"] == "Q8_0"
    assert result.response_metadata["finish_reason"] in {"eos", "length", "stop"}
    usage = result.usage_metadata
    assert usage["input_tokens"] == len(chat.get_token_ids(prompt))
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_unsupported_content_is_refused_clearly(tiny_llama: Path) -> None:
    chat = ChatEngine(model=str(tiny_llama), max_tokens=2)
    image = HumanMessage(content=[{"type": "image", "url": "https://x/y.png"}])
    with pytest.raises(UnsupportedContent, match="'image' content block"):
        chat.invoke([image])
    with pytest.raises(NotImplementedError):
        chat.bind_tools([])
