"""The index folder: SQLite (texts, fields, vectors, lexical FTS5) + a JSON manifest + a FAISS view.

Layout of an index folder::

    index.sqlite    documents, chunks (text, metadata JSON, float32 vector), FTS5 index, meta
    manifest.json   the manifest (same text as in the database), replaced atomically
    write.lock      taken (flock) by the one process allowed to write

:class:`IndexStore` opens and checks the folder (this file) and joins its three jobs, each in its
own file of this package: writing generations under the write lock (``generations.py``,
``lock.py``), reading the published generation (``reads.py``) and the FAISS view (``view.py``);
the schema and shared SQL are in ``sql.py``, the checks on open in ``check.py``. Readers see the
rows of the last *published* generation only, so a build in progress (or killed) is invisible
until it publishes, in one transaction. Nothing is pickled: vectors are raw float32 blobs,
checked before use.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

from .. import manifest as mf
from ..errors import EmbeddingMismatch, IndexFolderError, IndexWriteFailed
from . import check, sql
from .generations import IndexWrites
from .reads import IndexReads
from .sql import DB_NAME
from .view import IndexView

__all__ = ["IndexStore"]


class IndexStore(IndexWrites, IndexReads, IndexView):
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
        self._init_view()
        self._init_writes()
        self._check_folder()
        conn = self._conn()
        self.manifest = self._read_manifest(conn)
        self._verify(conn)

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
        try:
            _create_database(tmp, man)
            os.replace(tmp, path / DB_NAME)  # an index appears whole or not at all
            mf.write_json_atomic(path / mf.MANIFEST_NAME, man)
        except (OSError, sqlite3.OperationalError) as e:
            raise IndexWriteFailed(path, path / DB_NAME, str(e)) from e
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        return cls(path, readonly=False)

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> IndexStore:
        return cls(Path(path), readonly=readonly)

    def _check_folder(self) -> None:
        if not self.path.is_dir():
            raise IndexFolderError(self.path, "no such folder")
        if not self.db_path.is_file():
            if (self.path / mf.MANIFEST_NAME).is_file():  # it was an index: its database is gone
                raise check.database_damaged(
                    self.path, f"is missing (but {mf.MANIFEST_NAME} is there)"
                )
            raise IndexFolderError(self.path, f"holds no {DB_NAME}: not an index (build one first)")
        with open(self.db_path, "rb") as f:
            head = f.read(len(sql.SQLITE_MAGIC))
        if head != sql.SQLITE_MAGIC:
            what = "is empty" if not head else "is not an SQLite database (its header is damaged)"
            raise check.database_damaged(self.path, what)

    def _verify(self, conn: sqlite3.Connection) -> None:
        """The checks of :mod:`ingest.index.check`; a reader also checks the published content
        and loads the FAISS view (whose vectors are checked against the manifest)."""
        check.check_structure(self.path, conn, self.manifest)
        check.check_manifest_json(self.path, self.manifest, self.refresh)
        if self.readonly:
            try:
                with self.snapshot() as (snap, gen):
                    check.check_chunks(self.path, snap, gen, self._read_manifest(snap))
            except sqlite3.DatabaseError as e:  # e.g. a text that is no longer UTF-8
                raise check.database_damaged(self.path, f"cannot be read ({e})") from e
            self.view()

    def _conn(self) -> sqlite3.Connection:
        """This thread's read connection (schema checked once per connection)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sql.connect(self.db_path, readonly=True)
                names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            except sqlite3.DatabaseError as e:
                raise check.database_damaged(self.path, f"cannot be read ({e})") from e
            unknown = names - sql.SCHEMA_OBJECTS
            if unknown or not names >= sql.REQUIRED_OBJECTS:
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
            raise check.database_damaged(self.path, f"cannot be read ({e})") from e
        if row is None:
            raise IndexFolderError(self.path, "has no manifest (or one over 16 MiB)")
        try:
            data = json.loads(row[1])
        except json.JSONDecodeError as e:
            problem = f"holds a manifest that is not JSON ({e})"
            raise check.database_damaged(self.path, problem) from e
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

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        self._close_writes()


def _create_database(db: Path, manifest: dict) -> None:
    """An empty index database at ``db`` (WAL mode, the schema, the manifest), checkpointed."""
    db.unlink(missing_ok=True)
    conn = sql.connect(db, readonly=False, create=True)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(sql.SCHEMA)
        conn.execute("INSERT INTO meta VALUES ('manifest', ?)", (json.dumps(manifest),))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
