"""Retrieval quality of the default configuration on the dev questions (issue targets)."""

from __future__ import annotations

import json

import pytest

import ingest
from ingest.evaluate import evaluate, format_comparison, load_qa
from ingest.search import HybridSettings
from tests.conftest import shared_path

# Issue 9's targets are passage hit@1 >= 0.80 and hit@5 >= 0.97 (the anchor, the standard
# LangChain recipe: 0.67 and 0.93). See docs/retrieval.md for what the default measures.
# Latency is reported, not asserted (CONTRIBUTING.md).
PASSAGE_HIT_1 = 0.80
PASSAGE_HIT_5 = 0.97
KS = (1, 3, 5, 10)


@pytest.mark.slow
def test_dev_questions_meet_the_targets(sample_index, embedder):
    qa = load_qa(shared_path("data", "qa-dev.jsonl"))
    idx = ingest.open_index(sample_index, embedder=embedder)
    no_parts = ingest.open_index(
        sample_index, embedder=embedder, hybrid=HybridSettings(rerank=())
    )
    metrics = evaluate(idx, qa, ks=KS)
    runs = {"default (hybrid + parts)": metrics, "hybrid, no parts": evaluate(no_parts, qa, KS)}
    print("\n" + format_comparison(runs, KS) + "\n" + json.dumps(runs))
    assert metrics["n"] == 343
    assert metrics["passage_hit@1"] >= PASSAGE_HIT_1
    assert metrics["passage_hit@5"] >= PASSAGE_HIT_5
    assert metrics["doc_hit@5"] >= metrics["passage_hit@5"] - 0.02
