"""The in-memory FAISS view of an index's vectors at one published generation.

Vectors live in the index database; a view loads them (validated: count, length and finiteness of
every vector, checksum when the manifest has one), unit-normalises them and builds an exact
inner-product index (cosine similarity) or, when the manifest says so, an IVF index whose coarse
centroids and list assignments are stored too, so nothing is trained or deserialised on open.
A view is immutable: a newer generation gives a new view, built from the old one plus the rows
added and removed since (see :meth:`VectorView.advance`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

FLOAT_BYTES = 4
# Part vectors (sentences of a chunk, see embedding.Embedder.embed_parts) are stored as
# little-endian float16 rows: half the bytes; retrieval on the dev questions is unchanged.
PART_DTYPE = "<f2"
PART_BYTES = 2


class VectorDataError(ValueError):
    """Stored vectors that do not match the manifest (length, count, checksum, values)."""


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (n, 1)
    np.maximum(norms, 1e-12, out=norms)
    return (x / norms).astype(np.float32, copy=False)


def decode_vectors(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """(n, dim) float32 from raw little-endian float32 blobs, each checked for its length."""
    want = dim * FLOAT_BYTES
    for i, blob in enumerate(blobs):
        if not isinstance(blob, bytes) or len(blob) != want:
            size = len(blob) if isinstance(blob, bytes) else blob
            raise VectorDataError(f"vector #{i} has {size} bytes, expected {want} (dim {dim})")
    out = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim)  # (n, dim)
    if not np.isfinite(out).all():
        raise VectorDataError("stored vectors hold NaN or infinite values")
    return out.astype(np.float32)


def encode_parts(parts: np.ndarray) -> bytes:
    """Raw bytes of a chunk's part vectors (n_parts, dim)."""
    return np.ascontiguousarray(parts, dtype=PART_DTYPE).tobytes()


def decode_parts(blob: bytes, dim: int, max_parts: int) -> np.ndarray:
    """(n_parts, dim) float32 unit rows from stored bytes, checked (length, count, values)."""
    row = dim * PART_BYTES
    if not isinstance(blob, bytes) or not blob or len(blob) % row:
        size = len(blob) if isinstance(blob, bytes) else blob
        raise VectorDataError(f"part vectors of {size} bytes are not rows of dim {dim}")
    if len(blob) // row > max_parts:
        raise VectorDataError(f"{len(blob) // row} part vectors, more than {max_parts}")
    out = np.frombuffer(blob, dtype=PART_DTYPE).reshape(-1, dim).astype(np.float32)
    if not np.isfinite(out).all():
        raise VectorDataError("stored part vectors hold NaN or infinite values")
    return unit_rows(out)


def encode_centroids(c: np.ndarray) -> str:
    """IVF centroids (nlist, dim) as base64 of little-endian float32 (stored in the meta table)."""
    return base64.b64encode(np.ascontiguousarray(c, dtype="<f4").tobytes()).decode("ascii")


def decode_centroids(text: str, nlist: int, dim: int) -> np.ndarray:
    """(nlist, dim) float32 from :func:`encode_centroids`' text, checked for its length."""
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) != nlist * dim * 4:
        raise ValueError(f"IVF centroids of {len(raw)} bytes, expected {nlist * dim * 4}")
    return np.frombuffer(raw, dtype="<f4").reshape(nlist, dim).astype(np.float32)


def checksum(blobs: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for blob in blobs:
        h.update(blob)
    return h.hexdigest()


@dataclass(frozen=True)
class VectorView:
    """Unit vectors of the rows visible at ``generation``, searchable by cosine similarity."""

    generation: int
    dim: int
    rids: np.ndarray  # (n,) int64, ascending row ids in the database
    vectors: np.ndarray  # (n, dim) float32 unit rows
    sources: np.ndarray  # (n,) int32 codes into source_names (-1: none)
    source_names: tuple[str, ...]
    lists: np.ndarray | None  # (n,) int64 IVF list of each row, or None for exact search
    ann: dict
    index: faiss.Index

    @classmethod
    def build(
        cls,
        generation: int,
        dim: int,
        rids,
        vectors,
        sources: Sequence[str | None],
        lists=None,
        ann: dict | None = None,
        centroids: np.ndarray | None = None,
    ) -> VectorView:
        names = tuple(sorted({s for s in sources if s is not None}))
        code = {s: i for i, s in enumerate(names)}
        codes = np.fromiter((code.get(s, -1) for s in sources), dtype=np.int32, count=len(sources))
        return cls._make(
            generation,
            dim,
            np.asarray(rids, dtype=np.int64),
            unit_rows(vectors),
            codes,
            names,
            lists,
            ann or {"type": "flat"},
            centroids,
        )

    @classmethod
    def _make(
        cls, generation, dim, rids, vectors, codes, names, lists, ann, centroids
    ) -> VectorView:
        if ann.get("type") == "ivf" and centroids is not None and lists is not None:
            quantizer = faiss.IndexFlatIP(dim)
            quantizer.add(centroids)
            index = faiss.IndexIVFFlat(quantizer, dim, len(centroids), faiss.METRIC_INNER_PRODUCT)
            index.is_trained = True
            positions = np.arange(len(rids), dtype=np.int64)
            if len(rids):
                index.add_core(
                    len(rids),
                    faiss.swig_ptr(vectors),
                    faiss.swig_ptr(positions),
                    faiss.swig_ptr(np.ascontiguousarray(lists, dtype=np.int64)),
                )
            index.nprobe = int(ann.get("nprobe", 16))
            view = cls(generation, dim, rids, vectors, codes, names, lists, ann, index)
            object.__setattr__(view, "_quantizer", quantizer)  # keep it alive with the index
            return view
        index = faiss.IndexFlatIP(dim)
        if len(rids):
            index.add(vectors)
        return cls(generation, dim, rids, vectors, codes, names, None, {"type": "flat"}, index)

    def __len__(self) -> int:
        return len(self.rids)

    def advance(
        self,
        generation: int,
        removed: np.ndarray,
        added_rids,
        added_vectors,
        added_sources: Sequence[str | None],
        added_lists=None,
        centroids: np.ndarray | None = None,
    ) -> VectorView:
        """A view of a later generation: these rows removed, those added (with larger row ids)."""
        keep = ~np.isin(self.rids, removed) if len(removed) else np.ones(len(self.rids), bool)
        sources = [self.source_names[c] if c >= 0 else None for c in self.sources[keep]]
        sources += list(added_sources)
        rids = np.concatenate([self.rids[keep], np.asarray(added_rids, dtype=np.int64)])
        vecs = np.concatenate(
            [
                self.vectors[keep],
                unit_rows(np.asarray(added_vectors, np.float32).reshape(-1, self.dim)),
            ]
        )
        lists = None
        if self.lists is not None and added_lists is not None:
            lists = np.concatenate([self.lists[keep], np.asarray(added_lists, dtype=np.int64)])
        names = tuple(sorted({s for s in sources if s is not None}))
        code = {s: i for i, s in enumerate(names)}
        codes = np.fromiter((code.get(s, -1) for s in sources), dtype=np.int32, count=len(sources))
        return self._make(
            generation, self.dim, rids, vecs, codes, names, lists, self.ann, centroids
        )

    def search(
        self, query: np.ndarray, k: int, sources: Iterable[str] | None = None, exact: bool = False
    ) -> list[tuple[int, float]]:
        """(row id, cosine similarity) of the ``k`` nearest rows, best first."""
        if k <= 0 or not len(self.rids):
            return []
        q = unit_rows(np.asarray(query, dtype=np.float32).reshape(1, self.dim))  # (1, dim)
        mask = None
        if sources is not None:
            wanted = [self.source_names.index(s) for s in set(sources) if s in self.source_names]
            mask = np.isin(self.sources, wanted)
            if not mask.any():
                return []
        if exact or (mask is not None and self.lists is None):
            return self._brute(q[0], k, mask)
        params = None
        if mask is not None:
            bitmap = np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self.index.nprobe)
        scores, pos = self.index.search(q, min(k, len(self.rids)), params=params)  # (1, k) each
        return [
            (int(self.rids[p]), float(s)) for p, s in zip(pos[0], scores[0], strict=True) if p >= 0
        ]

    def _brute(self, q: np.ndarray, k: int, mask: np.ndarray | None) -> list[tuple[int, float]]:
        idx = np.flatnonzero(mask) if mask is not None else None
        scores = (self.vectors[idx] if idx is not None else self.vectors) @ q  # (n,)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        rows = idx[top] if idx is not None else top
        return [(int(self.rids[r]), float(scores[t])) for r, t in zip(rows, top, strict=True)]
