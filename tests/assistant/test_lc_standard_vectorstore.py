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

from assistant.retrieval.retriever import GuidelineRetriever
from assistant.retrieval.vectorstore import GuidelineVectorStore


class TestGuidelineVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorStore]:
        store = GuidelineVectorStore.create(tmp_path / "store", self.get_embeddings())
        try:
            yield store
        finally:
            store.close()


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


def test_retriever_documents_carry_citation_metadata(small_index: Path) -> None:
    retriever = GuidelineRetriever(index_path=str(small_index), k=3)
    docs = retriever.invoke("How often should adults be screened for high blood pressure?")
    assert len(docs) == 3
    assert docs[0].metadata["id"] in {"ngc-10822", "ngc-10799"}
    for d in docs:
        assert d.id == d.metadata["chunk_id"]
        keys = {"id", "source", "title", "url", "heading", "score", "similarity"}
        assert keys <= d.metadata.keys()
    assert docs[0].metadata["similarity"] >= docs[-1].metadata["similarity"] - 0.2


def test_retriever_threshold_sources_and_mmr(small_index: Path) -> None:
    retriever = GuidelineRetriever(index_path=str(small_index), k=4)
    assert retriever.invoke("quantum chromodynamics of gluon jets", score_threshold=0.35) == []
    cdc = retriever.invoke("lice infestation treatment", sources=["cdc"])
    assert cdc and all(d.metadata["source"] == "cdc" for d in cdc)
    plain = retriever.invoke("blood pressure", k=4, mode="dense")
    diverse = retriever.invoke("blood pressure", k=4, mode="dense", mmr=True, fetch_k=20)
    assert len(diverse) == 4 and {d.id for d in diverse} != {d.id for d in plain}
    with pytest.raises(ValueError):
        retriever.invoke("x", mode="psychic")


def test_vectorstore_over_a_built_index(small_index: Path) -> None:
    store = GuidelineVectorStore.open(small_index)
    try:
        found = store.similarity_search_with_score("asthma inhaler", k=2)
        assert found and found[0][0].metadata["doc_id"] == "medquad-nhlbi-0000010"
        assert -1.0 <= found[0][1] <= 1.0
        scored = store.similarity_search_with_relevance_scores("asthma inhaler", k=2)
        assert all(0.0 <= s <= 1.0 for _, s in scored)
        only = store.similarity_search("treatment", k=3, sources=["cdc"])
        assert only and all(d.metadata["source"] == "cdc" for d in only)
        by_filter = store.similarity_search("treatment", k=3, filter={"doc_id": "ngc-10796"})
        assert by_filter and all(d.metadata["doc_id"] == "ngc-10796" for d in by_filter)
        mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 3}).invoke("blood")
        assert len(mmr) == 3 and len({d.id for d in mmr}) == 3
        assert store.get_by_ids([found[0][0].id])[0].page_content == found[0][0].page_content
    finally:
        store.close()
