"""Searching a real index: modes, fusion, filters, vectors for MMR, threads, IVF."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from ingest_helpers import write_jsonl

import ingest
from ingest.evaluate import QA, score_rankings
from ingest.lexical import fts_query
from ingest.search import rrf


@pytest.fixture(scope="module")
def idx(small_index, embedder):
    return ingest.open_index(small_index, embedder=embedder)


def test_modes_find_the_document_by_its_topic(idx, small_docs):
    doc = next(d for d in small_docs if d["source"] == "cdc")
    question = f"What is {doc['title']}?"
    for mode in ("hybrid", "dense", "lexical"):
        hits = idx.search(question, k=3, mode=mode)
        assert 0 < len(hits) <= 3, mode
        assert hits[0].metadata["doc_id"] == doc["id"], mode
        h = hits[0]
        assert set(h.metadata) >= {"doc_id", "source", "title", "url", "heading", "start", "end"}
        assert doc["clean_text"][h.metadata["start"] : h.metadata["end"]] == h.text
        assert h.chunk_id == f"{doc['id']}#{h.metadata['chunk']}"
    scores = [h.score for h in idx.search(question, k=5)]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(ValueError, match="mode"):
        idx.search(question, mode="magic")
    assert idx.search("   ") == [] and idx.search("the of and", mode="lexical") == []


def test_query_syntax_is_never_interpreted(idx):
    """FTS5 syntax in a question is read as words: a query finds what its words find.

    Interpreted, ``NEAR(yellow fever)`` would keep only chunks with both words close together
    (and not search "near"), ``nosuchcolumn:fever`` would fail (no such column), ``fever
    NOT vaccine`` would drop the chunks that mention vaccines, and ``"unbalanced`` or ``(((``
    would be syntax errors."""
    assert fts_query('NEAR(yellow fever) nosuchcolumn:x "q* ^zeta') == (
        '"near" OR "yellow" OR "fever" OR "nosuchcolumn" OR "x" OR "q" OR "zeta"')
    queries = ["NEAR(yellow fever)", "nosuchcolumn:fever", "text:fever", "fever NOT vaccine",
               '"unbalanced fever', "fever*", "^fever", "(((fever", "fever -vaccine"]
    for q in queries:
        words = " ".join(re.findall(r"\w+", q))
        hits = idx.search(q, k=5, mode="lexical")
        plain = idx.search(words, k=5, mode="lexical")
        assert hits, q  # every one has a word the small corpus holds
        assert [(h.chunk_id, h.score) for h in hits] == [(h.chunk_id, h.score) for h in plain], q
        assert len(idx.search(q, k=2)) == 2  # hybrid: the dense side reads the raw text
    not_vaccine = idx.search("fever NOT vaccine", k=20, mode="lexical")
    assert any("vaccin" in h.text.lower() for h in not_vaccine)  # NOT was not applied
    for q in ["a AND OR NOT *", "-", "(((", "é"]:
        assert idx.search(q, k=2, mode="lexical") == idx.search(
            " ".join(re.findall(r"\w+", q)), k=2, mode="lexical")


def test_sources_filter(idx, small_docs):
    for mode in ("hybrid", "dense", "lexical"):
        hits = idx.search("blood pressure screening", k=10, sources=["nhlbi"], mode=mode)
        assert hits and {h.metadata["source"] for h in hits} == {"nhlbi"}
    assert idx.search("fever", k=3, sources=["who"]) == []


def test_dense_scores_and_vectors(idx):
    q = idx.embed_query("yellow fever vaccine")
    assert q.shape == (384,) and q.dtype == np.float32
    assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-5)
    hits = idx.search_by_vector(q, k=4)
    vecs = idx.get_vectors([h.chunk_id for h in hits])
    assert vecs.shape == (4, 384)
    np.testing.assert_allclose(vecs @ q, [h.score for h in hits], atol=1e-5)
    assert idx.search("yellow fever vaccine", k=4, mode="dense")[0].chunk_id == hits[0].chunk_id


def test_rrf_fuses_by_rank():
    fused = rrf([(1.0, [1, 2, 3]), (1.0, [3, 4])], rrf_k=60)
    assert [r for r, _ in fused] == [3, 1, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61)


def test_concurrent_searches_from_threads(idx):
    questions = ["fever", "blood pressure", "vaccination schedule", "asthma treatment"]
    expected = {q: [h.chunk_id for h in idx.search(q, k=3)] for q in questions}
    errors: list[BaseException] = []

    def run(q: str) -> None:
        try:
            for _ in range(5):
                assert [h.chunk_id for h in idx.search(q, k=3)] == expected[q]
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(q,)) for q in questions * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_stats(idx, small_docs):
    st = idx.stats()
    assert st["documents"] == len(small_docs) and st["size_bytes"] > 0
    assert sum(v["chunks"] for v in st["per_source"].values()) == st["chunks"]


def test_score_rankings_counts_passages_and_documents():
    qa = [
        QA("q1", "First sentence of the answer is long enough. Short.", "d1"),
        QA(
            "q2",
            "Another answer sentence that is long enough.\nsecond line is also quite long enough!",
            "d2",
        ),
    ]
    rankings = [
        [("d9", "nothing"), ("d1", "x First sentence of the answer is long enough. y")],
        [("d2", "wrong part"), ("d3", "second line is also quite long enough!")],
    ]
    m = score_rankings(qa, rankings, [1, 2])
    assert m["doc_hit@1"] == 0.5 and m["doc_hit@2"] == 1.0
    assert m["passage_hit@1"] == 0.0 and m["passage_hit@2"] == 1.0  # a hit in another doc counts
    assert m["mrr"] == pytest.approx(0.5)
    assert QA("q", "Tiny. Also tiny.", "d").sentences == []


@pytest.mark.slow
def test_ivf_option_records_its_recall(tmp_path, small_docs, embedder, small_index):
    corpus = write_jsonl(tmp_path / "c.jsonl", small_docs)
    rep = ingest.build(
        corpus,
        tmp_path / "ivf",
        embedder=embedder,
        progress=False,
        ann={"type": "ivf", "nlist": 4, "nprobe": 1},
    )
    assert rep.published
    ivf = ingest.open_index(tmp_path / "ivf", embedder=embedder)
    ann = ivf.stats()["ann"]
    assert ann["type"] == "ivf" and ann["nlist"] == 4 and 0 < ann["recall_at_10"] <= 1
    exact = ingest.open_index(small_index, embedder=embedder)
    q = exact.embed_query("vaccination")
    got = [h.chunk_id for h in ivf.search_by_vector(q, k=5)]
    want = [h.chunk_id for h in exact.search_by_vector(q, k=5)]
    assert got and len(set(got) & set(want)) >= 1
    ivf.store._view = None  # all lists probed: the same answer as exact search
    ivf.store.manifest["ann"]["nprobe"] = 4
    view = ivf.store.view()
    view.index.nprobe = 4
    assert [h.chunk_id for h in ivf.search_by_vector(q, k=5)] == want
