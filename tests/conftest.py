"""Shared fixtures: the ``../shared`` folder (skipped when absent) and the default model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GUIDELINES_SHARED", ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test saying why (a user's clone has no ../shared)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"{path} is absent: ../shared (developer and CI data) is not beside this checkout"
        )
    return path


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The embedded default GGUF (SmolLM2-135M-Instruct Q4_1), fetched by the test command."""
    from assistant.config import DEFAULT_MODEL, Settings
    from assistant.models import ModelError, resolve_model

    try:
        return resolve_model(DEFAULT_MODEL, Settings.from_env().models_dir)
    except ModelError as e:
        pytest.fail(f"{e} (scripts/test.sh fetches it before running the tests)")
