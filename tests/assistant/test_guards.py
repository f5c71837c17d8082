"""The number guard and the drug-term guard on tricky text (no model, no index)."""

from __future__ import annotations

import pytest

from assistant.checks.number_guard import canonical_number, find_quantities, unsupported_numbers
from assistant.checks.term_guard import drug_terms, is_drug_like, unsupported_terms

PASSAGE = ("Adults aged 55 to 80 years should be screened. Aim for a blood pressure below "
           "140/90 mm Hg. Give 200 to 400 milligrams of ibuprofen, up to 1000 mg a day; "
           "vitamin D 800 IU. About 30 percent respond within 2.5 weeks. Updated 2013-03-14 "
           "(revised in 2016).")


def keys(text: str) -> list[tuple[str, str, str]]:
    return [(q.kind, q.key, q.unit) for q in find_quantities(text)]


@pytest.mark.parametrize(("raw", "canon"), [("1,000", "1000"), ("2.50", "2.5"), (".5", "0.5"),
                                            ("007", "7"), ("0", "0"), ("10.0", "10")])
def test_canonical_numbers(raw: str, canon: str) -> None:
    assert canonical_number(raw) == canon


@pytest.mark.parametrize(("text", "expected"), [
    ("140/90 mmHg", [("ratio", "140/90", "mmhg")]),
    ("140 / 90 mm Hg", [("ratio", "140/90", "mmhg")]),
    ("55 to 80 years", [("range", "55-80", "years")]),
    ("55–80 yrs", [("range", "55-80", "years")]),
    ("30 %", [("number", "30", "%")]),
    ("30% and 30 percent", [("number", "30", "%"), ("number", "30", "%")]),
    ("1,000 milligrams", [("number", "1000", "mg")]),
    ("0.5 mg and .5mg", [("number", "0.5", "mg"), ("number", "0.5", "mg")]),
    ("a 10-year-old", [("number", "10", "years")]),
    ("on 3/14/2013", [("date", "3/14/2013", "")]),
    ("in 2013", [("number", "2013", "")]),
])
def test_quantities_are_read_with_their_units(text: str, expected: list) -> None:
    assert keys(text) == expected


@pytest.mark.parametrize("text", [
    "as recommended [1]", "see [2, 3] and [4-6]", "1. Screen adults\n2) Treat",
    "COVID-19 and H1N1", "a CD4 count and vitamin B12", "no numbers here"])
def test_markers_numbering_and_codes_are_not_quantities(text: str) -> None:
    assert find_quantities(text) == []


@pytest.mark.parametrize("answer", [
    "Screen adults aged 55 to 80 years [1].",
    "Screen adults aged 55-80 years.",          # a range written differently
    "Keep it below 140 / 90 mmHg.",            # spacing and unit spelling
    "Give 400 mg of ibuprofen [2].",           # the end of a range in the source
    "Up to 1,000 mg a day.",                   # thousands separator
    "About 30 % respond.",                     # percent written differently
    "Within 2.5 weeks.",                       # a decimal
    "Revised in 2016.",                        # a year
    "1. Screen. 2. Treat. 3. Follow up.",      # list numbering is not a claim
])
def test_numbers_the_passage_states_are_supported(answer: str) -> None:
    assert unsupported_numbers(answer, [PASSAGE]) == []


@pytest.mark.parametrize(("answer", "flagged"), [
    ("Give 600 mg [1].", ["600 mg"]),
    ("Give 400 mL.", ["400 mL"]),                  # the value with another unit
    ("Adults aged 50 to 80 years.", ["50 to 80 years"]),
    ("Below 150/90 mmHg.", ["150/90 mmHg"]),
    ("About 35 % respond.", ["35 %"]),
    ("Within 2.25 weeks.", ["2.25 weeks"]),
    ("Updated 2014-03-14.", ["2014-03-14"]),
    ("Revised in 2015 and 2016.", ["2015"]),
    ("Give 600 mg, then 600 mg again.", ["600 mg"]),  # listed once
])
def test_numbers_no_passage_states_are_flagged(answer: str, flagged: list[str]) -> None:
    assert unsupported_numbers(answer, [PASSAGE]) == flagged


def test_a_number_is_looked_up_in_every_shown_passage() -> None:
    assert unsupported_numbers("Give 5 mg or 7 mg.", ["Use 5 mg.", "Or 7 mg."]) == []
    assert unsupported_numbers("Give 5 mg.", []) == ["5 mg"]


@pytest.mark.parametrize("word", ["amoxicillin", "cimeacillin", "Vancomycin", "fluconazole",
                                  "lisinopril", "losartan", "metoprolol", "atorvastatin",
                                  "rituximab", "acyclovir", "ceftriaxone", "prednisone"])
def test_drug_like_words(word: str) -> None:
    assert is_drug_like(word)


@pytest.mark.parametrize("word", ["April", "cholesterol", "person", "reason", "program",
                                  "diagram", "season", "treatment", "vir", "mab"])
def test_ordinary_words_are_not_drug_like(word: str) -> None:
    assert not is_drug_like(word)


def test_an_invented_drug_is_flagged_and_a_sourced_one_is_not() -> None:
    answer = ("Scabies is treated with an appropriate antibiotic, such as cimeacillin, or with "
              "Ivermectin and permethrin; in April, amoxicillin.")
    passages = ["Permethrin cream is applied; amoxicillin is not used."]
    assert drug_terms(answer) == ["cimeacillin", "amoxicillin"]
    assert unsupported_terms(answer, passages) == ["cimeacillin"]
