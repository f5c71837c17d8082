"""Best-sentence re-ordering: the first ``depth`` candidates re-ordered by the chunk's cosine
similarity to the question plus its best sentence's (part vectors, see
``ingest.embedding.Embedder.embed_parts``), equal weights, no parameter fitted. The set of those
first candidates is unchanged, only their order: a chunk one of whose sentences answers the
question moves ahead of one that is only about the same subject."""

from __future__ import annotations

import numpy as np

from .base import Query, Scored


def chunk_and_best_part(query: Query, rids: list[int]) -> list[float] | None:
    """Per row: cosine(chunk) + max cosine(its sentences); None when a row is not in the view."""
    cos = query.chunk_cosines(rids)
    if cos is None:
        return None
    parts = query.part_vectors(rids)
    out = []
    for rid, c in zip(rids, cos.tolist(), strict=True):
        best = float(np.max(parts[rid] @ query.vector)) if rid in parts else c
        out.append(c + best)
    return out


class BestSentence:
    def __init__(self, depth: float = 5) -> None:
        self.depth = int(depth)

    def __call__(self, query: Query, ranked: list[Scored]) -> list[Scored]:
        if self.depth < 2 or not query.store.manifest["embedding"].get("parts"):
            return ranked
        head = ranked[: self.depth]
        rids = [r for r, _ in head]
        scores = chunk_and_best_part(query, rids)
        if scores is None:
            return ranked  # a row outside this generation's vectors: keep the order
        scored = sorted(zip(rids, scores, strict=True), key=lambda rs: (-rs[1], rs[0]))
        return scored + ranked[self.depth :]
