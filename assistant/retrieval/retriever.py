"""``GuidelineRetriever``: a LangChain retriever over an index built by ``ingest``.

It searches the index (hybrid dense + lexical by default, with the index's re-ranking steps),
and scores every hit by the cosine similarity of the query's embedding and the passage's
(``metadata["similarity"]``), a scale that does not depend on the search mode.  Its threshold
(drop hits below ``score_threshold``) and ``mmr=True`` (maximal marginal relevance over
``fetch_k`` candidates) are re-ranking steps of ``ingest.rerank`` appended to the search's
own.  ``k``, ``sources`` and ``score_threshold`` may also be given per call:
``retriever.invoke(q, k=2, sources=["cdc"])``.

Each ``Document`` has ``id`` = the chunk id and metadata ``id`` (the guideline's id), ``chunk_id``,
``source``, ``title``, ``url``, ``heading``, ``start``, ``end``, ``score`` (the search's own)
and ``similarity``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import PrivateAttr

_index_lock = threading.Lock()
_open_indexes: dict[Path, Any] = {}


def open_index_cached(path: str | Path) -> Any:
    """``ingest.open_index(path)``, opened once per folder and shared (read-only)."""
    import ingest

    key = Path(path).expanduser().resolve()
    with _index_lock:
        index = _open_indexes.get(key)
        if index is None:
            index = ingest.open_index(key)
            _open_indexes[key] = index
        return index


def forget_indexes() -> None:
    """Drop the cached open indexes (after an index was rebuilt in place)."""
    with _index_lock:
        _open_indexes.clear()


def hit_to_document(hit: Any, similarity: float | None = None) -> Document:
    """An ``ingest`` ``Hit`` → a Document carrying the citation metadata."""
    meta = dict(hit.metadata)
    meta.setdefault("id", meta.get("doc_id"))
    meta["chunk_id"] = hit.chunk_id
    meta["score"] = float(hit.score)
    if similarity is not None:
        meta["similarity"] = float(similarity)
    return Document(id=hit.chunk_id, page_content=hit.text, metadata=meta)


class GuidelineRetriever(BaseRetriever):
    """Retrieves guideline passages from an ``ingest`` index folder."""

    index_path: str
    """The index folder (``python -m ingest build ... --out DIR``)."""
    k: int = 4
    score_threshold: float | None = None
    """Minimum cosine similarity of query and passage; ``None`` keeps every hit."""
    sources: list[str] | None = None
    """Only these corpus sources (e.g. ``["cdc", "nhlbi"]``); ``None``: all."""
    mode: str = "hybrid"
    mmr: bool = False
    fetch_k: int = 20
    lambda_mult: float = 0.5

    _index: Any = PrivateAttr(default=None)

    @property
    def index(self) -> Any:
        if self._index is None:
            self._index = open_index_cached(self.index_path)
        return self._index

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        k = int(kwargs.get("k", self.k))
        sources = kwargs.get("sources", self.sources)
        threshold = kwargs.get("score_threshold", self.score_threshold)
        mode = kwargs.get("mode", self.mode)
        mmr = bool(kwargs.get("mmr", self.mmr))
        from ingest.search import MODES  # (ingest is imported on first use, as in _open)

        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; expected one of {MODES}")
        if k <= 0:
            return []
        steps = list(self.index.hybrid.rerank) if mode == "hybrid" else []
        if threshold is not None:
            steps.append(f"threshold:min_similarity={float(threshold)!r}")
        if mmr:
            fetch_k = max(k, int(kwargs.get("fetch_k", self.fetch_k)))
            lam = float(kwargs.get("lambda_mult", self.lambda_mult))
            steps.append(f"mmr:fetch_k={fetch_k},lambda_mult={lam!r}")
        query_vec = np.asarray(self.index.embed_query(query), dtype=np.float32)  # (dim,)
        hits = self.index.search(query, k=k, sources=sources, mode=mode, vector=query_vec,
                                 rerank=steps)
        if not hits:
            return []
        vectors = np.asarray(self.index.get_vectors([h.chunk_id for h in hits]), dtype=np.float32)
        similarity = _cosine(query_vec, vectors)  # (n_hits,)
        return [hit_to_document(h, s) for h, s in zip(hits, similarity.tolist(), strict=True)]


def _cosine(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of one query (dim,) with each row of (n, dim)."""
    qn = query / max(float(np.linalg.norm(query)), 1e-12)
    norms = np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)  # (n,)
    return (vectors @ qn) / norms
