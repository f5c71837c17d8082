"""Quoted-text attribution (assistant/checks/attribution.py) and how the Answer reports its
kinds."""

from __future__ import annotations

import json

import pytest

from assistant.answer import (
    CITED,
    GIVEN,
    MATCHED,
    Answer,
    Passage,
    resolve_citations,
)
from assistant.checks.attribution import (
    MATCH_MIN_WORDS,
    answer_sentences,
    longest_shared_run,
    match_passages,
)
from assistant.checks.evidence import EvidenceSentence

LUNG = ("The USPSTF recommends annual screening for lung cancer with low-dose computed "
        "tomography (LDCT) in adults aged 55 to 80 years who have a 30 pack-year smoking "
        "history and currently smoke or have quit within the past 15 years.")
VARICELLA = ("Children should receive two doses of varicella vaccine: the first dose at age "
             "12 through 15 months and the second dose at age 4 through 6 years.")
OVERLAP = ("in adults aged 55 to 80 years who have a 30 pack-year smoking history. Screening "
           "should be discontinued once a person has not smoked for 15 years.")


def passages(*texts: str) -> list[Passage]:
    return [Passage(i, f"doc-{i}", f"doc-{i}:0", f"Title {i}", "ngc", f"https://x.org/{i}",
                    None, t) for i, t in enumerate(texts, start=1)]


def test_sentences_end_at_stops_and_line_breaks_not_after_initials() -> None:
    text = ("The U.S. Preventive Services Task Force, e.g. its panel, says so [1]. Next one!  "
            "Is it?\nA line\n\nLast")
    assert answer_sentences(text) == [
        "The U.S. Preventive Services Task Force, e.g. its panel, says so [1].",
        "Next one!", "Is it?", "A line", "Last"]
    assert answer_sentences("  \n ") == []


def test_longest_shared_run() -> None:
    a = ["x", "adults", "aged", "55", "to", "80", "years", "y"]
    b = ["people", "adults", "aged", "55", "to", "80", "years", "who"]
    assert longest_shared_run(a, b) == (6, 1)
    assert longest_shared_run(a, []) == (0, 0)
    assert longest_shared_run(["a", "b"], ["c"]) == (0, 0)


def test_a_copied_sentence_matches_its_passage_ignoring_case_punctuation_and_markers() -> None:
    answer = ("Adults should ask a doctor. ANNUAL screening for lung cancer — with low-dose "
              "computed tomography [2] (LDCT) in adults aged 55 to 80!")
    (m,) = match_passages(answer, {1: VARICELLA, 2: LUNG})
    assert (m.number, m.sentence) == (2, 1)
    assert m.n_words == 17  # "annual ... 80": the [2] marker and punctuation do not break it
    assert m.quote.startswith("ANNUAL screening") and m.quote.endswith("aged 55 to 80")


def test_the_threshold_is_eight_consecutive_words() -> None:
    assert MATCH_MIN_WORDS == 8
    seven = "Screening is advised in adults aged 55 to 80 years today."  # 7 words shared
    eight = "Screening is advised in adults aged 55 to 80 years who smoke."  # 8 words shared
    assert match_passages(seven, {1: LUNG}) == []
    (m,) = match_passages(eight, {1: LUNG})
    assert m.n_words == 8 and m.quote == "in adults aged 55 to 80 years who"
    assert match_passages(seven, {1: LUNG}, min_words=7)[0].n_words == 7
    with pytest.raises(ValueError):
        match_passages(seven, {1: LUNG}, min_words=0)


def test_scattered_common_words_are_not_a_match() -> None:
    paraphrase = ("Smokers aged 55 to 80 should get a yearly low-dose CT scan if they quit "
                  "less than 15 years ago, according to the task force.")
    assert match_passages(paraphrase, {1: LUNG}) == []


def test_a_sentence_goes_to_the_passage_with_its_longest_run_ties_to_each() -> None:
    sentence = ("Screening is for people in adults aged 55 to 80 years who have a 30 pack-year "
                "smoking history and currently smoke.")
    # passage 1 shares 18 words ("in adults ... currently smoke"), passage 3 only 15
    assert [(m.number, m.n_words) for m in match_passages(sentence, {1: LUNG, 3: OVERLAP})] == [
        (1, 18)]
    tied = "It applies in adults aged 55 to 80 years who have a 30 pack-year smoking history."
    assert [(m.number, m.n_words) for m in match_passages(tied, {3: OVERLAP, 1: LUNG})] == [
        (1, 15), (3, 15)]


def test_each_sentence_is_matched_on_its_own() -> None:
    answer = (f"{LUNG} Also, the first dose at age 12 through 15 months and the second dose "
              "is given later.")
    found = [(m.number, m.sentence) for m in match_passages(answer, {1: LUNG, 2: VARICELLA})]
    assert found == [(1, 0), (2, 1)]


def test_citations_keep_the_kinds_apart_and_resolve() -> None:
    ps = passages(LUNG, VARICELLA, OVERLAP)
    text = f"Two doses are given [2]. {LUNG} See [7]."
    cites, unresolved = resolve_citations(text, ps)
    assert [(c.number, c.kind) for c in cites] == [(2, CITED), (1, MATCHED)]
    assert unresolved == [7]
    assert cites[0].quote is None and cites[0].cited_in_text  # cited, but not quoted
    assert cites[1].quote == LUNG.rstrip(".") and not cites[1].cited_in_text
    for c in cites:
        p = ps[c.number - 1]
        assert (c.id, c.title, c.source, c.url) == (p.id, p.title, p.source, p.url)


def test_a_passage_both_cited_and_quoted_is_cited_with_its_quote() -> None:
    cites, _ = resolve_citations(f"{VARICELLA} [2]", passages(LUNG, VARICELLA))
    assert [(c.number, c.kind) for c in cites] == [(2, CITED)]
    assert cites[0].quote and cites[0].quote.startswith("Children should receive")


def test_neither_cited_nor_quoted_lists_the_passages_given() -> None:
    cites, _ = resolve_citations("Ask your doctor about it.", passages(LUNG, VARICELLA))
    assert [(c.number, c.kind) for c in cites] == [(1, GIVEN), (2, GIVEN)]


def test_answer_shows_the_kinds_and_keeps_the_model_text() -> None:
    ps = passages(LUNG, VARICELLA)
    text = f"Two doses [2]. {LUNG}"
    cites, unresolved = resolve_citations(text, ps)
    answer = Answer("q", text, cites, ps, unresolved_citations=unresolved)
    shown = answer.full_text()
    assert shown.startswith(text + "\n\nSources:\n[2] Title 2 (ngc) https://x.org/2\n[1] Title 1")
    assert "matched by quoted text; not cited by the model: \"The USPSTF recommends" in shown
    assert "shares 8 or more consecutive words" in shown
    data = json.loads(json.dumps(answer.to_dict()))
    assert data["answer"] == text  # the raw model text, no markers added
    assert [(c["number"], c["kind"]) for c in data["citations"]] == [(2, "cited"), (1, "matched")]
    assert data["citations"][1]["quote"] == LUNG.rstrip(".")
    assert data["citations"][1]["label"] == "matched by quoted text; not cited by the model"
    assert [c["cited_in_text"] for c in data["citations"]] == [True, False]
    given = Answer("q", "Nothing.", resolve_citations("Nothing.", ps)[0], ps).sources_text()
    assert "neither cites a passage by number nor quotes one" in given


def test_a_passage_only_the_evidence_quotes_is_listed_too() -> None:
    ps = passages(LUNG, VARICELLA)
    text = "Two doses [2]."
    quoted = [EvidenceSentence(1, LUNG, 0, len(LUNG), 0.8)]
    answer = Answer("q", text, resolve_citations(text, ps)[0], ps, evidence=quoted)
    shown = answer.sources_text()
    assert shown.splitlines()[1:] == [
        "[2] Title 2 (ngc) https://x.org/2", "[1] Title 1 (ngc) https://x.org/1",
        "([1]: quoted in the evidence above; the answer does not draw on it)",
    ]
    cited = Answer("q", "Screen [1]. Two doses [2].", resolve_citations("[1] [2]", ps)[0], ps,
                   evidence=quoted)
    assert "quoted in the evidence" not in cited.sources_text()


def test_words_echoed_from_the_question_are_not_a_match() -> None:
    question = "Who is at risk for lung cancer in adults aged 55 to 80 years who smoke?"
    echo = "Lung cancer in adults aged 55 to 80 years who smoke is a concern."
    assert [m.n_words for m in match_passages(echo, {1: LUNG})] == [8]  # without the question
    assert match_passages(echo, {1: LUNG}, question=question) == []
    copied = "Screening is for adults aged 55 to 80 years who have a 30 pack-year history."
    (m,) = match_passages(copied, {1: LUNG}, question=question)  # more than the question holds
    assert m.n_words == 12  # "adults aged ... 30 pack-year"
    cites, _ = resolve_citations(echo, passages(LUNG), question=question)
    assert [c.kind for c in cites] == [GIVEN]
