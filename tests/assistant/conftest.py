"""Fixtures of the assistant's tests: a small real index built with the ingest API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# A few sample documents: two on blood pressure, one on diabetes, one on asthma, two from CDC.
SMALL_INDEX_DOCS = ("ngc-10822", "ngc-10799", "ngc-10796", "medquad-nhlbi-0000010",
                    "medquad-cdc-0000030", "medquad-cdc-0000053")


@pytest.fixture(scope="session")
def small_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real FAISS + SQLite index of SMALL_INDEX_DOCS from the shipped sample corpus."""
    import ingest

    folder = tmp_path_factory.mktemp("small-index")
    corpus = folder / "docs.jsonl"
    with ingest.SAMPLE_CORPUS.open(encoding="utf-8") as src, corpus.open("w") as dst:
        for line in src:
            if json.loads(line)["id"] in SMALL_INDEX_DOCS:
                dst.write(line)
    report = ingest.build(corpus, folder / "index", progress=False, log=lambda s: None)
    assert report.published
    return folder / "index"
