"""Part (sentence) vectors pooled from the chunk's own forward pass, data-parallel embedding, and
the inference mode an index records."""

from __future__ import annotations

import numpy as np
import pytest
from ingest_helpers import shortest

import ingest
from ingest.chunking import Chunker, ChunkingSettings
from ingest.embedding import Embedder
from ingest.errors import EmbeddingMismatch
from ingest.search import HybridSettings
from ingest.vectors import VectorDataError, decode_parts, encode_parts


@pytest.fixture(scope="module")
def chunks(embedder):
    docs = shortest(2)
    chunker = Chunker(embedder.counter, ChunkingSettings())
    out = []
    for d in docs:
        out += chunker.chunk(d["id"], d["clean_text"], d.get("title"))
    return out


def test_part_ranges_are_sentences_inside_the_body(chunks, embedder):
    n_suffix = len(embedder.counter.suffix)
    for c in chunks:
        body_end = len(c.token_ids) - n_suffix
        assert c.parts is not None and c.parts.ndim == 2 and len(c.parts) >= 1
        a, b = c.parts[:, 0], c.parts[:, 1]
        assert (a >= c.n_lead).all() and (b <= body_end).all() and (b > a).all()
        assert (np.diff(a) > 0).all()  # in text order, each part starts after the previous
        # every sentence's tokens decode to text found in the chunk
        tok = embedder.counter._tok
        for lo, hi in c.parts[:3]:
            words = tok.decode(c.token_ids[lo:hi].tolist()).split()
            assert words and words[0].lower() in c.text.lower()


def test_a_part_spanning_the_body_is_the_chunk_vector(chunks, embedder):
    """Pooling check: mean over (lead + whole body + suffix) is the model's own mean pooling."""
    some = chunks[:6]
    n_suffix = len(embedder.counter.suffix)
    whole = [np.array([[c.n_lead, len(c.token_ids) - n_suffix]]) for c in some]
    vecs, parts = embedder.embed_parts(
        [c.token_ids for c in some], whole, [c.n_lead for c in some]
    )
    for v, p in zip(vecs, parts, strict=True):
        assert p.shape == (1, embedder.dim)
        assert float(v @ p[0]) > 0.9999
    # the chunk vectors of embed_parts are those of embed_ids
    assert np.allclose(vecs, embedder.embed_ids([c.token_ids for c in some]), atol=1e-5)


def test_part_vectors_differ_by_sentence(chunks, embedder):
    many = [c for c in chunks if len(c.parts) >= 3][:4]
    assert many
    _, parts = embedder.embed_parts(
        [c.token_ids for c in many], [c.parts for c in many], [c.n_lead for c in many]
    )
    for c, p in zip(many, parts, strict=True):
        assert p.shape == (len(c.parts), embedder.dim)
        assert np.allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-5)
        assert float(p[0] @ p[-1]) < 0.999


def test_data_parallel_workers_give_the_same_vectors(chunks, embedder):
    ids = [c.token_ids for c in chunks[:40]]
    one = Embedder(embedder.model, embedder.name, workers=1)
    two = Embedder(embedder.model, embedder.name, workers=2)
    a, b = one.embed_ids(ids, batch_size=8), two.embed_ids(ids, batch_size=8)
    assert np.allclose(a, b, atol=1e-5)


def test_parts_blob_round_trip_and_checks():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((3, 8)).astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    back = decode_parts(encode_parts(p), 8, 10)
    assert back.shape == (3, 8) and np.allclose(back, p, atol=2e-3)
    with pytest.raises(VectorDataError):
        decode_parts(encode_parts(p)[:-1], 8, 10)  # not whole rows
    with pytest.raises(VectorDataError):
        decode_parts(encode_parts(p), 8, 2)  # more rows than a chunk can have
    with pytest.raises(VectorDataError):
        decode_parts(np.full((1, 8), np.inf, "<f2").tobytes(), 8, 10)


def test_index_records_inference_and_parts_and_uses_them(small_index, embedder):
    idx = ingest.open_index(small_index, embedder=embedder)
    emb = idx.manifest["embedding"]
    assert emb["inference"] == embedder.inference
    assert emb["parts"] == embedder.parts_spec
    rids = [int(r) for (r,) in idx.store._conn().execute("SELECT rid FROM chunks LIMIT 5")]
    parts = idx.store.part_vectors(rids)
    assert len(parts) == len(rids) and all(p.shape[1] == embedder.dim for p in parts.values())
    hits = idx.search("What causes the disease?", k=5)
    assert len(hits) == 5
    with pytest.raises(EmbeddingMismatch):
        idx.store.check_embedding(embedder.name, embedder.dim, "torch-int8")


def test_rerank_reorders_only_the_first_fused_chunks(small_index, embedder):
    plain = ingest.open_index(small_index, embedder=embedder, hybrid=HybridSettings(rerank=()))
    depth = 5
    rerank = ingest.open_index(
        small_index, embedder=embedder, hybrid=HybridSettings(rerank=(f"parts:depth={depth}",))
    )
    q = "How is the disease treated?"
    before, after = plain.search(q, k=10), rerank.search(q, k=10)
    ids = [h.chunk_id for h in before]
    assert {h.chunk_id for h in after[:depth]} == set(ids[:depth])
    assert [h.chunk_id for h in after[depth:]] == ids[depth:]
    scores = [h.score for h in after[:depth]]
    assert scores == sorted(scores, reverse=True)
    # the new score is the chunk's cosine similarity plus its best sentence's
    vec = embedder.embed_query(q)
    conn = rerank.store._conn()
    n_with_parts = 0
    for hit in after[:depth]:
        chunk_cos = float(rerank.get_vectors([hit.chunk_id])[0] @ vec)
        (rid,) = conn.execute("SELECT rid FROM chunks WHERE chunk_id = ? AND gen_deleted IS NULL",
                              (hit.chunk_id,)).fetchone()
        parts = rerank.store.part_vectors([int(rid)])
        best = float(np.max(parts[int(rid)] @ vec)) if int(rid) in parts else chunk_cos
        n_with_parts += int(rid) in parts
        assert hit.score == pytest.approx(chunk_cos + best, abs=1e-5), hit.chunk_id
    assert n_with_parts > 0  # the formula's second term came from stored sentence vectors
