"""LangChain's standard vector-store and retriever suites on the real ingest index store.

The vector-store suite brings its own deterministic fake embeddings (by design of the suite);
the retriever suite and the other tests here use the real index and real sentence-transformers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from assistant.retriever import GuidelineRetriever
from assistant.vectorstore import GuidelineVectorStore


class TestGuidelineVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorStore]:
        store = GuidelineVectorStore.create(tmp_path / "store", self.get_embeddings())
        yield store


class TestGuidelineRetriever(RetrieversIntegrationTests):
    index_dir: str = ""

    @pytest.fixture(autouse=True)
    def _index(self, small_index: Path) -> None:
        type(self).index_dir = str(small_index)

    @property
    def retriever_constructor(self) -> type[GuidelineRetriever]:
        return GuidelineRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"index_path": self.index_dir}

    @property
    def retriever_query_example(self) -> str:
        return "blood pressure screening in adults"
