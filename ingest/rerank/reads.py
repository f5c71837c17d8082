"""Index reads the re-ranking steps need that the store does not offer: documents of rows, rows
of documents (plain SQL on the chunks table, read-only)."""

from __future__ import annotations

from collections.abc import Sequence

from ..index import VISIBLE_AT, IndexStore

_BATCH = 500


def documents_of(store: IndexStore, rids: Sequence[int]) -> dict[int, str]:
    """rid -> doc id of these chunk rows."""
    out: dict[int, str] = {}
    rids = [int(r) for r in rids]
    with store.snapshot() as (conn, _gen):
        for i in range(0, len(rids), _BATCH):
            part = rids[i : i + _BATCH]
            q = f"SELECT rid, doc_id FROM chunks WHERE rid IN ({','.join('?' * len(part))})"
            out.update((int(r), d) for r, d in conn.execute(q, part))
    return out


def chunks_of_documents(
    store: IndexStore, generation: int, doc_ids: Sequence[str]
) -> dict[str, list[int]]:
    """doc id -> row ids of its chunks visible at ``generation``, ascending."""
    out: dict[str, list[int]] = {d: [] for d in doc_ids}
    ids = list(out)
    with store.snapshot() as (conn, _gen):
        for i in range(0, len(ids), _BATCH):
            part = ids[i : i + _BATCH]
            q = (
                f"SELECT doc_id, rid FROM chunks WHERE {VISIBLE_AT} AND "
                f"doc_id IN ({','.join('?' * len(part))}) ORDER BY rid"
            )
            for d, r in conn.execute(q, [generation, generation, *part]):
                out[d].append(int(r))
    return out
