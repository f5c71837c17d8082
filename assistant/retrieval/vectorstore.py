"""``GuidelineVectorStore``: a LangChain ``VectorStore`` over the ingest index (FAISS + SQLite).

Two ways in:

* ``GuidelineVectorStore.open(index_dir)`` — an index built by ``python -m ingest build``;
  queries are embedded with the model recorded in the index (``SentenceTransformerEmbeddings``);
* ``GuidelineVectorStore.create(folder, embedding)`` — a new, empty, writable store for any
  LangChain ``Embeddings`` (``add_texts``/``add_documents``, ``delete``, ``get_by_ids``).

Scores are cosine similarities (the store normalises vectors); relevance scores clip
them to [0, 1].  Search takes ``k``, ``sources=[...]`` (corpus sources) and ``filter={key:
value}`` (exact metadata match, or a callable on the metadata); MMR re-ranks ``fetch_k``
candidates.  Documents come back with ``id`` = the stored id and the metadata as stored.
Async variants are LangChain's (the sync call in an executor).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance


def _hit_parts(hit: Any) -> tuple[str, str, dict[str, Any], float | None]:
    """(id, text, metadata, score) of an ingest Hit / record (object or dict)."""
    if isinstance(hit, dict):
        hid = hit.get("chunk_id", hit.get("id"))
        return str(hid), hit["text"], dict(hit.get("metadata") or {}), hit.get("score")
    hid = getattr(hit, "chunk_id", None) or getattr(hit, "id", None)
    return str(hid), hit.text, dict(hit.metadata or {}), getattr(hit, "score", None)


class GuidelineVectorStore(VectorStore):
    """LangChain VectorStore over ``ingest.IndexStore`` (see the module docstring)."""

    def __init__(self, store: Any, embedding: Embeddings) -> None:
        self.store = store
        self._embedding = embedding

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, embedding: Embeddings,
               embedding_model: str | None = None) -> GuidelineVectorStore:
        """A new empty store in ``path`` for vectors of ``embedding``."""
        import ingest

        dim = len(embedding.embed_query("dimension probe"))
        name = embedding_model or getattr(embedding, "model_name", None) or type(embedding).__name__
        return cls(ingest.IndexStore.create(Path(path), dim, str(name)), embedding)

    @classmethod
    def open(cls, path: str | Path, embedding: Embeddings | None = None) -> GuidelineVectorStore:
        """An existing index folder; by default embeds with the model the index records."""
        import ingest

        store = ingest.IndexStore.open(Path(path))
        if embedding is None:
            from assistant.retrieval.embeddings import SentenceTransformerEmbeddings

            embedding = SentenceTransformerEmbeddings(model_name=str(store.embedding_model))
        return cls(store, embedding)

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings,
                   metadatas: list[dict] | None = None, *, ids: list[str] | None = None,
                   path: str | Path | None = None, **kwargs: Any) -> GuidelineVectorStore:
        if path is None:
            raise ValueError("GuidelineVectorStore.from_texts needs path=FOLDER for the new store")
        vs = cls.create(path, embedding)
        vs.add_texts(texts, metadatas, ids=ids)
        return vs

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    # -- writing -----------------------------------------------------------------------------

    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                  ids: list[str | None] | None = None, **kwargs: Any) -> list[str]:
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"{len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        if not texts:
            return []
        final_ids = [str(i) if i else str(uuid.uuid4()) for i in (ids or [None] * len(texts))]
        vectors = np.asarray(self._embedding.embed_documents(texts), dtype=np.float32)  # (n, dim)
        metas = [dict(m or {}) for m in (metadatas or [{}] * len(texts))]
        self.store.add(final_ids, vectors, texts, metas)  # upsert: an existing id is replaced
        return final_ids

    def close(self) -> None:
        self.store.close()

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        if ids is None:
            raise ValueError("delete needs the ids to remove")
        self.store.delete([str(i) for i in ids])
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        docs = []
        for record in self.store.get([str(i) for i in ids]):
            rid, text, meta, _ = _hit_parts(record)
            docs.append(Document(id=rid, page_content=text, metadata=meta))
        return docs

    # -- searching ---------------------------------------------------------------------------

    def _search(self, vector: Sequence[float], k: int, sources: list[str] | None = None,
                where: dict[str, Any] | Callable[[dict], bool] | None = None) -> list[Any]:
        vec = np.asarray(vector, dtype=np.float32)  # (dim,)
        return self.store.search_by_vector(vec, k=k, sources=sources, filter=where)

    def similarity_search_with_score_by_vector(
        self, embedding: Sequence[float], k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        out = []
        for hit in self._search(embedding, k, kwargs.get("sources"), kwargs.get("filter")):
            hid, text, meta, score = _hit_parts(hit)
            out.append((Document(id=hid, page_content=text, metadata=meta), float(score or 0.0)))
        return out

    def similarity_search_with_score(self, query: str, k: int = 4,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        return self.similarity_search_with_score_by_vector(self._embedding.embed_query(query), k,
                                                           **kwargs)

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4,
                                    **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score_by_vector(embedding, k, **kwargs)]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return lambda cosine: min(1.0, max(0.0, cosine))

    def max_marginal_relevance_search_by_vector(
        self, embedding: list[float], k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        hits = self._search(embedding, max(k, fetch_k), kwargs.get("sources"),
                            kwargs.get("filter"))
        if not hits:
            return []
        parts = [_hit_parts(h) for h in hits]
        vectors = np.asarray(self.store.get_vectors([p[0] for p in parts]), dtype=np.float32)
        picked = maximal_marginal_relevance(np.asarray(embedding, dtype=np.float32),
                                            list(vectors), lambda_mult, k)
        return [Document(id=parts[i][0], page_content=parts[i][1], metadata=parts[i][2])
                for i in picked]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                      lambda_mult: float = 0.5, **kwargs: Any) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(
            self._embedding.embed_query(query), k, fetch_k, lambda_mult, **kwargs)
