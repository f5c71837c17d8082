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

MODES = ("hybrid", "dense", "lexical")


@dataclass(frozen=True)
class HybridSettings:
    """Reciprocal rank fusion (Cormack et al. 2009; MedRAG): sum of weight / (rrf_k + rank),
    of the dense (chunk vectors) and lexical (BM25) rankings.

    When the index has part vectors (its chunks' sentences, see ``Embedder.embed_parts``), the
    first ``rerank_depth`` fused chunks are then re-ordered by the sum of two cosine
    similarities to the question: the chunk's and its best sentence's (parameter-free, equal
    weights). The set of those first chunks is unchanged, only their order: a chunk one of whose
    sentences answers the question moves ahead of one that is only about the same subject.
    """

    rrf_k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 0.5  # BM25 is the weaker retriever here (see docs/retrieval.md)
    rerank_depth: int = 5  # fused chunks re-ordered by chunk + best-sentence similarity (0: off)
    depth: int = 50  # candidates taken from each retriever (at least k)


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
    ) -> list[Hit]:
        """The ``k`` best chunks for a question; ``mode`` is hybrid, dense or lexical.

        ``vector``: the question's embedding (``embed_query``) when the caller has it already.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if k <= 0 or not query.strip():
            return []
        if vector is None and mode != "lexical":
            vector = self.embed_query(query)
        if mode == "dense":
            return self.search_by_vector(vector, k, sources)
        depth = max(k, self.hybrid.depth)
        view = self.store.view()
        with self.store.snapshot() as (conn, gen):
            lexical = lexical_search(
                conn, min(gen, view.generation), query, k if mode == "lexical" else depth, sources
            )
        if mode == "lexical":
            return self.store.hits(lexical)
        dense = view.search(vector, depth, sources)
        fused = rrf(
            [
                (self.hybrid.dense_weight, [r for r, _ in dense]),
                (self.hybrid.lexical_weight, [r for r, _ in lexical]),
            ],
            self.hybrid.rrf_k,
        )
        if self.manifest["embedding"].get("parts") and self.hybrid.rerank_depth > 1:
            fused = self._rerank_by_parts(view, vector, fused, self.hybrid.rerank_depth)
        return self.store.hits(fused[:k])

    def _rerank_by_parts(self, view, vector: np.ndarray, fused: list, depth: int) -> list:
        """The first ``depth`` of the fused (row id, score) re-ordered by the chunk's cosine
        similarity plus its best part's; the score becomes that sum."""
        head = fused[:depth]
        rids = np.asarray([r for r, _ in head], dtype=np.int64)
        pos = np.searchsorted(view.rids, rids)  # view rows are in row id order
        pos = np.minimum(pos, max(len(view.rids) - 1, 0))
        if not len(view.rids) or not (view.rids[pos] == rids).all():
            return fused  # a row outside this generation's vectors: keep the fused order
        chunk_cos = view.vectors[pos] @ vector  # (depth,)
        parts = self.store.part_vectors(rids.tolist())
        scored = []
        for rid, cos in zip(rids.tolist(), chunk_cos.tolist(), strict=True):
            best = float(np.max(parts[rid] @ vector)) if rid in parts else cos
            scored.append((rid, cos + best))
        scored.sort(key=lambda rs: (-rs[1], rs[0]))
        return scored + fused[depth:]

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
