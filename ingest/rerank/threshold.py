"""Drop candidates whose chunk's cosine similarity to the question is below a minimum."""

from __future__ import annotations

from .base import Query, Scored


class Threshold:
    def __init__(self, min_similarity: float) -> None:
        self.min_similarity = float(min_similarity)

    def __call__(self, query: Query, ranked: list[Scored]) -> list[Scored]:
        rids = [r for r, _ in ranked]
        cos = query.chunk_cosines(rids)
        if cos is None:  # rows outside the view: their stored vectors
            rows = query.store.rows(rids)
            ranked = [rs for rs in ranked if rs[0] in rows]
            cos = query.store.get_vectors([rows[r][0] for r, _ in ranked]) @ query.vector
        return [rs for rs, c in zip(ranked, cos.tolist(), strict=True) if c >= self.min_similarity]
