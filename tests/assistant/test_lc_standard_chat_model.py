"""LangChain's standard chat-model suites on ChatEngine over the real default model.

Tool calling, structured output, JSON mode and image/audio/PDF inputs are declared unsupported
the way the suite reads it (``bind_tools`` / ``with_structured_output`` not overridden, the
``supports_*`` properties left False), so those tests skip; everything else must pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from assistant.chat_model import ChatEngine

MAX_TOKENS = 12  # small answers keep the integration suite at a few minutes of CPU


class TestChatEngineUnit(ChatModelUnitTests):
    """Construction, parameters, tracing fields, serialization: no model file is read."""

    @property
    def chat_model_class(self) -> type[ChatEngine]:
        return ChatEngine

    @property
    def chat_model_params(self) -> dict:
        # no max_tokens: the suite passes its own next to these
        return {"model": "smollm2-135m", "temperature": 0.0}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return ({"GUIDELINES_MODEL": "meditron-7b"}, {}, {"model": "meditron-7b"})


class TestChatEngineIntegration(ChatModelIntegrationTests):
    model_path: str = ""

    @pytest.fixture(autouse=True)
    def _default_model(self, default_model_path: Path) -> None:
        type(self).model_path = str(default_model_path)

    @property
    def chat_model_class(self) -> type[ChatEngine]:
        return ChatEngine

    @property
    def chat_model_params(self) -> dict:
        return {"model": self.model_path, "max_tokens": MAX_TOKENS, "temperature": 0.0}
