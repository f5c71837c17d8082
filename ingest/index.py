"""The index folder: SQLite (texts, fields, vectors, lexical FTS5) + a JSON manifest + a FAISS view.

Layout of an index folder::

    index.sqlite    documents, chunks (text, metadata JSON, float32 vector), FTS5 index, meta
    manifest.json   the manifest (same text as in the database), replaced atomically
    write.lock      taken (flock) by the one process allowed to write

Every row carries the generation that added it and the one that deleted it. Readers see the rows
of the last *published* generation only, so a build in progress (or killed) is invisible until it
publishes, in one transaction; a build commits one batch per transaction, so a crash loses at most
the batch in flight and the next build resumes the same staging generation. Nothing is pickled:
vectors are raw float32 blobs, checked against the manifest's dimension before use.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from . import manifest as mf
from .errors import EmbeddingMismatch, IndexBusy, IndexFolderError
from .vectors import (
    VectorDataError,
    VectorView,
    checksum,
    decode_parts,
    decode_vectors,
    encode_parts,
)

DB_NAME = "index.sqlite"
LOCK_NAME = "write.lock"
SQLITE_MAGIC = b"SQLite format 3\x00"
LOCK_TIMEOUT_S = 60.0
VISIBLE = "gen_added <= :g AND (gen_deleted IS NULL OR gen_deleted > :g)"
VISIBLE_AT = "gen_added <= ? AND (gen_deleted IS NULL OR gen_deleted > ?)"  # (gen, gen)
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"
SQL_IN_BATCH = 500  # values bound per "IN (?, ...)" statement (SQLite caps bound variables)

SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (
    rid INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, source TEXT, title TEXT, url TEXT,
    content_hash TEXT NOT NULL, n_chars INTEGER NOT NULL, n_chunks INTEGER NOT NULL,
    gen_added INTEGER NOT NULL, gen_deleted INTEGER);
CREATE UNIQUE INDEX documents_live ON documents(doc_id) WHERE gen_deleted IS NULL;
CREATE TABLE chunks (
    rid INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id TEXT NOT NULL, doc_id TEXT, source TEXT,
    context TEXT NOT NULL, text TEXT NOT NULL, metadata TEXT NOT NULL, vector BLOB NOT NULL,
    parts BLOB, list_no INTEGER, gen_added INTEGER NOT NULL, gen_deleted INTEGER);
CREATE UNIQUE INDEX chunks_live ON chunks(chunk_id) WHERE gen_deleted IS NULL;
CREATE INDEX chunks_doc ON chunks(doc_id);
CREATE INDEX chunks_added ON chunks(gen_added);
CREATE TABLE tombstones (rid INTEGER PRIMARY KEY, gen INTEGER NOT NULL);
CREATE VIRTUAL TABLE chunks_fts USING fts5(context, text, content='chunks', content_rowid='rid',
    tokenize='{FTS_TOKENIZER}');
"""
# Every object the schema makes (FTS5 adds its shadow tables): anything else is refused on open.
SCHEMA_OBJECTS = {
    "meta",
    "documents",
    "documents_live",
    "chunks",
    "chunks_live",
    "chunks_doc",
    "chunks_added",
    "tombstones",
    "chunks_fts",
    "chunks_fts_data",
    "chunks_fts_idx",
    "chunks_fts_docsize",
    "chunks_fts_config",
    "sqlite_sequence",
    "sqlite_autoindex_meta_1",
}


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


def _connect(db: Path, readonly: bool, create: bool = False) -> sqlite3.Connection:
    mode = "ro" if readonly else ("rwc" if create else "rw")
    conn = sqlite3.connect(
        f"file:{quote(str(db))}?mode={mode}",
        uri=True,
        timeout=LOCK_TIMEOUT_S,
        isolation_level=None,
        check_same_thread=False,
    )
    conn.execute("PRAGMA trusted_schema=OFF")
    conn.execute("PRAGMA cell_size_check=ON")
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    return conn


class IndexStore:
    """An index folder: readable from many threads, writable by one process at a time.

    ``IndexStore.create(path, dim, embedding_model)`` makes an empty store; ``add``/``delete``
    publish at once (upsert semantics for an existing id). The build pipeline uses the staging
    methods instead (``begin_build``, ``stage``, ``publish``).
    """

    def __init__(self, path: Path, readonly: bool) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.db_path = self.path / DB_NAME
        self._local = threading.local()
        self._view: VectorView | None = None
        self._view_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._writer: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._check_folder()
        self.manifest = self._read_manifest(self._conn())

    # ---- opening --------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        dim: int,
        embedding_model: str,
        *,
        kind: str = mf.KIND_STORE,
        chunking: dict | None = None,
        ann: dict | None = None,
        embedding_extra: dict | None = None,
    ) -> IndexStore:
        """A new, empty index folder (the folder may exist but must not hold an index)."""
        path = Path(path)
        if (path / DB_NAME).exists():
            raise IndexFolderError(path, "already holds an index")
        if not isinstance(dim, int) or not 0 < dim <= mf.MAX_DIM:
            raise IndexFolderError(path, f"bad embedding dimension {dim!r}")
        path.mkdir(parents=True, exist_ok=True)
        man = mf.new_manifest(kind, dim, embedding_model, chunking, embedding_extra)
        if ann:
            man["ann"] = ann
        tmp = path / f".{DB_NAME}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        conn = _connect(tmp, readonly=False, create=True)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            conn.execute("INSERT INTO meta VALUES ('manifest', ?)", (json.dumps(man),))
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        os.replace(tmp, path / DB_NAME)  # an index appears whole or not at all
        for suffix in ("-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        mf.write_json_atomic(path / mf.MANIFEST_NAME, man)
        return cls(path, readonly=False)

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> IndexStore:
        return cls(Path(path), readonly=readonly)

    def _check_folder(self) -> None:
        if not self.path.is_dir():
            raise IndexFolderError(self.path, "no such folder")
        if not self.db_path.is_file():
            raise IndexFolderError(self.path, f"holds no {DB_NAME}: not an index (build one first)")
        with open(self.db_path, "rb") as f:
            if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                raise IndexFolderError(self.path, f"{DB_NAME} is not an SQLite database")

    def _conn(self) -> sqlite3.Connection:
        """This thread's read connection (schema checked once per connection)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = _connect(self.db_path, readonly=True)
                names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            except sqlite3.DatabaseError as e:
                raise IndexFolderError(self.path, f"{DB_NAME} cannot be read: {e}") from e
            unknown = names - SCHEMA_OBJECTS
            if unknown or not {"meta", "chunks", "documents", "chunks_fts"} <= names:
                raise IndexFolderError(
                    self.path,
                    f"{DB_NAME} does not have the index schema (unexpected: {sorted(unknown)[:5]})",
                )
            self._local.conn = conn
        return conn

    def _read_manifest(self, conn: sqlite3.Connection) -> dict:
        try:
            row = conn.execute(
                "SELECT length(value), value FROM meta WHERE key='manifest' AND length(value) <= ?",
                (mf.MAX_MANIFEST_BYTES,),
            ).fetchone()
        except sqlite3.DatabaseError as e:
            raise IndexFolderError(self.path, f"{DB_NAME} cannot be read: {e}") from e
        if row is None:
            raise IndexFolderError(self.path, "has no manifest (or one over 16 MiB)")
        try:
            data = json.loads(row[1])
        except json.JSONDecodeError as e:
            raise IndexFolderError(self.path, f"manifest is not JSON: {e}") from e
        problem = mf.check_manifest(data, "its manifest")
        if problem:
            raise IndexFolderError(self.path, problem)
        return data

    # ---- properties -----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.manifest["embedding"]["dim"])

    @property
    def embedding_model(self) -> str:
        return str(self.manifest["embedding"]["model"])

    @property
    def generation(self) -> int:
        return int(self.manifest["generation"])

    def check_embedding(self, model: str, dim: int, inference: str | None = None) -> None:
        """Raise :class:`EmbeddingMismatch` unless the index was built with this model and dim
        (and, when given and recorded, the same inference mode: queries embedded alike)."""
        if model != self.embedding_model or int(dim) != self.dim:
            raise EmbeddingMismatch(self.path, self.embedding_model, self.dim, model, int(dim))
        built = self.manifest["embedding"].get("inference")
        if inference is not None and built is not None and built != inference:
            raise EmbeddingMismatch(
                self.path, f"{self.embedding_model} ({built})", self.dim,
                f"{model} ({inference})", int(dim),
            )

    def refresh(self) -> dict:
        """Re-read the manifest (another process may have published); returns it."""
        self.manifest = self._read_manifest(self._conn())
        return self.manifest

    # ---- writing ----------------------------------------------------------------------------
    def _lock(self, wait: bool) -> None:
        if self._lock_fd is not None:
            return
        if self.readonly:
            raise IndexFolderError(self.path, "was opened read-only")
        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + (LOCK_TIMEOUT_S if wait else 0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise IndexBusy(self.path, "another process is writing this index") from None
                time.sleep(0.05)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextmanager
    def _transaction(self, hold: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction under the folder's write lock (kept after it when ``hold``)."""
        with self._write_lock:
            had_lock = self._lock_fd is not None
            self._lock(wait=True)
            if self._writer is None:
                self._writer = _connect(self.db_path, readonly=False)
                self._writer.execute("PRAGMA synchronous=NORMAL")
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            finally:
                if not had_lock and not hold:
                    self._unlock()

    def _meta_get(self, conn: sqlite3.Connection, key: str) -> Any:
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def _meta_set(self, conn: sqlite3.Connection, key: str, value: Any) -> None:
        if value is None:
            conn.execute("DELETE FROM meta WHERE key=?", (key,))
        else:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def _insert_chunks(
        self, conn, gen: int, rows: Sequence[tuple], vectors: np.ndarray, parts=None
    ) -> None:
        """rows: (chunk_id, doc_id, source, context, text, metadata dict); ``parts``: per row
        its part vectors (n_i, dim), or None."""
        vecs = np.ascontiguousarray(vectors, dtype="<f4").reshape(len(rows), self.dim)  # (n, dim)
        if not np.isfinite(vecs).all():
            raise ValueError("vectors hold NaN or infinite values")
        if parts is not None and (
            len(parts) != len(rows) or any(p.ndim != 2 or p.shape[1] != self.dim for p in parts)
        ):
            raise ValueError(f"part vectors do not match {len(rows)} chunks of dim {self.dim}")
        data = [
            (
                cid,
                doc,
                src,
                ctx,
                text,
                json.dumps(md, ensure_ascii=False),
                vecs[i].tobytes(),
                encode_parts(parts[i]) if parts is not None and len(parts[i]) else None,
                gen,
            )
            for i, (cid, doc, src, ctx, text, md) in enumerate(rows)
        ]
        first = conn.execute("SELECT coalesce(max(rid), 0) FROM chunks").fetchone()[0]
        conn.executemany(
            "INSERT INTO chunks (chunk_id, doc_id, source, context, text, metadata, vector,"
            " parts, gen_added) VALUES (?,?,?,?,?,?,?,?,?)",
            data,
        )
        conn.execute(
            "INSERT INTO chunks_fts (rowid, context, text) SELECT rid, context, text "
            "FROM chunks WHERE rid > ?",
            (first,),
        )

    def _mark_deleted(self, conn, gen: int, where: str, params: Sequence) -> None:
        """Delete live chunks matching ``where`` (staged in ``gen``: at once; others: as of gen)."""
        staged = f"gen_deleted IS NULL AND gen_added = ? AND ({where})"
        conn.execute(
            "INSERT INTO chunks_fts (chunks_fts, rowid, context, text) SELECT 'delete', rid, "
            f"context, text FROM chunks WHERE {staged}",
            (gen, *params),
        )
        conn.execute(f"DELETE FROM chunks WHERE {staged}", (gen, *params))
        conn.execute(
            f"UPDATE chunks SET gen_deleted = ? WHERE gen_deleted IS NULL AND ({where})",
            (gen, *params),
        )

    def _purge(self, conn, gen: int) -> None:
        """Drop rows deleted at or before ``gen`` (kept as tombstones for readers' deltas)."""
        dead = "gen_deleted IS NOT NULL AND gen_deleted <= ?"
        conn.execute(
            f"INSERT OR REPLACE INTO tombstones SELECT rid, gen_deleted FROM chunks WHERE {dead}",
            (gen,),
        )
        conn.execute(
            "INSERT INTO chunks_fts (chunks_fts, rowid, context, text) SELECT 'delete', rid, "
            f"context, text FROM chunks WHERE {dead}",
            (gen,),
        )
        conn.execute(f"DELETE FROM chunks WHERE {dead}", (gen,))
        conn.execute(f"DELETE FROM documents WHERE {dead}", (gen,))

    def _publish_in(self, conn, gen: int, update: Mapping[str, Any] | None = None) -> dict:
        self._purge(conn, gen)
        man = self._read_manifest(conn)
        man.update(update or {})
        man["generation"] = gen
        man["updated"] = mf.now()
        man["counts"] = self._counts(conn, gen)
        man["sources"] = sorted(man["counts"]["per_source"])
        if man["kind"] == mf.KIND_CORPUS:
            man["checksums"] = self._checksums(conn, gen)
        self._meta_set(conn, "manifest", man)
        self._meta_set(conn, "staging_gen", None)
        return man

    def _after_publish(self, man: dict) -> None:
        self.manifest = man
        try:
            mf.write_json_atomic(self.path / mf.MANIFEST_NAME, man)
            self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except (OSError, sqlite3.DatabaseError):
            pass  # the database copy is authoritative; the JSON copy is for people

    def _counts(self, conn, gen: int) -> dict:
        per: dict[str, dict[str, int]] = {}
        for src, n in conn.execute(
            f"SELECT coalesce(source, ''), count(*) FROM chunks WHERE {VISIBLE} GROUP BY 1",
            {"g": gen},
        ):
            per.setdefault(src, {"documents": 0, "chunks": 0})["chunks"] = n
        for src, n in conn.execute(
            f"SELECT coalesce(source, ''), count(*) FROM documents WHERE {VISIBLE} GROUP BY 1",
            {"g": gen},
        ):
            per.setdefault(src, {"documents": 0, "chunks": 0})["documents"] = n
        per.pop("", None)  # chunks of a plain store may have no source
        return {
            "documents": sum(v["documents"] for v in per.values()),
            "chunks": conn.execute(
                f"SELECT count(*) FROM chunks WHERE {VISIBLE}", {"g": gen}
            ).fetchone()[0],
            "per_source": dict(sorted(per.items())),
        }

    def _checksums(self, conn, gen: int) -> dict:
        docs = checksum(
            f"{d}\t{h}\n".encode()
            for d, h in conn.execute(
                f"SELECT doc_id, content_hash FROM documents WHERE {VISIBLE} ORDER BY doc_id",
                {"g": gen},
            )
        )
        vecs = checksum(
            v
            for (v,) in conn.execute(
                f"SELECT vector FROM chunks WHERE {VISIBLE} ORDER BY rid", {"g": gen}
            )
        )
        return {"documents_sha256": docs, "vectors_sha256": vecs}

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
            for part, marks in _in_batches([ids[i] for i in keep]):
                self._mark_deleted(conn, gen, f"chunk_id IN ({marks})", part)
            self._insert_chunks(conn, gen, rows, vecs[keep])
            man = self._publish_in(conn, gen)
        self._after_publish(man)
        return [ids[i] for i in keep]

    def delete(self, ids: Sequence[str]) -> int:
        """Remove chunks by id (unknown ids are ignored); returns how many were removed."""
        ids = [str(i) for i in ids]
        with self._transaction() as conn:
            gen = self._current_generation(conn) + 1
            before = conn.total_changes
            for part, marks in _in_batches(ids):
                self._mark_deleted(conn, gen, f"chunk_id IN ({marks})", part)
            removed = conn.total_changes - before
            man = self._publish_in(conn, gen)
        self._after_publish(man)
        return removed

    def _current_generation(self, conn) -> int:
        staging = self._meta_get(conn, "staging_gen")
        if staging is not None:
            raise IndexBusy(self.path, "holds an unfinished build; finish it (re-run build) first")
        return int(self._read_manifest(conn)["generation"])

    # ---- the build API (a staging generation, published at the end) -----------------------
    def begin_build(self) -> int:
        """Take the write lock for a build and return its staging generation (resumed if any)."""
        self._lock(wait=False)
        with self._transaction(hold=True) as conn:
            staging = self._meta_get(conn, "staging_gen")
            if staging is None:
                staging = int(self._read_manifest(conn)["generation"]) + 1
                self._meta_set(conn, "staging_gen", staging)
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
                self._insert_chunks(conn, gen, chunks, vectors, parts)

    def stage_delete(self, gen: int, doc_ids: Sequence[str]) -> None:
        with self._transaction(hold=True) as conn:
            self._stage_delete(conn, gen, doc_ids)

    def _stage_delete(self, conn, gen: int, doc_ids: Sequence[str]) -> None:
        for part, marks in _in_batches(doc_ids):
            self._mark_deleted(conn, gen, f"doc_id IN ({marks})", part)
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

    def document_sources(self, doc_ids: Sequence[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        conn = self._conn()
        for part, marks in _in_batches(doc_ids):
            q = (
                f"SELECT doc_id, source FROM documents WHERE gen_deleted IS NULL AND doc_id IN "
                f"({marks})"
            )
            out.update(conn.execute(q, part).fetchall())
        return out

    def has_changes(self, gen: int) -> bool:
        with self.snapshot() as (conn, _):
            q = "SELECT 1 FROM {t} WHERE gen_added = ? OR gen_deleted = ? LIMIT 1"
            return any(
                conn.execute(q.format(t=t), (gen, gen)).fetchone() for t in ("documents", "chunks")
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
            self._mark_deleted(conn, gen, "gen_added = ?", (gen,))
            conn.execute("DELETE FROM documents WHERE gen_added = ?", (gen,))
            conn.execute("UPDATE chunks SET gen_deleted = NULL WHERE gen_deleted = ?", (gen,))
            conn.execute("UPDATE documents SET gen_deleted = NULL WHERE gen_deleted = ?", (gen,))
            self._meta_set(conn, "staging_gen", None)

    def end_build(self) -> None:
        """Release the write lock taken by :meth:`begin_build`."""
        self._unlock()

    # ---- reading ------------------------------------------------------------------------------
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

    def get(self, ids: Sequence[str]) -> list[StoredChunk]:
        """The chunks with these ids, in that order (unknown ids are left out)."""
        out: dict[str, StoredChunk] = {}
        with self.snapshot() as (conn, gen):
            for part, marks in _in_batches([str(i) for i in ids]):
                q = (
                    f"SELECT chunk_id, text, metadata FROM chunks WHERE {VISIBLE_AT} AND "
                    f"chunk_id IN ({marks})"
                )
                for cid, text, md in conn.execute(q, [gen, gen, *part]):
                    out[cid] = StoredChunk(cid, text, json.loads(md))
        return [out[str(i)] for i in ids if str(i) in out]

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors (n, dim) of these chunk ids, in order; unknown ids raise KeyError."""
        found: dict[str, bytes] = {}
        with self.snapshot() as (conn, gen):
            for part, marks in _in_batches([str(i) for i in ids]):
                q = (
                    f"SELECT chunk_id, {_vector_sql(self.dim)} FROM chunks WHERE {VISIBLE_AT} "
                    f"AND chunk_id IN ({marks})"
                )
                found.update(conn.execute(q, [gen, gen, *part]).fetchall())
        missing = [i for i in ids if str(i) not in found]
        if missing:
            raise KeyError(f"unknown chunk ids: {missing[:5]}")
        try:
            return decode_vectors([found[str(i)] for i in ids], self.dim)
        except VectorDataError as e:
            raise IndexFolderError(self.path, str(e)) from e

    def rows(self, rids: Sequence[int]) -> dict[int, tuple[str, str, dict]]:
        """rid -> (chunk_id, text, metadata) for these row ids (missing rows left out)."""
        out = {}
        conn = self._conn()
        for part, marks in _in_batches([int(r) for r in rids]):
            q = f"SELECT rid, chunk_id, text, metadata FROM chunks WHERE rid IN ({marks})"
            for rid, cid, text, md in conn.execute(q, part):
                out[rid] = (cid, text, json.loads(md))
        return out

    def part_vectors(self, rids: Sequence[int]) -> dict[int, np.ndarray]:
        """rid -> its part vectors (n_parts, dim) float32, for the rows that have them."""
        out: dict[int, np.ndarray] = {}
        conn = self._conn()
        max_parts = int(self.manifest["embedding"].get("max_tokens") or 512)
        for part, marks in _in_batches([int(r) for r in rids]):
            q = f"SELECT rid, parts FROM chunks WHERE parts IS NOT NULL AND rid IN ({marks})"
            for rid, blob in conn.execute(q, part):
                try:
                    out[rid] = decode_parts(blob, self.dim, max_parts)
                except VectorDataError as e:
                    raise IndexFolderError(self.path, f"chunk row {rid}: {e}") from e
        return out

    def count(self) -> int:
        return int(self.refresh()["counts"]["chunks"])

    # ---- the FAISS view ------------------------------------------------------------------------
    def view(self) -> VectorView:
        """The vector view of the latest published generation (loaded or advanced as needed)."""
        current = self._view
        with self.snapshot() as (conn, gen):
            if current is not None and current.generation == gen:
                return current
            with self._view_lock:
                if self._view is not None and self._view.generation == gen:
                    return self._view
                try:
                    self._view = self._load_view(conn, gen, self._view)
                except VectorDataError as e:
                    raise IndexFolderError(
                        self.path, f"vectors do not match the manifest: {e}"
                    ) from e
                return self._view

    def _load_view(self, conn, gen: int, old: VectorView | None) -> VectorView:
        man = self._read_manifest(conn)
        dim, ann = int(man["embedding"]["dim"]), man.get("ann") or {"type": "flat"}
        centroids = self._centroids(conn, man)
        if old is not None and old.generation < gen:
            removed = np.fromiter(
                (
                    r
                    for (r,) in conn.execute(
                        "SELECT rid FROM tombstones WHERE gen > ? AND gen <= ?",
                        (old.generation, gen),
                    )
                ),
                np.int64,
            )
            rows = conn.execute(
                f"SELECT rid, source, list_no, {_vector_sql(dim)} FROM chunks WHERE {VISIBLE} "
                "AND gen_added > :old ORDER BY rid",
                {"g": gen, "old": old.generation},
            ).fetchall()
            vecs = decode_vectors([r[3] for r in rows], dim)
            lists = [r[2] for r in rows] if centroids is not None else None
            return old.advance(
                gen, removed, [r[0] for r in rows], vecs, [r[1] for r in rows], lists, centroids
            )
        n = conn.execute(f"SELECT count(*) FROM chunks WHERE {VISIBLE}", {"g": gen}).fetchone()[0]
        if n != man["counts"]["chunks"]:
            raise VectorDataError(f"{n} vectors, the manifest says {man['counts']['chunks']}")
        rows = conn.execute(
            f"SELECT rid, source, list_no, {_vector_sql(dim)} FROM chunks WHERE {VISIBLE} "
            "ORDER BY rid",
            {"g": gen},
        ).fetchall()
        blobs = [r[3] for r in rows]
        vecs = decode_vectors(blobs, dim)
        want = man.get("checksums", {}).get("vectors_sha256")
        if want and checksum(blobs) != want:
            raise VectorDataError("the vectors' sha256 differs from the manifest's")
        lists = np.asarray([r[2] for r in rows], dtype=np.int64) if centroids is not None else None
        return VectorView.build(
            gen, dim, [r[0] for r in rows], vecs, [r[1] for r in rows], lists, ann, centroids
        )

    def _centroids(self, conn, man: dict) -> np.ndarray | None:
        ann = man.get("ann") or {}
        if ann.get("type") != "ivf":
            return None
        from .ann import decode_centroids

        nlist, dim = int(ann["nlist"]), int(man["embedding"]["dim"])
        if not 0 < nlist <= 1 << 20:
            raise VectorDataError(f"implausible IVF list count {nlist}")
        row = conn.execute(
            "SELECT value FROM meta WHERE key='ivf_centroids' AND length(value) <= ?",
            (nlist * dim * 6 + 64,),
        ).fetchone()
        if row is None:
            raise VectorDataError("the manifest names an IVF index but its centroids are missing")
        try:
            return decode_centroids(json.loads(row[0]), nlist, dim)
        except (ValueError, TypeError) as e:
            raise VectorDataError(str(e)) from e

    def search_by_vector(
        self,
        vector,
        k: int = 4,
        sources: Sequence[str] | None = None,
        filter: Callable[[dict], bool] | Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """The ``k`` chunks most similar (cosine) to ``vector``, optionally filtered."""
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vec.shape != (self.dim,):
            raise ValueError(f"query vector of dim {vec.shape[0]}, the index has dim {self.dim}")
        view = self.view()
        want = k
        while True:
            found = view.search(vec, want, sources)
            hits = self.hits(found)
            if filter is not None:
                hits = [h for h in hits if _matches(h.metadata, filter)]
            if len(hits) >= k or len(found) < want:
                return hits[:k]
            want *= 4

    def hits(self, scored: Sequence[tuple[int, float]]) -> list[Hit]:
        rows = self.rows([r for r, _ in scored])
        return [Hit(rows[r][0], s, rows[r][1], rows[r][2]) for r, s in scored if r in rows]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._unlock()


def _in_batches(values: Sequence) -> Iterator[tuple[list, str]]:
    """``values`` in batches for an SQL ``IN``: (batch, its "?,?,..." placeholders)."""
    for start in range(0, len(values), SQL_IN_BATCH):
        part = list(values[start : start + SQL_IN_BATCH])
        yield part, ",".join("?" * len(part))


def _vector_sql(dim: int) -> str:
    """The vector column, or its byte length when that is wrong (a bad row is never loaded)."""
    nbytes = int(dim) * 4
    return f"CASE WHEN length(vector) = {nbytes} THEN vector ELSE length(vector) END"


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _matches(metadata: dict, flt: Callable[[dict], bool] | Mapping[str, Any]) -> bool:
    if callable(flt):
        return bool(flt(metadata))
    return all(metadata.get(key) == value for key, value in flt.items())
