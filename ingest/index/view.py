"""The FAISS view of an index: its published vectors loaded into a :class:`VectorView`, searched.

The view is loaded once per published generation (validated: count against the manifest, length
and finiteness of every vector, the manifest's checksum) and advanced from the previous one by the
rows added and removed since, so a reader follows a writer without reloading everything. An IVF
view is rebuilt from the centroids and list numbers stored in the database: no FAISS file is ever
deserialised, nothing is trained on open.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from ..vectors import VectorDataError, VectorView, checksum, decode_centroids, decode_vectors
from . import sql
from .check import database_damaged
from .reads import Hit

MAX_IVF_LISTS = 1 << 20


class IndexView:
    """The vector-search part of :class:`ingest.index.IndexStore` (a mixin: it uses the store's
    ``path``, ``dim``, ``snapshot``, ``hits`` and ``_read_manifest``)."""

    path: Path
    dim: int
    snapshot: Callable[[], AbstractContextManager[tuple[sqlite3.Connection, int]]]
    hits: Callable[[Sequence[tuple[int, float]]], list[Hit]]
    _read_manifest: Callable[[sqlite3.Connection], dict]

    def _init_view(self) -> None:
        self._view: VectorView | None = None
        self._view_lock = threading.Lock()

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
                    raise database_damaged(
                        self.path, f"holds vectors that do not match its manifest ({e})"
                    ) from e
                except sqlite3.DatabaseError as e:
                    raise database_damaged(self.path, f"cannot be read ({e})") from e
                return self._view

    def _load_view(self, conn, gen: int, old: VectorView | None) -> VectorView:
        man = self._read_manifest(conn)
        dim, ann = int(man["embedding"]["dim"]), man.get("ann") or {"type": "flat"}
        centroids = _centroids(conn, man)
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
                f"SELECT rid, source, list_no, {sql.vector_sql(dim)} FROM chunks WHERE "
                f"{sql.VISIBLE} AND gen_added > :old ORDER BY rid",
                {"g": gen, "old": old.generation},
            ).fetchall()
            vecs = decode_vectors([r[3] for r in rows], dim)
            lists = [r[2] for r in rows] if centroids is not None else None
            return old.advance(
                gen, removed, [r[0] for r in rows], vecs, [r[1] for r in rows], lists, centroids
            )
        n = conn.execute(
            f"SELECT count(*) FROM chunks WHERE {sql.VISIBLE}", {"g": gen}
        ).fetchone()[0]
        if n != man["counts"]["chunks"]:
            raise VectorDataError(f"{n} vectors, the manifest says {man['counts']['chunks']}")
        rows = conn.execute(
            f"SELECT rid, source, list_no, {sql.vector_sql(dim)} FROM chunks WHERE {sql.VISIBLE} "
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


def _centroids(conn: sqlite3.Connection, man: dict) -> np.ndarray | None:
    """The IVF centroids (nlist, dim) the manifest names, or None for an exact (flat) index."""
    ann = man.get("ann") or {}
    if ann.get("type") != "ivf":
        return None
    nlist, dim = int(ann["nlist"]), int(man["embedding"]["dim"])
    if not 0 < nlist <= MAX_IVF_LISTS:
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


def _matches(metadata: dict, flt: Callable[[dict], bool] | Mapping[str, Any]) -> bool:
    if callable(flt):
        return bool(flt(metadata))
    return all(metadata.get(key) == value for key, value in flt.items())
