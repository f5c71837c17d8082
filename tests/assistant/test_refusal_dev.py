"""The refusal policy on the real sample index and the even half of the dev files (issue 16:
refusal >= 90 %, false refusal <= 5 %), through scripts/calibrate_refusal.py's own functions.

Only the even half is read here: it is where the policy was chosen; the odd half is held out
and reported once in docs/assistant.md "Refusals", not tested.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from assistant.checks.refusal import RefusalPolicy
from assistant.config import Settings
from tests.conftest import ROOT, shared_path

MIN_REFUSAL = 0.90  # the issue's targets
MAX_FALSE_REFUSAL = 0.05


def calibrate_script() -> ModuleType:
    path = ROOT / "scripts" / "calibrate_refusal.py"
    spec = importlib.util.spec_from_file_location("calibrate_refusal", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rate(counts: list[int]) -> float:
    return counts[0] / counts[1]


@pytest.mark.slow
def test_default_policy_meets_the_targets_on_the_even_half(sample_index: Path) -> None:
    qa = shared_path("data", "qa-dev.jsonl")
    una = shared_path("data", "unanswerable-dev.jsonl")
    script = calibrate_script()
    args = SimpleNamespace(index=str(sample_index), qa=str(qa), unanswerable=str(una),
                           k=Settings().k)
    rows = script.collect(args, ("even",))
    assert {r["half"] for r in rows} == {"even"} and len(rows) == 172 + 15
    got = script.rates(rows, RefusalPolicy().refuses)
    print(got)
    assert rate(got["refusal"]) >= MIN_REFUSAL
    assert rate(got["false_refusal"]) <= MAX_FALSE_REFUSAL
    # the script's fit on this fresh index meets them too, each feature lowering the refusal
    intercept, weights = script.fit(rows)
    threshold = script.choose_threshold(rows, intercept, weights, 0.03)
    refit = script.rates(rows, RefusalPolicy(intercept, weights, threshold).refuses)
    assert rate(refit["refusal"]) >= MIN_REFUSAL and rate(refit["false_refusal"]) <= 0.03
    assert all(w < 0 for w in weights)
