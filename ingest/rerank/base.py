"""What a re-ranking step sees: the question and read access to the index's vectors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..index import IndexStore
from ..vectors import VectorView
from .reads import chunks_of_documents, documents_of

Scored = tuple[int, float]  # (chunk row id, score), higher is better


@dataclass
class Query:
    """One search's question, its unit embedding (dim,), how many hits it returns, and the
    index generation it reads (``view``), with small caches shared by the steps."""

    text: str
    vector: np.ndarray
    k: int
    store: IndexStore
    view: VectorView
    _docs: dict[int, str] = field(default_factory=dict)
    _rows: dict[int, tuple[str, str, dict]] = field(default_factory=dict)

    def chunk_vectors(self, rids: Sequence[int]) -> np.ndarray | None:
        """(n, dim) unit vectors of these rows from the view, or None if one is not in it."""
        rids_arr = np.asarray(list(rids), dtype=np.int64)
        view_rids = self.view.rids
        if not len(view_rids):
            return None
        pos = np.minimum(np.searchsorted(view_rids, rids_arr), len(view_rids) - 1)
        if not (view_rids[pos] == rids_arr).all():
            return None
        return self.view.vectors[pos]

    def chunk_cosines(self, rids: Sequence[int]) -> np.ndarray | None:
        vecs = self.chunk_vectors(rids)
        return None if vecs is None else vecs @ self.vector

    def part_vectors(self, rids: Sequence[int]) -> dict[int, np.ndarray]:
        """rid -> (n_parts, dim) unit vectors of its sentences (rows without parts left out)."""
        return self.store.part_vectors(list(rids))

    def rows(self, rids: Sequence[int]) -> dict[int, tuple[str, str, dict]]:
        """rid -> (chunk_id, text, metadata) (``IndexStore.rows``), each row read once per
        query whichever steps ask for it."""
        want = [r for r in rids if r not in self._rows]
        if want:
            self._rows.update(self.store.rows(want))
        return {r: self._rows[r] for r in rids if r in self._rows}

    def doc_ids(self, rids: Sequence[int]) -> dict[int, str]:
        """rid -> its document id."""
        want = [r for r in rids if r not in self._docs]
        if want:
            self._docs.update(documents_of(self.store, want))
        return {r: self._docs[r] for r in rids if r in self._docs}

    def document_chunks(self, doc_ids: Sequence[str]) -> dict[str, list[int]]:
        """doc id -> the row ids of its chunks in this view's generation, in row order."""
        return chunks_of_documents(self.store, self.view.generation, doc_ids)
