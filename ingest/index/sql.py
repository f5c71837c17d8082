"""The index database's schema and the SQL every part of the index shares.

The schema (documents, chunks with their float32 vectors, FTS5 over the chunks, meta), the
visibility predicate of a generation, the connection settings, and the statements that write rows
(insert, mark deleted, purge) or summarise a generation (counts, checksums). Functions here take a
connection and never open one themselves, except :func:`connect`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from ..vectors import checksum, encode_parts

DB_NAME = "index.sqlite"
SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 60.0  # how long a connection waits for another writer's transaction
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
REQUIRED_OBJECTS = {"meta", "chunks", "documents", "chunks_fts"}


def connect(db: Path, readonly: bool, create: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), untrusted schema off."""
    mode = "ro" if readonly else ("rwc" if create else "rw")
    conn = sqlite3.connect(
        f"file:{quote(str(db))}?mode={mode}",
        uri=True,
        timeout=BUSY_TIMEOUT_S,
        isolation_level=None,
        check_same_thread=False,
    )
    conn.execute("PRAGMA trusted_schema=OFF")
    conn.execute("PRAGMA cell_size_check=ON")
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    return conn


def in_batches(values: Sequence) -> Iterator[tuple[list, str]]:
    """``values`` in batches for an SQL ``IN``: (batch, its "?,?,..." placeholders)."""
    for start in range(0, len(values), SQL_IN_BATCH):
        part = list(values[start : start + SQL_IN_BATCH])
        yield part, ",".join("?" * len(part))


def vector_sql(dim: int) -> str:
    """The vector column, or its byte length when that is wrong (a bad row is never loaded)."""
    nbytes = int(dim) * 4
    return f"CASE WHEN length(vector) = {nbytes} THEN vector ELSE length(vector) END"


def meta_get(conn: sqlite3.Connection, key: str) -> Any:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return None if row is None else json.loads(row[0])


def meta_set(conn: sqlite3.Connection, key: str, value: Any) -> None:
    """Store ``value`` as JSON under ``key`` (None deletes the key)."""
    if value is None:
        conn.execute("DELETE FROM meta WHERE key=?", (key,))
    else:
        conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))


def insert_chunks(
    conn: sqlite3.Connection,
    gen: int,
    dim: int,
    rows: Sequence[tuple],
    vectors: np.ndarray,
    parts: Sequence[np.ndarray] | None = None,
) -> None:
    """rows: (chunk_id, doc_id, source, context, text, metadata dict); ``parts``: per row
    its part vectors (n_i, dim), or None."""
    vecs = np.ascontiguousarray(vectors, dtype="<f4").reshape(len(rows), dim)  # (n, dim)
    if not np.isfinite(vecs).all():
        raise ValueError("vectors hold NaN or infinite values")
    if parts is not None and (
        len(parts) != len(rows) or any(p.ndim != 2 or p.shape[1] != dim for p in parts)
    ):
        raise ValueError(f"part vectors do not match {len(rows)} chunks of dim {dim}")
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


def mark_deleted(conn: sqlite3.Connection, gen: int, where: str, params: Sequence) -> None:
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


def purge(conn: sqlite3.Connection, gen: int) -> None:
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


def counts(conn: sqlite3.Connection, gen: int) -> dict:
    """Documents and chunks visible at ``gen``, in total and per source."""
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


def checksums(conn: sqlite3.Connection, gen: int) -> dict:
    """sha256 of the (doc_id, content hash) list and of the vectors visible at ``gen``."""
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
    chunks = chunks_checksum(conn, gen)
    return {"documents_sha256": docs, "vectors_sha256": vecs, "chunks_sha256": chunks}


def chunks_checksum(conn: sqlite3.Connection, gen: int) -> str:
    """sha256 of the chunks visible at ``gen``: id, context, text, metadata and part vectors."""
    rows = conn.execute(  # as stored bytes: a damaged text need not be valid UTF-8
        "SELECT CAST(chunk_id AS BLOB), CAST(context AS BLOB), CAST(text AS BLOB), "
        f"CAST(metadata AS BLOB), coalesce(parts, x'') FROM chunks WHERE {VISIBLE} ORDER BY rid",
        {"g": gen},
    )
    return checksum(_record(row) for row in rows)


def _record(fields: Sequence[bytes]) -> bytes:
    """Fields as one unambiguous byte string (each prefixed with its length)."""
    out = []
    for f in fields:
        out += [b"%d:" % len(f), bytes(f)]
    return b"".join(out)
