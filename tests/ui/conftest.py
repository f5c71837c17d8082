"""A small real index for the page's tests: five sample documents from three sources, built once
per session by the real ``python -m ingest build`` (real sentence-transformers, real FAISS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ui_test_data import SMALL_INDEX_IDS

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def small_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ingest import SAMPLE_CORPUS

    folder = tmp_path_factory.mktemp("ui-index")
    corpus = folder / "small.jsonl"
    with SAMPLE_CORPUS.open(encoding="utf-8") as src, corpus.open("w", encoding="utf-8") as dst:
        lines = [line for line in src if json.loads(line)["id"] in SMALL_INDEX_IDS]
        dst.writelines(lines)
    assert len(lines) == len(SMALL_INDEX_IDS), "the sample corpus lost a document the tests use"
    index = folder / "index"
    done = subprocess.run(
        [sys.executable, "-m", "ingest", "build", "--input", str(corpus), "--index", str(index)],
        cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
        env={**os.environ, "TQDM_DISABLE": "1"})
    if done.returncode != 0:
        pytest.fail(f"python -m ingest build failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return index
