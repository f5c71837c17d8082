"""The page's glue to the assistant: its real Answer, errors and presets as the page shows them."""

from __future__ import annotations

import pytest

from assistant.answer import REFUSAL_TEXT, Answer, Passage, resolve_citations
from assistant.config import Settings
from assistant.model.presets import PRESETS
from assistant.notice import ADVISORY_NOTICE
from ui.backend import ModelMissing, NoIndex
from ui.services import AssistantServices, reply_from_answer


def _passages() -> list[Passage]:
    return [
        Passage(1, "ngc-10192", "ngc-10192:3", "Screening for lung cancer", "ngc",
                "https://example.org/ngc-10192", "Major Recommendations",
                "The USPSTF recommends annual screening for lung cancer with LDCT."),
        Passage(2, "medquad-cdc-0000094", "medquad-cdc-0000094:0", "Varicella Vaccination",
                "cdc", "http://www.cdc.gov/vaccines/", None, "Two doses of varicella vaccine."),
    ]


def test_cited_answer_lists_cited_sources_with_their_passage():
    passages = _passages()
    text = "Adults aged 55 to 80 who smoked [1]. See also [9]."
    citations, unresolved = resolve_citations(text, passages)
    answer = Answer("q", text, citations, passages, unresolved_citations=unresolved,
                    finish_reason="length", usage={"completion_tokens": 12},
                    timings={"generate_s": 1.5})
    reply = reply_from_answer(answer)
    assert reply.text == text and reply.notice == ADVISORY_NOTICE and not reply.refused
    (source,) = reply.sources
    assert (source.number, source.title, source.source, source.url, source.heading) == (
        1, "Screening for lung cancer", "ngc", "https://example.org/ngc-10192",
        "Major Recommendations")
    assert source.passage == passages[0].text and source.cited_in_text
    assert reply.details["unresolved_citations"] == [9]
    assert reply.details["n_generated_tokens"] == 12
    assert reply.details["finish_reason"] == "length"


def test_uncited_answer_lists_every_passage_given():
    passages = _passages()
    citations, _ = resolve_citations("No numbers here.", passages)
    reply = reply_from_answer(Answer("q", "No numbers here.", citations, passages))
    assert [s.number for s in reply.sources] == [1, 2]
    assert not any(s.cited_in_text for s in reply.sources)
    assert reply.sources[1].heading == ""


def test_quoted_passage_is_a_matched_source_with_its_quote():
    passages = _passages()
    text = "In short: the USPSTF recommends annual screening for lung cancer with LDCT!"
    citations, _ = resolve_citations(text, passages)
    reply = reply_from_answer(Answer("q", text, citations, passages))
    (source,) = reply.sources  # passage 2 is neither cited nor quoted: not listed
    assert (source.number, source.kind, source.cited_in_text) == (1, "matched", False)
    assert source.quote == "the USPSTF recommends annual screening for lung cancer with LDCT"


def test_refusal_keeps_the_notice_and_has_no_sources():
    reply = reply_from_answer(Answer("q", REFUSAL_TEXT, [], [], refused=True))
    assert reply.refused and reply.sources == () and reply.notice == ADVISORY_NOTICE


def test_presets_are_the_assistants():
    services = AssistantServices(Settings.from_env(env={}))
    assert dict(services.presets()) == {n: p.description for n, p in PRESETS.items()}


def test_missing_index_folder_says_how_to_build_it(tmp_path):
    services = AssistantServices(Settings.from_env(env={}))
    with pytest.raises(NoIndex) as info:
        services.open_index(tmp_path / "nowhere")
    assert info.value.value == tmp_path / "nowhere"
    assert info.value.fix.startswith("python -m ingest build --input ")
    assert info.value.fix.endswith(f"--index {tmp_path / 'nowhere'}")


def test_preset_not_downloaded_says_how_to_fetch_it(tmp_path):
    services = AssistantServices(Settings.from_env(env={"GUIDELINES_HOME": str(tmp_path)}))
    with pytest.raises(ModelMissing) as info:
        services.load_model("smollm2-135m")
    assert info.value.fix == "python -m assistant fetch-model smollm2-135m"
    assert "not downloaded" in info.value.message


def test_bad_model_path_is_reported_without_a_fetch_command(tmp_path):
    services = AssistantServices(Settings.from_env(env={}))
    with pytest.raises(ModelMissing) as info:
        services.load_model(str(tmp_path / "missing.gguf"))
    assert info.value.fix is None and "missing.gguf" in info.value.message
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_bytes(b"this is not a GGUF file at all" * 10)
    with pytest.raises(ModelMissing) as info:
        services.load_model(str(not_gguf))
    assert "notes.gguf" in info.value.message and "GGUFError" in info.value.message
