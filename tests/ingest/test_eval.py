"""Retrieval quality of the default configuration on the dev questions (issue targets)."""

from __future__ import annotations

import json

import pytest

import ingest
from ingest.evaluate import evaluate, format_table, load_qa
from tests.conftest import shared_path

# Issue 9's targets are passage hit@1 >= 0.80 and hit@5 >= 0.97 (the anchor, the standard
# LangChain recipe: 0.67 and 0.93). Measured with the default configuration: 0.755 and 0.985, so
# hit@5 meets its target and hit@1 does NOT yet (see docs/retrieval.md). These floors guard what is
# reached, so a regression fails. Latency is reported, not asserted (CONTRIBUTING.md).
PASSAGE_HIT_1 = 0.74  # measured 0.755; a little room for near-ties across CPUs
PASSAGE_HIT_5 = 0.97


@pytest.mark.slow
def test_dev_questions_meet_the_targets(tmp_path_factory, embedder):
    qa = load_qa(shared_path("data", "qa-dev.jsonl"))
    index = tmp_path_factory.mktemp("sample") / "index"
    report = ingest.build(ingest.SAMPLE_CORPUS, index, embedder=embedder, progress=False)
    assert report.added == 262 and report.n_rejected == 0
    idx = ingest.open_index(index, embedder=embedder)
    metrics = evaluate(idx, qa, ks=(1, 3, 5, 10))
    print("\n" + format_table(metrics, (1, 3, 5, 10)) + "\n" + json.dumps(metrics))
    assert metrics["n"] == 343
    assert metrics["passage_hit@1"] >= PASSAGE_HIT_1
    assert metrics["passage_hit@5"] >= PASSAGE_HIT_5
    assert metrics["doc_hit@5"] >= metrics["passage_hit@5"] - 0.02
