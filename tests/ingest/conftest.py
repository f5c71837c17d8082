"""Fixtures of the ingest tests: the real default model, small real corpora and indexes."""

from __future__ import annotations

from pathlib import Path

import pytest
from ingest_helpers import THREADS, shortest, write_jsonl

import ingest


@pytest.fixture(scope="session")
def embedder() -> ingest.Embedder:
    """The real default model (packaged all-MiniLM-L6-v2), on 2 torch threads."""
    return ingest.load_embedder(threads=THREADS)


@pytest.fixture(scope="session")
def small_docs() -> list[dict]:
    return shortest(3)


@pytest.fixture()
def small_corpus(tmp_path, small_docs) -> Path:
    return write_jsonl(tmp_path / "small.jsonl", small_docs)


@pytest.fixture(scope="session")
def small_index(tmp_path_factory, embedder, small_docs) -> Path:
    """A real index of the small corpus, built once (tests must not write to it)."""
    folder = tmp_path_factory.mktemp("small-index")
    corpus = write_jsonl(folder / "small.jsonl", small_docs)
    ingest.build(corpus, folder / "index", embedder=embedder, progress=False)
    return folder / "index"
