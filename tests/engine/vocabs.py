"""The test vocabularies: llama.cpp's own (in ../shared) and the test models' (fetched by the test
command into the models folder), by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import shared_path

LLAMA_CPP_VOCABS = ["llama-spm", "gpt-2", "llama-bpe", "qwen2", "phi-3"]
MODEL_VOCABS = ["smollm2-135m", "qwen2.5-coder-0.5b", "gemma-3-270m"]  # model presets


def vocab_path(name: str) -> Path:
    """A vocabulary of llama.cpp's tests or a test model's GGUF (the tests fail, saying how to
    fetch it, when the test command has not fetched it)."""
    if name in LLAMA_CPP_VOCABS:
        return shared_path("tokenizer-tests", f"ggml-vocab-{name}.gguf")
    from assistant.config import Settings
    from assistant.model.presets import ModelError, resolve_model

    try:
        return resolve_model(name, Settings.from_env().models_dir)
    except ModelError as e:
        pytest.fail(f"{e} (scripts/test.sh fetches it before running the tests)")
