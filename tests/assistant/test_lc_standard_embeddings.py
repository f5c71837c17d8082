"""LangChain's standard embeddings suites on real sentence-transformers (the bundled MiniLM)."""

from __future__ import annotations

from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from assistant.retrieval.embeddings import SentenceTransformerEmbeddings


class _MiniLM:
    """What both suites instantiate: our adapter on the bundled MiniLM."""

    @property
    def embeddings_class(self) -> type[SentenceTransformerEmbeddings]:
        return SentenceTransformerEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model_name": "sentence-transformers/all-MiniLM-L6-v2"}


class TestEmbeddingsUnit(_MiniLM, EmbeddingsUnitTests):
    pass


class TestEmbeddingsIntegration(_MiniLM, EmbeddingsIntegrationTests):
    pass


def test_embeddings_are_meaningful_and_normalised() -> None:
    emb = SentenceTransformerEmbeddings()
    q = emb.embed_query("high blood pressure treatment")
    d = emb.embed_documents(["Hypertension is managed with lifestyle change and drugs.",
                             "The football match ended in a draw."])
    assert len(q) == emb.dimension == 384
    assert abs(sum(x * x for x in q) - 1.0) < 1e-4
    sim = [sum(a * b for a, b in zip(q, v, strict=True)) for v in d]
    assert sim[0] > sim[1] + 0.2
