"""Evidence sentences, the refusal decision and the checks in the chain (stand-in model and
retriever; the real ones: test_eval_end_to_end.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models.fake import FakeStreamingListLLM
from langchain_core.retrievers import BaseRetriever

from assistant.chain import RAGChain, stream_tail
from assistant.checks.evidence import overlaps, select_evidence
from assistant.checks.refusal import (
    REFUSAL_TEXT,
    RefusalFeatures,
    RefusalPolicy,
    RefusalPolicyError,
    coverage,
    decide,
    features_of,
    idf,
    model_refused,
    question_terms,
)
from assistant.notice import ADVISORY_NOTICE

PASSAGE_1 = ("Scabies is an infestation of the skin by the human itch mite. Permethrin cream "
             "5 % is applied to all areas of the body from the neck down. It is washed off "
             "after 8 to 14 hours. Ok.")
PASSAGE_2 = ("Head lice are wingless insects. Lice spread by head-to-head contact and are "
             "common among children aged 3 to 11 years.")


class ListRetriever(BaseRetriever):
    docs: list[Document]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: object) -> list[Document]:
        return self.docs


def doc(i: int, text: str) -> Document:
    return Document(id=f"c{i}", page_content=text,
                    metadata={"id": f"g{i}", "title": f"Guideline {i}", "source": "cdc",
                              "url": f"https://x/{i}", "similarity": 0.6})


def chain_for(answer: str, policy: RefusalPolicy | None) -> RAGChain:
    llm = FakeStreamingListLLM(responses=[answer],
                               custom_get_token_ids=lambda t: list(range(len(t.split()))))
    return RAGChain(ListRetriever(docs=[doc(1, PASSAGE_1), doc(2, PASSAGE_2)]), llm,
                    max_tokens=32, refusal=policy)


def test_evidence_lexical_fallback_picks_the_answering_sentences_with_their_place() -> None:
    ev = select_evidence("How is scabies treated with permethrin cream?",
                         [(1, PASSAGE_1), (2, PASSAGE_2)])
    assert 2 <= len(ev) <= 4
    assert ev[0].number == 1 and ev[0].text.startswith("Permethrin cream")
    for e in ev:  # every sentence sits where it says in its passage; "Ok." is too short
        text = {1: PASSAGE_1, 2: PASSAGE_2}[e.number]
        assert text[e.start:e.end] == e.text and e.text != "Ok."
    assert [e.score for e in ev] == sorted((e.score for e in ev), reverse=True)


def test_evidence_with_an_embedding_function_uses_cosine() -> None:
    def embed(texts):  # the question and the second sentence point the same way
        return np.asarray([[1.0, 0.0] if i in (0, 2) else [0.0, 1.0]
                           for i in range(len(texts))])

    ev = select_evidence("q", [(1, PASSAGE_1)], embed)
    assert ev[0].text.startswith("Permethrin") and ev[0].score == pytest.approx(1.0)
    assert len(ev) == 2  # at least two, the rest more than WITHIN below the best


def test_duplicate_sentences_of_overlapping_chunks_are_shown_once() -> None:
    ev = select_evidence("permethrin cream scabies", [(1, PASSAGE_1), (2, PASSAGE_1)])
    assert len({e.text for e in ev}) == len(ev)


def test_overlap_with_gold() -> None:
    gold = "Intro. " + PASSAGE_1
    assert overlaps("Permethrin cream 5 % is applied to all areas", gold)
    assert overlaps("Ok then.", "ok then")  # shorter than 8 words: all of them
    assert not overlaps("Permethrin lotion is applied to the scalp at night only", gold)


def test_coverage_weights_rare_words() -> None:
    assert question_terms("What is the treatment for Scabies in 2024?") == ["treatment",
                                                                             "scabies"]
    counts = {"treatment": 900, "endometriosis": 0}

    def term_counts(words):
        return counts, 1000

    cov, missing = coverage("How is endometriosis treatment done?", [PASSAGE_1 + " treatment"],
                            term_counts)
    assert missing == ["endometriosis", "done"]
    assert cov < 0.3  # the rare topic word weighs most
    assert idf(0, 1000) > idf(900, 1000) > 0
    cov_flat, _ = coverage("How is endometriosis treatment done?", [PASSAGE_1 + " treatment"])
    assert cov_flat == pytest.approx(1 / 3)


def test_prefix_matching_of_word_forms() -> None:
    cov, missing = coverage("scabies treated", ["Treatment of scabies"])
    assert cov == 1.0 and missing == []


def test_features_from_what_the_retriever_returned() -> None:
    counts = {"scabies": 3, "permethrin": 5, "capital": 0, "australia": 0}

    def term_counts(words):
        return counts, 1000

    f = features_of("scabies permethrin", ["Scabies — Treatment", "Head lice"], [0.7, 0.5],
                    term_counts)
    assert f.similarity == 0.7 and f.mean_similarity == pytest.approx(0.6)
    assert 0.4 < f.title_coverage < 0.6  # "scabies" is in a title, "permethrin" in none
    assert f.values() == (f.similarity, f.mean_similarity, f.title_coverage)
    with pytest.raises(ValueError, match="at least one"):
        features_of("scabies", ["Scabies"], [])


def test_default_policy_is_a_logistic_model_that_reads_all_three_features() -> None:
    policy = RefusalPolicy()
    close = RefusalFeatures(0.72, 0.68, 0.9)  # a typical answerable question's retrieval
    assert not policy.refuses(close) and policy.probability(close) < 0.1
    assert policy.refuses(RefusalFeatures(0.30, 0.28, 0.0))  # off-topic
    # one close passage, distant others, the topic in no title: a mention in passing
    assert policy.refuses(RefusalFeatures(0.60, 0.48, 0.0))
    # each feature pushes the same way: more similar or better covered is less refused
    p = policy.probability
    assert p(RefusalFeatures(0.6, 0.55, 0.5)) > p(RefusalFeatures(0.7, 0.55, 0.5))
    assert p(RefusalFeatures(0.6, 0.55, 0.5)) > p(RefusalFeatures(0.6, 0.65, 0.5))
    assert p(RefusalFeatures(0.6, 0.55, 0.5)) > p(RefusalFeatures(0.6, 0.55, 0.9))


def test_bad_policy_is_rejected_with_the_value() -> None:
    with pytest.raises(RefusalPolicyError, match="expected 3 weights") as e:
        RefusalPolicy(weights=(1.0, 2.0))
    assert e.value.value == (1.0, 2.0)
    with pytest.raises(RefusalPolicyError, match="probability"):
        RefusalPolicy(threshold=1.5)


def test_decision() -> None:
    policy = RefusalPolicy()
    ok = decide("scabies permethrin", [PASSAGE_1], ["Scabies"], [0.75], 0.6, policy)
    assert not ok.refuse and ok.by is None and ok.coverage == 1.0
    assert ok.similarity == ok.mean_similarity == 0.75 and ok.probability is not None
    weak = decide("scabies permethrin", [PASSAGE_1], ["Scabies"], [0.3, 0.25], 0.6, policy)
    assert weak.refuse and weak.by == "retrieval" and weak.probability >= policy.threshold
    off = decide("capital of australia", [PASSAGE_1], ["Scabies"], [0.4], 0.9, policy)
    assert off.refuse and set(off.missing) == {"capital", "australia"}
    assert off.title_coverage == 0.0
    assert decide("anything", [], [], None, None, policy).refuse
    foreign = decide("capital of australia", [PASSAGE_1], ["Scabies"], None, 0.1, policy)
    assert not foreign.refuse and foreign.probability is None  # no similarities: no decision


@pytest.mark.parametrize(("text", "refused"), [
    ("The guidelines provided do not answer the question.", True),
    ("The passages do not contain information about migraine. Rest helps.", True),
    ("I cannot answer this from the passages.", True),
    ("Permethrin cream is applied [1]. It does not contain steroids.", False),
    ("", False),
])
def test_model_refusal_is_read_from_the_first_sentence(text: str, refused: bool) -> None:
    assert model_refused(text) is refused


def test_chain_refuses_on_weak_evidence_without_the_model() -> None:
    chain = chain_for("should never be produced", RefusalPolicy(threshold=1e-9))
    chain.llm = FakeStreamingListLLM(responses=[], error_on_chunk_number=0)  # never called
    answer = chain.invoke("What is the capital of Australia?")
    assert answer.refused and answer.text == REFUSAL_TEXT and answer.refusal["by"] == "retrieval"
    assert [p.id for p in answer.passages] == ["g1", "g2"]  # the closest sources
    shown = str(answer)
    assert "Closest sources found" in shown and "[1] Guideline 1" in shown
    assert shown.endswith(ADVISORY_NOTICE) and answer.evidence == []


def test_chain_answer_carries_evidence_and_flags() -> None:
    text = ("Apply permethrin cream 5 % [1] for 8 to 14 hours, then 400 mg of cimeacillin "
            "for 10 days.")
    chain = chain_for(text, RefusalPolicy(threshold=1 - 1e-9))
    stream = chain.stream_answer("How is scabies treated?")
    pieces = list(stream)
    answer = stream.answer
    assert "".join(pieces).strip() == text and not answer.refused
    assert answer.evidence and answer.evidence[0].number in (1, 2)
    assert answer.unsupported_numbers == ["400 mg", "10 days"] and answer.n_numbers == 4
    assert answer.unsupported_terms == ["cimeacillin"]
    tail = stream_tail(answer)
    assert "Numbers not found in the sources: 2 of 4 — 400 mg, 10 days" in tail
    assert "Drug names not found in the sources: 1 — cimeacillin" in tail
    assert tail.endswith(ADVISORY_NOTICE)
    data = json.loads(json.dumps(answer.to_dict()))
    assert data["unsupported_numbers"] == ["400 mg", "10 days"]
    assert data["unsupported_terms"] == ["cimeacillin"]
    assert data["evidence"][0]["text"] and data["refusal"]["refuse"] is False
    assert str(answer).index("Evidence from the sources") < str(answer).index(text)


def test_chain_marks_the_models_own_refusal() -> None:
    chain = chain_for("The guidelines provided do not answer the question.", None)
    answer = chain.invoke("How is scabies treated?")
    assert answer.refused and answer.refusal == {"refuse": True, "by": "model"}
