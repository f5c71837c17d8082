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

from assistant.model.chat_model import ChatEngine
from tests.conftest import shared_path

MAX_TOKENS = 8  # small answers keep the integration suite short


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
    models_dir: str = ""
    override: str | None = None

    @pytest.fixture(autouse=True)
    def _models(self, default_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
        cls = type(self)
        cls.model_path = str(default_model_path)
        if not cls.models_dir:
            folder = tmp_path_factory.mktemp("models")
            cls.models_dir = str(folder)
            try:  # a second model for the per-call `model=` override: a Llama-2 vocabulary
                tiny = shared_path("models", "tiny-llama-spm.Q8_0.gguf")
                (folder / tiny.name).symlink_to(tiny)
                cls.override = tiny.name
            except pytest.skip.Exception:
                cls.override = None  # its four tests then skip: "model_override_value not ..."

    @property
    def chat_model_class(self) -> type[ChatEngine]:
        return ChatEngine

    @property
    def chat_model_params(self) -> dict:
        return {"model": self.model_path, "models_dir": self.models_dir,
                "max_tokens": MAX_TOKENS, "temperature": 0.0}

    @property
    def model_override_value(self) -> str | None:
        return self.override
