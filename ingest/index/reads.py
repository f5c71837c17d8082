"""Reading an index: snapshots of the published generation, chunks and vectors by id or row.

A reader sees the rows of the last *published* generation only (``VISIBLE_AT``), inside one read
transaction, so a build in progress (or killed) is invisible to it. Vectors are raw float32 blobs,
checked against the manifest's dimension before use.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..vectors import VectorDataError, decode_parts, decode_vectors
from . import sql
from .check import database_damaged


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved chunk: its id, score (higher is better), text and metadata."""

    chunk_id: str
    score: float
    text: str
    metadata: dict


@dataclass(frozen=True, slots=True)
class StoredChunk:
    id: str
    text: str
    metadata: dict


class IndexReads:
    """The read half of :class:`ingest.index.IndexStore` (a mixin: it uses the store's ``path``,
    ``dim``, ``manifest``, ``refresh`` and per-thread ``_conn``)."""

    path: Path
    dim: int
    manifest: dict
    _conn: Callable[[], sqlite3.Connection]
    refresh: Callable[[], dict]

    @contextmanager
    def snapshot(self) -> Iterator[tuple[sqlite3.Connection, int]]:
        """A read transaction and the published generation it sees."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='manifest'").fetchone()
            gen = json.loads(row[0])["generation"] if row else 0
            yield conn, int(gen)
        finally:
            conn.execute("COMMIT")

    def _visible(self, columns: str, ids: Sequence[str]) -> list[tuple]:
        """(chunk_id, *columns) of the chunks with these ids visible in one snapshot."""
        found: list[tuple] = []
        with self.snapshot() as (conn, gen):
            for part, marks in sql.in_batches(list(ids)):
                q = (
                    f"SELECT chunk_id, {columns} FROM chunks WHERE {sql.VISIBLE_AT} AND "
                    f"chunk_id IN ({marks})"
                )
                found.extend(conn.execute(q, [gen, gen, *part]))
        return found

    def get(self, ids: Sequence[str]) -> list[StoredChunk]:
        """The chunks with these ids, in that order (unknown ids are left out)."""
        keys = [str(i) for i in ids]
        out = {
            cid: StoredChunk(cid, text, json.loads(md))
            for cid, text, md in self._visible("text, metadata", keys)
        }
        return [out[k] for k in keys if k in out]

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors (n, dim) of these chunk ids, in order; unknown ids raise KeyError."""
        keys = [str(i) for i in ids]
        found = dict(self._visible(sql.vector_sql(self.dim), keys))
        missing = [i for i in ids if str(i) not in found]
        if missing:
            raise KeyError(f"unknown chunk ids: {missing[:5]}")
        try:
            return decode_vectors([found[k] for k in keys], self.dim)
        except VectorDataError as e:
            raise database_damaged(self.path, f"holds a bad vector ({e})") from e

    def rows(self, rids: Sequence[int]) -> dict[int, tuple[str, str, dict]]:
        """rid -> (chunk_id, text, metadata) for these row ids (missing rows left out)."""
        out = {}
        conn = self._conn()
        for part, marks in sql.in_batches([int(r) for r in rids]):
            q = f"SELECT rid, chunk_id, text, metadata FROM chunks WHERE rid IN ({marks})"
            for rid, cid, text, md in conn.execute(q, part):
                out[rid] = (cid, text, json.loads(md))
        return out

    def hits(self, scored: Sequence[tuple[int, float]]) -> list[Hit]:
        """The :class:`Hit` of each (row id, score), in order (rows gone since are left out)."""
        rows = self.rows([r for r, _ in scored])
        return [Hit(rows[r][0], s, rows[r][1], rows[r][2]) for r, s in scored if r in rows]

    def part_vectors(self, rids: Sequence[int]) -> dict[int, np.ndarray]:
        """rid -> its part vectors (n_parts, dim) float32, for the rows that have them."""
        out: dict[int, np.ndarray] = {}
        conn = self._conn()
        max_parts = int(self.manifest["embedding"].get("max_tokens") or 512)
        for part, marks in sql.in_batches([int(r) for r in rids]):
            q = f"SELECT rid, parts FROM chunks WHERE parts IS NOT NULL AND rid IN ({marks})"
            for rid, blob in conn.execute(q, part):
                try:
                    out[rid] = decode_parts(blob, self.dim, max_parts)
                except VectorDataError as e:
                    problem = f"holds bad part vectors in chunk row {rid} ({e})"
                    raise database_damaged(self.path, problem) from e
        return out

    def document_sources(self, doc_ids: Sequence[str]) -> dict[str, str | None]:
        """doc_id -> source of these documents when not deleted (published or staged)."""
        out: dict[str, str | None] = {}
        conn = self._conn()
        for part, marks in sql.in_batches(doc_ids):
            q = (
                f"SELECT doc_id, source FROM documents WHERE gen_deleted IS NULL AND doc_id IN "
                f"({marks})"
            )
            out.update(conn.execute(q, part).fetchall())
        return out

    def has_changes(self, gen: int) -> bool:
        """Whether generation ``gen`` added or deleted any row."""
        with self.snapshot() as (conn, _):
            q = "SELECT 1 FROM {t} WHERE gen_added = ? OR gen_deleted = ? LIMIT 1"
            return any(
                conn.execute(q.format(t=t), (gen, gen)).fetchone() for t in ("documents", "chunks")
            )

    def count(self) -> int:
        return int(self.refresh()["counts"]["chunks"])
