"""Writing an index: generations staged under the write lock and published in one transaction.

Every row carries the generation that added it and the one that deleted it. A build takes the
write lock, stages its documents in generation ``g + 1`` one batch per transaction (``stage``), and
``publish`` makes it visible by rewriting the manifest in one transaction; a crash loses at most
the batch in flight and the next build resumes the same staging generation (``meta.staging_gen``).
The plain store API (``add``/``delete``) publishes a generation per call.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .. import manifest as mf
from ..errors import IndexBusy, IndexFolderError, IndexWriteFailed
from . import sql
from .lock import WriteLock

SQLITE_IOERR, SQLITE_FULL = 10, 13  # primary result codes (the low byte of extended ones)


class IndexWrites:
    """The write half of :class:`ingest.index.IndexStore` (a mixin: it uses the store's
    ``path``, ``db_path``, ``dim``, ``readonly``, ``manifest`` and ``_read_manifest``)."""

    path: Path
    db_path: Path
    readonly: bool
    manifest: dict
    dim: int
    _read_manifest: Callable[[sqlite3.Connection], dict]

    def _init_writes(self) -> None:
        self._write_lock = threading.RLock()
        self._writer: sqlite3.Connection | None = None
        self._lock = WriteLock(self.path)

    def _take_lock(self, wait: bool) -> None:
        if self._lock.held:
            return
        if self.readonly:
            raise IndexFolderError(self.path, "was opened read-only")
        self._lock.acquire(wait)

    @contextmanager
    def _transaction(self, hold: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction under the folder's write lock (kept after it when ``hold``)."""
        with self._write_lock:
            had_lock = self._lock.held
            self._take_lock(wait=True)
            if self._writer is None:
                self._writer = sql.connect(self.db_path, readonly=False)
                self._writer.execute("PRAGMA synchronous=NORMAL")
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise
            except sqlite3.OperationalError as e:
                if write_failure(e):  # disk full, file size limit, I/O error: say so, typed
                    raise IndexWriteFailed(self.path, self.db_path, str(e)) from e
                raise
            finally:
                if not had_lock and not hold:
                    self._lock.release()

    def _rollback(self, conn: sqlite3.Connection) -> None:
        """Roll back (SQLite may have done it already); a connection that cannot is dropped."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            conn.close()
            self._writer = None

    def _close_writes(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._lock.release()

    # ---- publishing ---------------------------------------------------------------------------
    def _publish_in(self, conn, gen: int, update: Mapping[str, Any] | None = None) -> dict:
        sql.purge(conn, gen)
        man = self._read_manifest(conn)
        man.update(update or {})
        man["generation"] = gen
        man["updated"] = mf.now()
        man["counts"] = sql.counts(conn, gen)
        man["sources"] = sorted(man["counts"]["per_source"])
        if man["kind"] == mf.KIND_CORPUS:
            man["checksums"] = sql.checksums(conn, gen)
        sql.meta_set(conn, "manifest", man)
        sql.meta_set(conn, "staging_gen", None)
        return man

    def _after_publish(self, man: dict) -> None:
        self.manifest = man
        try:
            mf.write_json_atomic(self.path / mf.MANIFEST_NAME, man)
            self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except (OSError, sqlite3.DatabaseError):
            pass  # the database copy is authoritative; the JSON copy is for people

    def _current_generation(self, conn) -> int:
        staging = sql.meta_get(conn, "staging_gen")
        if staging is not None:
            raise IndexBusy(self.path, "holds an unfinished build; finish it (re-run build) first")
        return int(self._read_manifest(conn)["generation"])

    # ---- the plain store API (publishes at once) -------------------------------------------
    def add(
        self,
        ids: Sequence[str] | None,
        vectors,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[str]:
        """Insert or replace (same id) chunks with their vectors; returns their ids."""
        n = len(texts)
        ids = [uuid.uuid4().hex for _ in range(n)] if ids is None else [str(i) for i in ids]
        metas = [dict(m or {}) for m in (metadatas or [None] * n)]
        vecs = np.asarray(vectors, dtype=np.float32)
        if len(ids) != n or len(metas) != n or vecs.shape != (n, self.dim):
            raise ValueError(
                f"add: {len(ids)} ids, {n} texts, {len(metas)} metadatas and vectors "
                f"of shape {vecs.shape} do not agree (dim {self.dim})"
            )
        last = {cid: i for i, cid in enumerate(ids)}  # a repeated id: the last one wins
        keep = sorted(last.values())
        rows = [
            (
                ids[i],
                _opt_str(metas[i].get("doc_id")),
                _opt_str(metas[i].get("source")),
                "",
                str(texts[i]),
                metas[i],
            )
            for i in keep
        ]
        with self._transaction() as conn:
            gen = self._current_generation(conn) + 1
            for part, marks in sql.in_batches([ids[i] for i in keep]):
                sql.mark_deleted(conn, gen, f"chunk_id IN ({marks})", part)
            sql.insert_chunks(conn, gen, self.dim, rows, vecs[keep])
            man = self._publish_in(conn, gen)
        self._after_publish(man)
        return [ids[i] for i in keep]

    def delete(self, ids: Sequence[str]) -> int:
        """Remove chunks by id (unknown ids are ignored); returns how many were removed."""
        ids = [str(i) for i in ids]
        with self._transaction() as conn:
            gen = self._current_generation(conn) + 1
            before = conn.total_changes
            for part, marks in sql.in_batches(ids):
                sql.mark_deleted(conn, gen, f"chunk_id IN ({marks})", part)
            removed = conn.total_changes - before
            man = self._publish_in(conn, gen)
        self._after_publish(man)
        return removed

    # ---- the build API (a staging generation, published at the end) -----------------------
    def begin_build(self) -> int:
        """Take the write lock for a build and return its staging generation (resumed if any)."""
        self._take_lock(wait=False)
        with self._transaction(hold=True) as conn:
            staging = sql.meta_get(conn, "staging_gen")
            if staging is None:
                staging = int(self._read_manifest(conn)["generation"]) + 1
                sql.meta_set(conn, "staging_gen", staging)
        return int(staging)

    def live_documents(self) -> dict[str, str]:
        """doc_id -> content hash of every document not deleted (published or staged)."""
        with self._transaction(hold=True) as conn:
            return dict(
                conn.execute("SELECT doc_id, content_hash FROM documents WHERE gen_deleted IS NULL")
            )

    def stage(
        self, gen: int, documents: Sequence[tuple], chunks: Sequence[tuple], vectors, parts=None
    ) -> None:
        """Add (or replace) whole documents in one transaction.

        documents: (doc_id, source, title, url, content_hash, n_chars, n_chunks);
        chunks: (chunk_id, doc_id, source, context, text, metadata dict), with ``vectors`` (n, dim)
        and optionally ``parts`` (per chunk its part vectors, (n_i, dim)).
        """
        with self._transaction(hold=True) as conn:
            self._stage_delete(conn, gen, [d[0] for d in documents])
            conn.executemany(
                "INSERT INTO documents (doc_id, source, title, url, content_hash, n_chars, "
                "n_chunks, gen_added) VALUES (?,?,?,?,?,?,?,?)",
                [(*d, gen) for d in documents],
            )
            if chunks:
                sql.insert_chunks(conn, gen, self.dim, chunks, vectors, parts)

    def stage_delete(self, gen: int, doc_ids: Sequence[str]) -> None:
        with self._transaction(hold=True) as conn:
            self._stage_delete(conn, gen, doc_ids)

    def _stage_delete(self, conn, gen: int, doc_ids: Sequence[str]) -> None:
        for part, marks in sql.in_batches(doc_ids):
            sql.mark_deleted(conn, gen, f"doc_id IN ({marks})", part)
            conn.execute(
                f"DELETE FROM documents WHERE gen_deleted IS NULL AND gen_added = ? AND "
                f"doc_id IN ({marks})",
                (gen, *part),
            )
            conn.execute(
                f"UPDATE documents SET gen_deleted = ? WHERE gen_deleted IS NULL AND "
                f"doc_id IN ({marks})",
                (gen, *part),
            )

    def publish(
        self,
        gen: int,
        update: Mapping[str, Any] | None = None,
        before: Callable[[sqlite3.Connection, int], dict] | None = None,
    ) -> dict:
        """Make the staging generation visible to readers, in one transaction."""
        with self._transaction(hold=True) as conn:
            extra = dict(update or {})
            if before is not None:
                extra.update(before(conn, gen))
            man = self._publish_in(conn, gen, extra)
        self._after_publish(man)
        return man

    def discard_build(self, gen: int) -> None:
        """Forget everything staged in ``gen`` (readers never saw it)."""
        with self._transaction(hold=True) as conn:
            sql.mark_deleted(conn, gen, "gen_added = ?", (gen,))
            conn.execute("DELETE FROM documents WHERE gen_added = ?", (gen,))
            conn.execute("UPDATE chunks SET gen_deleted = NULL WHERE gen_deleted = ?", (gen,))
            conn.execute("UPDATE documents SET gen_deleted = NULL WHERE gen_deleted = ?", (gen,))
            sql.meta_set(conn, "staging_gen", None)

    def end_build(self) -> None:
        """Release the write lock taken by :meth:`begin_build`."""
        self._lock.release()


def write_failure(error: sqlite3.Error) -> bool:
    """Whether SQLite failed to write its file (SQLITE_FULL or SQLITE_IOERR, extended or not)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return "disk is full" in str(error) or "disk I/O error" in str(error)
    return code & 0xFF in (SQLITE_IOERR, SQLITE_FULL)


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
