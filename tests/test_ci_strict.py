"""``GUIDELINES_TESTS_STRICT=1`` (set by .ci/run) turns a missing component into a failure."""

from __future__ import annotations

import pytest

from tests.conftest import STRICT_ENV, missing, require_module


def test_missing_component_skips_for_a_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STRICT_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no_such_module_4f1"):
        require_module("no_such_module_4f1")


def test_missing_component_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="CI must run this test"):
        require_module("no_such_module_4f1")
    with pytest.raises(pytest.fail.Exception, match="Chromium"):
        missing("Chromium is not installed")


def test_present_component_is_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STRICT_ENV, "1")
    assert require_module("json").dumps([1]) == "[1]"


def test_ci_run_sets_strict_mode() -> None:
    from tests.conftest import ROOT

    assert f"export {STRICT_ENV}=1" in (ROOT / ".ci" / "run").read_text()
