"""The re-ranking seam: step specs, the registry, and each step on a real small index."""

from __future__ import annotations

import pytest
from ingest_helpers import write_jsonl

import ingest
from ingest import rerank
from ingest.rerank import RerankSpecError, make_step
from ingest.rerank.restated import novelty
from ingest.search import HybridSettings

Q = "How is the disease treated?"


def test_specs_parse_and_bad_ones_fail_early():
    step = make_step("parts:depth=7")
    assert step.depth == 7
    for bad, why in [("nope", "unknown step"), ("parts:depth", "key=number"),
                     ("parts:depth=x", "key=number"), ("parts:width=3", "unexpected keyword")]:
        with pytest.raises(RerankSpecError, match=why):
            make_step(bad)
    with pytest.raises(RerankSpecError):
        HybridSettings(rerank=("parts", "nope"))


def test_a_new_step_is_one_class_and_one_line(small_index, embedder, monkeypatch):
    class Reverse:
        def __call__(self, query, ranked):
            return ranked[: query.k][::-1] + ranked[query.k :]

    monkeypatch.setitem(rerank.STEPS, "reverse", Reverse)
    idx = ingest.open_index(small_index, embedder=embedder, hybrid=HybridSettings(rerank=()))
    plain = [h.chunk_id for h in idx.search(Q, k=4)]
    assert [h.chunk_id for h in idx.search(Q, k=4, rerank=["reverse"])] == plain[::-1]


def test_threshold_and_mmr_steps(small_index, embedder):
    idx = ingest.open_index(small_index, embedder=embedder)
    vec = embedder.embed_query(Q)
    assert idx.search(Q, k=5, rerank=["threshold:min_similarity=0.99"]) == []
    kept = idx.search(Q, k=5, rerank=["threshold:min_similarity=0.2"])
    sims = idx.get_vectors([h.chunk_id for h in kept]) @ vec
    assert kept and (sims >= 0.2 - 1e-5).all()
    diverse = idx.search(Q, k=4, mode="dense", rerank=["mmr:fetch_k=20,lambda_mult=0.3"])
    plain = idx.search(Q, k=4, mode="dense")
    assert len({h.chunk_id for h in diverse}) == 4
    assert [h.chunk_id for h in diverse] != [h.chunk_id for h in plain]
    # lexical search runs steps too when given (the retriever's threshold)
    assert idx.search(Q, k=5, mode="lexical", rerank=["threshold:min_similarity=0.99"]) == []


def test_doc_step_picks_passages_of_the_first_document(small_index, embedder):
    idx = ingest.open_index(small_index, embedder=embedder, hybrid=HybridSettings(rerank=()))
    plain = idx.search(Q, k=20)
    first_doc = plain[0].metadata["doc_id"]
    got = idx.search(Q, k=20, rerank=["doc:docs=1,depth=3"])
    head = {h.chunk_id for h in plain[:3]}
    for h in got[:3]:
        assert h.chunk_id in head or h.metadata["doc_id"] == first_doc
    scores = [h.score for h in got[:3]]
    assert scores == sorted(scores, reverse=True)
    # nothing is lost or repeated: the rest of the ranking follows in its order
    assert len({h.chunk_id for h in got}) == len(got)
    moved = {h.chunk_id for h in got[:3]}
    assert [h.chunk_id for h in got[3:]] == [
        h.chunk_id for h in idx.search(Q, k=50) if h.chunk_id not in moved
    ][: len(got) - 3]


def test_novelty_is_the_share_of_words_beyond_the_title():
    title = "Screening for abdominal aortic aneurysm: recommendation statement."
    assert novelty("Screening for abdominal aortic aneurysm: recommendation statement.", title) == 0
    assert novelty("Men aged 65 to 75 years who have ever smoked: one ultrasonography.", title) == 1
    assert novelty("Task Force. Screening for abdominal aortic aneurysm. Ann Med.", title) < 0.5
    assert novelty("12 3.4 -- ok", title) == 1.0  # no word of four letters: left alone


GUIDELINE = {
    "id": "g1", "source": "ngc", "title": "Screening for a rare disease: recommendation statement.",
    "clean_text": "# General\n\n## Guideline Title\n\nScreening for a rare disease: recommendation "
    "statement.\n\n## Bibliographic Source(s)\n\nTask Force. Screening for a rare disease: "
    "recommendation statement. Ann Intern Med. 2014.\n\n# Recommendations\n\n## Major "
    "Recommendations\n\nThe panel recommends one ultrasound for men aged 65 to 75 years who have "
    "ever smoked. Women who never smoked need no ultrasound. " + " ".join(
        f"Group {i} of the trial showed fewer deaths after the ultrasound." for i in range(12)
    ) + "\n",
}


def test_restated_step_puts_title_restatements_behind(tmp_path, embedder, small_docs):
    corpus = write_jsonl(tmp_path / "c.jsonl", [GUIDELINE, *small_docs])
    ingest.build(corpus, tmp_path / "i", embedder=embedder, progress=False)
    idx = ingest.open_index(tmp_path / "i", embedder=embedder, hybrid=HybridSettings(rerank=()))
    q = "Who should be screened for a rare disease?"
    plain = idx.search(q, k=10)
    assert plain[0].metadata["heading"] == "General"  # the title and citation match best
    got = idx.search(q, k=10, rerank=["restated"])
    assert got[0].metadata["heading"] == "Recommendations › Major Recommendations"
    restates = [novelty(h.text, h.metadata["title"]) < 0.7 for h in got]
    assert restates == sorted(restates)  # every restatement after the others
    assert sorted(h.chunk_id for h in got) == sorted(h.chunk_id for h in plain)
    # the default steps end with it
    top = ingest.open_index(tmp_path / "i", embedder=embedder).search(q, k=1)[0]
    assert novelty(top.text, top.metadata["title"]) >= 0.7
