"""The medical abbreviation list and query expansion for BM25."""

from __future__ import annotations

import pytest

from ingest.abbreviations import abbreviations, expand_query, expansions


def test_the_list_loads_and_is_small_and_general():
    table = abbreviations()
    assert 40 <= len(table) <= 200
    assert table["COPD"] == "chronic obstructive pulmonary disease"


def test_expansion_both_ways_whole_words_capitals_only():
    assert expansions("What is COPD?") == ["chronic obstructive pulmonary disease"]
    assert expansions("risk of deep vein thrombosis after surgery") == ["DVT"]
    assert expansions("copd in lower case, ms as a unit, TBSA") == []
    assert expand_query("no abbreviation here") == "no abbreviation here"


def test_a_bad_line_names_the_file_and_line(tmp_path):
    bad = tmp_path / "a.tsv"
    bad.write_text("# comment\nCOPD chronic obstructive\n")
    with pytest.raises(ValueError, match=r"a\.tsv:2"):
        abbreviations.__wrapped__(bad)
