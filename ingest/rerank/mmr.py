"""Maximal marginal relevance (Carbonell & Goldstein 1998) over the first ``fetch_k`` candidates:
``k`` of them, each the best trade-off (``lambda_mult``) between similarity to the question and
dissimilarity to those already picked (langchain-core's ``maximal_marginal_relevance``)."""

from __future__ import annotations

from .base import Query, Scored


class Mmr:
    def __init__(self, fetch_k: float = 20, lambda_mult: float = 0.5) -> None:
        self.fetch_k = int(fetch_k)
        self.lambda_mult = float(lambda_mult)

    def __call__(self, query: Query, ranked: list[Scored]) -> list[Scored]:
        from langchain_core.vectorstores.utils import maximal_marginal_relevance

        pool = ranked[: max(self.fetch_k, query.k)]
        vecs = query.chunk_vectors([r for r, _ in pool])
        if vecs is None:
            return ranked
        picked = maximal_marginal_relevance(query.vector, list(vecs), self.lambda_mult, query.k)
        return [pool[i] for i in picked]
