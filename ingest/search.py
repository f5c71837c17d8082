"""Reading an index: dense, lexical and hybrid (reciprocal rank fusion) search.

``open_index(path)`` gives an :class:`Index`, safe to share between threads (Streamlit sessions):
database connections are per thread, the FAISS view is immutable and swapped when a newer
generation is published, and the embedding model runs under a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import manifest as mf
from .embedding import Embedder, canonical_name, load_embedder
from .errors import IndexFolderError
from .index import DB_NAME, Hit, IndexStore
from .lexical import lexical_search, term_counts
from .rerank import Query, make_steps
from .rerank import run as run_steps

MODES = ("hybrid", "dense", "lexical")


@dataclass(frozen=True)
class HybridSettings:
    """Reciprocal rank fusion (Cormack et al. 2009; MedRAG): sum of weight / (rrf_k + rank),
    of the dense (chunk vectors) and lexical (BM25) rankings, then the re-ranking steps
    ``rerank`` names (see :mod:`ingest.rerank`; the part-vector steps need an index with part
    vectors and leave the order alone otherwise).
    """

    rrf_k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 0.5  # BM25 is the weaker retriever here (see docs/retrieval.md)
    # steps after the fusion (docs/retrieval.md): the passage that answers among the first
    # documents' passages, then passages that only restate their title behind the others
    rerank: tuple[str, ...] = ("doc:docs=2,depth=5", "restated")
    depth: int = 50  # candidates taken from each retriever (at least k)
    context_weight: float = 1.0  # BM25 weight of the context line (title › headings) vs the text
    abbreviations: bool = False  # BM25 also searches the other form of medical abbreviations

    def __post_init__(self) -> None:
        make_steps(self.rerank)  # an unknown step fails here, not at the first query


def rrf(rankings: Sequence[tuple[float, Sequence[int]]], rrf_k: int) -> list[tuple[int, float]]:
    """Fuse rankings (weight, ids best first) into (id, fused score), best first."""
    scores: dict[int, float] = {}
    for weight, ids in rankings:
        for rank, rid in enumerate(ids, start=1):
            scores[rid] = scores.get(rid, 0.0) + weight / (rrf_k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


class Index:
    """A read-only index with its embedding model (loaded on first use)."""

    def __init__(
        self,
        store: IndexStore,
        embedder: Embedder | None = None,
        hybrid: HybridSettings | None = None,
        threads: int | None = None,
    ) -> None:
        self.store = store
        self.hybrid = hybrid or HybridSettings()
        self._embedder = embedder
        self._threads = threads
        self._embedder_lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def manifest(self) -> dict:
        return self.store.manifest

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    emb = load_embedder(self.store.embedding_model, threads=self._threads)
                    self.store.check_embedding(emb.name, emb.dim, emb.inference)
                    self._embedder = emb
        return self._embedder

    def embed_query(self, text: str) -> np.ndarray:
        """The query's embedding (dim,), float32, unit norm."""
        return self.embedder.embed_query(text)

    def search(
        self,
        query: str,
        k: int = 5,
        sources: Sequence[str] | None = None,
        mode: str = "hybrid",
        vector: np.ndarray | None = None,
        rerank: Sequence[str] | None = None,
    ) -> list[Hit]:
        """The ``k`` best chunks for a question; ``mode`` is hybrid, dense or lexical.

        ``vector``: the question's embedding (``embed_query``) when the caller has it already.
        ``rerank``: the re-ranking steps to run (see :mod:`ingest.rerank`), e.g.
        ``[*index.hybrid.rerank, "threshold:min_similarity=0.3"]``; by default a hybrid search
        runs ``hybrid.rerank`` and the others none.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if k <= 0 or not query.strip():
            return []
        default = self.hybrid.rerank if mode == "hybrid" else ()
        steps = make_steps(default if rerank is None else rerank)
        if vector is None and (mode != "lexical" or steps):
            vector = self.embed_query(query)
        if mode == "dense" and not steps:
            return self.search_by_vector(vector, k, sources)
        depth = max(k, self.hybrid.depth) if (steps or mode == "hybrid") else k
        view = self.store.view()
        if mode == "dense":
            fused = view.search(vector, depth, sources)
        else:
            with self.store.snapshot() as (conn, gen):
                lexical = lexical_search(
                    conn, min(gen, view.generation), query, depth, sources,
                    (self.hybrid.context_weight, 1.0), self.hybrid.abbreviations,
                )
            if mode == "lexical":
                fused = lexical
            else:
                dense = view.search(vector, depth, sources)
                fused = rrf(
                    [
                        (self.hybrid.dense_weight, [r for r, _ in dense]),
                        (self.hybrid.lexical_weight, [r for r, _ in lexical]),
                    ],
                    self.hybrid.rrf_k,
                )
        if steps:
            q = Query(query, np.asarray(vector, dtype=np.float32).reshape(-1), k, self.store, view)
            fused = run_steps(steps, q, fused)
        return self.store.hits(fused[:k])

    def term_counts(self, words: Sequence[str]) -> tuple[dict[str, int], int]:
        """(word -> chunks holding it, chunks in the index): document frequencies for weighting
        a question's words by rarity (BM25's stemming; see ``lexical.term_counts``)."""
        with self.store.snapshot() as (conn, gen):
            counts = term_counts(conn, gen, words)
        return counts, int(self.manifest["counts"]["chunks"])

    def search_by_vector(
        self, vector, k: int = 5, sources: Sequence[str] | None = None
    ) -> list[Hit]:
        """The ``k`` chunks nearest (cosine) to an embedding."""
        return self.store.search_by_vector(vector, k, sources)

    def get_vectors(self, chunk_ids: Sequence[str]) -> np.ndarray:
        """Stored embeddings (n, dim) of these chunks, in order (e.g. for MMR)."""
        return self.store.get_vectors(chunk_ids)

    def stats(self) -> dict:
        man = self.store.refresh()
        size = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        return {
            "path": str(self.path),
            "documents": man["counts"]["documents"],
            "chunks": man["counts"]["chunks"],
            "per_source": man["counts"]["per_source"],
            "embedding_model": man["embedding"]["model"],
            "dim": man["embedding"]["dim"],
            "size_bytes": size,
            "generation": man["generation"],
            "chunking": man.get("chunking"),
            "ann": man.get("ann"),
            "updated": man.get("updated"),
            "last_build": man.get("last_build"),
        }

    def close(self) -> None:
        self.store.close()


def open_index(
    path: str | Path,
    embedder: Embedder | str | None = None,
    hybrid: HybridSettings | None = None,
    threads: int | None = None,
) -> Index:
    """Open an index read-only; with an embedder (or model name), check it is the index's model.

    Without one, the index's own model is loaded on the first query.
    """
    store = IndexStore.open(path, readonly=True)
    man = store.manifest
    if man["kind"] == mf.KIND_CORPUS and man["generation"] == 0:
        raise IndexFolderError(
            path,
            "no build has completed yet (one may be running or was "
            "interrupted): run `python -m ingest build` to finish it",
        )
    if isinstance(embedder, str):
        name = canonical_name(embedder)
        if name != store.embedding_model:
            store.check_embedding(name, store.dim)
        embedder = None
    elif embedder is not None:
        store.check_embedding(embedder.name, embedder.dim, embedder.inference)
    return Index(store, embedder, hybrid, threads)


__all__ = ["DB_NAME", "MODES", "HybridSettings", "Index", "open_index", "rrf"]
