"""Approximate search for large corpora: an IVF index whose parts are stored as plain data.

At publish time (``build --ann ivf``) the coarse centroids are trained with FAISS k-means on a
sample of the unit vectors (spherical), every chunk gets its list number, and the recall@10 of the
IVF search against exact search is measured on stored vectors used as queries; all of it goes to
the manifest and the database. A reader rebuilds the IVF index from those arrays (no FAISS file
is ever deserialised, no training on open).
"""

from __future__ import annotations

import json
import math
import sqlite3
from typing import TYPE_CHECKING

import faiss
import numpy as np

from .index.sql import VISIBLE, meta_set, vector_sql
from .vectors import decode_centroids, decode_vectors, encode_centroids, unit_rows

if TYPE_CHECKING:  # only for the annotation: the index never imports this module
    from .index import IndexStore

MIN_POINTS_PER_LIST = 39  # FAISS k-means warns below this many training points per centroid
MAX_TRAIN_POINTS = 256 * 1024
RECALL_QUERIES = 200
RECALL_K = 10
RETRAIN_GROWTH = 2.0  # retrain when the corpus has grown this much since the last training


def default_nlist(n: int) -> int:
    return max(1, min(int(4 * math.sqrt(max(n, 1))), n // MIN_POINTS_PER_LIST or 1))


def train(vectors: np.ndarray, nlist: int, seed: int = 1234) -> np.ndarray:
    """Spherical k-means centroids (nlist, dim) of unit vectors."""
    rng = np.random.default_rng(seed)
    sample = vectors
    if len(vectors) > MAX_TRAIN_POINTS:
        sample = vectors[rng.choice(len(vectors), MAX_TRAIN_POINTS, replace=False)]
    km = faiss.Kmeans(
        vectors.shape[1],
        nlist,
        niter=20,
        spherical=True,
        seed=seed,
        verbose=False,
        min_points_per_centroid=1,
    )
    km.train(np.ascontiguousarray(sample, dtype=np.float32))
    return km.centroids.astype(np.float32)


def assign(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    q = faiss.IndexFlatIP(centroids.shape[1])
    q.add(centroids)
    _, lists = q.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)  # (n, 1)
    return lists[:, 0].astype(np.int64)


def recall_at_k(
    vectors: np.ndarray,
    centroids: np.ndarray,
    lists: np.ndarray,
    nprobe: int,
    query_ids: np.ndarray,
    k: int = RECALL_K,
) -> float:
    """Mean share of the exact top-k neighbours (inner product) of stored vectors, used as
    queries (each one itself left out), that the IVF search finds."""
    dim = vectors.shape[1]
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(centroids)
    ivf = faiss.IndexIVFFlat(quantizer, dim, len(centroids), faiss.METRIC_INNER_PRODUCT)
    ivf.is_trained = True
    ids = np.arange(len(vectors), dtype=np.int64)
    ivf.add_core(
        len(vectors),
        faiss.swig_ptr(vectors),
        faiss.swig_ptr(ids),
        faiss.swig_ptr(np.ascontiguousarray(lists)),
    )
    ivf.nprobe = nprobe
    k = min(k, len(vectors) - 1)
    if k <= 0:
        return 1.0
    qv = vectors[query_ids]
    _, want = exact.search(qv, k + 1)  # (n_queries, k + 1): the query itself is dropped below
    _, got = ivf.search(qv, k + 1)  # (n_queries, k + 1)
    shares = []
    for q, w, g in zip(query_ids, want, got, strict=True):
        w = [i for i in w if i != q][:k]
        g = {i for i in g if i != q and i >= 0}
        shares.append(len(set(w) & g) / k)
    return float(np.mean(shares))


def prepare_ivf(store: IndexStore, conn: sqlite3.Connection, gen: int) -> dict:
    """Train (or reuse) centroids, assign lists, measure recall; returns the manifest update."""
    ann = dict(store.manifest.get("ann") or {})
    dim = store.dim
    rows = conn.execute(
        f"SELECT rid, {vector_sql(dim)} FROM chunks WHERE {VISIBLE} ORDER BY rid", {"g": gen}
    ).fetchall()
    if not rows:
        return {"ann": ann}
    vecs = unit_rows(decode_vectors([r[1] for r in rows], dim))
    n = len(rows)
    nlist = int(ann.get("nlist") or default_nlist(n))
    nlist = max(1, min(nlist, n))
    old = conn.execute("SELECT value FROM meta WHERE key = 'ivf_centroids'").fetchone()
    reuse = (
        old is not None
        and ann.get("trained_on")
        and ann.get("trained_nlist") == nlist
        and n <= RETRAIN_GROWTH * int(ann["trained_on"])
    )
    if reuse:
        centroids = decode_centroids(json.loads(old[0]), nlist, dim)
    else:
        centroids = train(vecs, nlist)
        ann.update(trained_on=n, trained_nlist=nlist)
    lists = assign(vecs, centroids)
    conn.executemany(
        "UPDATE chunks SET list_no = ? WHERE rid = ?",
        [(int(li), int(r[0])) for li, r in zip(lists, rows, strict=True)],
    )
    meta_set(conn, "ivf_centroids", encode_centroids(centroids))
    rng = np.random.default_rng(0)
    qi = rng.choice(n, min(RECALL_QUERIES, n), replace=False)
    nprobe = int(ann.get("nprobe") or 16)
    ann.update(
        type="ivf",
        nlist=nlist,
        nprobe=nprobe,
        recall_at_10=round(recall_at_k(vecs, centroids, lists, nprobe, qi), 4),
        recall_queries=f"{len(qi)} stored chunk vectors",
    )
    return {"ann": ann}
