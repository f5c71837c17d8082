"""Shared fixtures: the ``../shared`` folder (skipped when absent) and the default model."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GUIDELINES_SHARED", ROOT.parent / "shared"))
# CI sets this (.ci/run): a component a test exists to check (Chromium, gguf-py, atheris)
# missing there is a failure, not a skip.
STRICT_ENV = "GUIDELINES_TESTS_STRICT"
# The tests run the fast model (SmolLM2-135M, fetched by scripts/test.sh), not the page's
# 1.1 GB default: every page, chain and subprocess a test starts inherits this.
TEST_MODEL = "smollm2-135m"  # assistant.config.FAST_MODEL (checked in tests/assistant)
os.environ["GUIDELINES_MODEL"] = TEST_MODEL


def missing(reason: str) -> NoReturn:
    """Skip the test (or module) for ``reason``, or fail it when ``GUIDELINES_TESTS_STRICT=1``."""
    if os.environ.get(STRICT_ENV) == "1":
        pytest.fail(f"{reason} ({STRICT_ENV}=1: CI must run this test, not skip it)",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str, reason: str | None = None) -> ModuleType:
    """``import name``, or :func:`missing` (skip; a failure under ``GUIDELINES_TESTS_STRICT``)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing(reason or f"{name} is not installed ({e}); it is in the test extra")


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
    """The tests' model (SmolLM2-135M-Instruct Q4_1, the fast option), fetched by the test
    command."""
    from assistant.config import FAST_MODEL, Settings
    from assistant.model.presets import ModelError, resolve_model

    try:
        return resolve_model(FAST_MODEL, Settings.from_env().models_dir)
    except ModelError as e:
        pytest.fail(f"{e} (scripts/test.sh fetches it before running the tests)")


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole shipped sample corpus indexed with the default embedding model, built once per
    session (several minutes on 2 cores) for the tests that measure on the dev questions."""
    import ingest

    index = tmp_path_factory.mktemp("sample") / "index"
    report = ingest.build(ingest.SAMPLE_CORPUS, index, embedder=ingest.load_embedder(threads=2),
                          progress=False)
    assert report.added == 262 and report.n_rejected == 0
    return index

