"""Chunking with the real MiniLM tokenizer: bounds, offsets, structure, overlap, exact token ids."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ingest_helpers import sample_docs
from tokenizers import Tokenizer

from ingest.chunking import (
    Chunker,
    ChunkingSettings,
    TokenCounter,
    _is_implicit_heading,
    parse_sections,
)
from ingest.embedding import packaged_model_path


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter(Tokenizer.from_file(str(packaged_model_path() / "tokenizer.json")))


DOC = """# Recommendations

## Major Recommendations

The panel recommends screening. It applies to adults over 40 years of age.

- Offer counselling to smokers.
- Check blood pressure yearly.

## Qualifying Statements

Evidence is limited for children.
"""


def test_sections_follow_headings_paragraphs_and_bullets():
    sections = parse_sections(DOC)
    assert [s.headings for s in sections] == [
        ("Recommendations", "Major Recommendations"),
        ("Recommendations", "Qualifying Statements"),
    ]
    texts = [DOC[u.start : u.end] for u in sections[0].units]
    assert texts == [
        "The panel recommends screening.",
        "It applies to adults over 40 years of age.",
        "- Offer counselling to smokers.",
        "- Check blood pressure yearly.",
    ]


def test_implicit_headings_open_sub_sections():
    text = (
        "Babesiosis is caused by parasites.\n\nTreatment\n\nMost people need no treatment.\n\n"
        "Transmission of infection to others can be prevented by\n\n- washing hands\n\n"
        "More on: Removing Ticks\n\nLast line."
    )
    heads = [s.headings for s in parse_sections(text)]
    assert heads == [(), ("Treatment",)]  # a long lead-in and a link line are not headings
    assert [s.headings for s in parse_sections(text, implicit_headings=False)] == [()]
    doc = "# Care\n\nPhysician Diagnosis\n\nA test is done.\n\n## Follow-up\n\nSee a doctor."
    assert [s.headings for s in parse_sections(doc)] == [
        ("Care", "Physician Diagnosis"),
        ("Care", "Follow-up"),
    ]


def test_chunks_keep_headings_offsets_and_context(counter):
    settings = ChunkingSettings(max_tokens=64, min_section_tokens=0)  # every section its own
    chunks = Chunker(counter, settings).chunk("d1", DOC, "Screening")
    assert [c.heading for c in chunks] == [
        "Recommendations › Major Recommendations",
        "Recommendations › Qualifying Statements",
    ]
    for c in chunks:
        assert DOC[c.start : c.end] == c.text
        assert c.context == f"Screening › {c.heading}"
        assert "#" not in c.text  # heading lines live in the heading path, not in the text
    assert chunks[1].text == "Evidence is limited for children."


@pytest.mark.parametrize("max_tokens", [48, 128, 256])
def test_real_documents_never_exceed_the_bound_and_ids_are_exact(counter, max_tokens):
    docs = sample_docs()[::37]  # a spread of ngc, cdc and nhlbi documents
    chunker = Chunker(counter, ChunkingSettings(max_tokens=max_tokens, overlap_tokens=16))
    out = chunker.chunk_many([(d["id"], d["clean_text"], d.get("title")) for d in docs])
    for d, chunks in zip(docs, out, strict=True):
        assert chunks, d["id"]
        for c in chunks:
            assert 0 < c.n_tokens <= max_tokens
            assert d["clean_text"][c.start : c.end] == c.text and c.text.strip() == c.text
        direct = counter.ids([c.embed_text for c in chunks], 10**6)
        # the ids we embed are what the model's tokenizer makes of the embedded text
        assert all(np.array_equal(a, c.token_ids) for a, c in zip(direct, chunks, strict=True))
        # everything outside heading lines is covered
        covered = np.zeros(len(d["clean_text"]), bool)
        for c in chunks:
            covered[c.start : c.end] = True
        lines = [(0, ln) for ln in d["clean_text"].split("\n")]
        for i, (_, line) in enumerate(lines):
            if line.strip() and not line.startswith("#") and not _is_implicit_heading(lines, i):
                start = len("\n".join(d["clean_text"].split("\n")[:i])) + (1 if i else 0)
                assert covered[start + len(line) - len(line.lstrip())], (d["id"], line[:40])


def test_overlap_repeats_whole_sentences(counter):
    text = " ".join(f"Sentence number {i} tells one short fact." for i in range(60))
    chunks = Chunker(
        counter, ChunkingSettings(max_tokens=64, overlap_tokens=16, context=False)
    ).chunk("d", text)
    assert len(chunks) > 3
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end  # overlapping
        assert text[b.start : a.end].startswith("Sentence number")  # at a sentence start
    no_overlap = Chunker(
        counter, ChunkingSettings(max_tokens=64, overlap_tokens=0, context=False)
    ).chunk("d", text)
    assert all(b.start >= a.end for a, b in itertools.pairwise(no_overlap))


def test_a_long_run_without_punctuation_is_cut_at_token_bounds(counter):
    text = "word " * 2000
    chunks = Chunker(counter, ChunkingSettings(max_tokens=100)).chunk("d", text.strip())
    assert len(chunks) >= 20 and max(c.n_tokens for c in chunks) <= 100
    assert all(not c.text.startswith(" ") for c in chunks)


def test_a_very_long_title_is_cut_to_its_share(counter):
    chunks = Chunker(counter, ChunkingSettings(max_tokens=64)).chunk("d", "Body text.", "T " * 500)
    assert chunks[0].n_tokens <= 64 and chunks[0].text == "Body text."


BOILERPLATE = """# General

## Guideline Title

Screening for a disease: recommendation statement.

## Bibliographic Source(s)

Task Force. Screening for a disease. Ann Intern Med. 2014;160(5):321-9.

## Guideline Status

This is the current release of the guideline.

# Recommendations

## Major Recommendations

""" + " ".join(f"The panel recommends screening group {i} once a year." for i in range(30))


def test_small_sections_are_chunked_together(counter):
    plain = Chunker(counter, ChunkingSettings(min_section_tokens=0)).chunk(
        "d", BOILERPLATE, "Screening"
    )
    merged = Chunker(counter, ChunkingSettings(min_section_tokens=64)).chunk(
        "d", BOILERPLATE, "Screening"
    )
    assert [c.heading for c in plain][:3] == [
        "General › Guideline Title", "General › Bibliographic Source(s)",
        "General › Guideline Status",
    ]
    first = merged[0]
    assert first.heading == "General" and first.context == "Screening › General"
    assert "## Guideline Status" in first.text and "current release" in first.text
    assert first.text == BOILERPLATE[first.start : first.end]
    # the large section is chunked as before
    assert [c.text for c in merged[1:]] == [c.text for c in plain[3:]]
    assert len(merged) == len(plain) - 2


def test_subheadings_join_the_context_line_without_cutting(counter):
    body = " ".join(f"Sentence number {i} about the medicine and its dose." for i in range(40))
    text = f"Intro text about the disease.\n\nTreatment\n\n{body}\n\nOutlook\n\nMost recover."
    plain = Chunker(counter, ChunkingSettings(max_tokens=128)).chunk("d", text, "Babesiosis")
    sub = Chunker(counter, ChunkingSettings(max_tokens=128, subheadings=True)).chunk(
        "d", text, "Babesiosis"
    )
    assert all(c.context == "Babesiosis" for c in plain)
    # a chunk that continues the "Treatment" part carries it; the chunk that starts with the
    # title line has it in its text already
    later = [c for c in sub if c.start > text.index(body) + 10 and c.end < text.index("Outlook")]
    assert later and all(c.context == "Babesiosis › Treatment" for c in later)
    assert all(c.n_tokens <= 128 for c in sub)
    for c in sub:
        ids = counter.with_special(counter.encode_one(c.context), counter.encode_one(c.text))
        assert np.array_equal(c.token_ids, ids)
