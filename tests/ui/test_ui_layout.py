"""Layout and error states of the page over a fake assistant (tests/ui/fake_services.py).

Only the drawing is checked here; the real model, index and browser are in test_ui_real.py and
test_ui_browser.py.
"""

from __future__ import annotations

from pathlib import Path

import fake_services
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from assistant.config import DEFAULT_MODEL
from assistant.notice import ADVISORY_NOTICE
from ui import views

TESTS_DIR = str(Path(__file__).resolve().parent)


def _page(tests_dir: str, index_dir: str, index_missing: bool, model_missing: bool) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, tests_dir)
    from fake_services import FakeServices

    from assistant.config import Settings
    from ui.app import render

    settings = Settings.from_env(env={}, index_dir=Path(index_dir))
    render(FakeServices(index_missing=index_missing, model_missing=model_missing), settings)


@pytest.fixture(autouse=True)
def _fresh():
    st.cache_resource.clear()
    fake_services.CALLS.clear()
    yield
    st.cache_resource.clear()


def page(tmp_path: Path, *, index_missing: bool = False, model_missing: bool = False) -> AppTest:
    at = AppTest.from_function(_page, kwargs={
        "tests_dir": TESTS_DIR, "index_dir": str(tmp_path / "index"),
        "index_missing": index_missing, "model_missing": model_missing}, default_timeout=30)
    return at.run()


def ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question)
    return at.run()


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def assistant_blocks(at: AppTest):
    return [m for m in at.chat_message if m.name == "assistant"]


def test_empty_page_has_sidebar_controls_and_stats(tmp_path):
    at = page(tmp_path)
    assert not at.exception
    assert at.sidebar.selectbox[0].label == "Model"
    assert at.sidebar.selectbox[0].value == DEFAULT_MODEL  # Settings with no environment
    assert [s.label for s in at.sidebar.slider] == ["Passages", "Temperature"]
    assert at.sidebar.multiselect[0].options == ["cdc", "ngc"]
    assert at.sidebar.number_input[0].label == "Max tokens"
    sidebar = " ".join(texts(at.sidebar.markdown) + texts(at.sidebar.caption))
    assert "**3** documents" in sidebar and "**12** chunks" in sidebar
    assert "all-MiniLM-L6-v2" in sidebar and "cdc (4)" in sidebar
    assert f"**{DEFAULT_MODEL}** · Q4_1" in sidebar
    assert not at.chat_input[0].disabled
    assert not at.chat_message  # no conversation yet


def test_answer_sources_and_notice(tmp_path):
    at = page(tmp_path)
    at.sidebar.slider[0].set_value(2)
    at.sidebar.multiselect[0].set_value(["ngc"])
    at.sidebar.number_input[0].set_value(40)
    ask(at, "Who should be screened for colorectal cancer?")
    assert not at.exception
    question, spec, options = fake_services.CALLS[-1]
    assert question == "Who should be screened for colorectal cancer?"
    assert spec == DEFAULT_MODEL
    assert (options.k, options.sources, options.max_tokens) == (2, ("ngc",), 40)

    user, answer = at.chat_message
    assert user.name == "user" and user.markdown[0].value == question
    body = texts(answer.markdown)
    assert "".join(fake_services.ANSWER_PIECES) in body
    # numbered sources: title (escaped, linked), organisation; the passage in an expander
    title = "Screening for colorectal cancer: \\[USPSTF\\] \\*recommendation\\*"
    assert f"**\\[1\\]** [{title}](https://example.org/ngc-1) · NGC" in body
    assert "**\\[2\\]** Colorectal cancer facts · CDC" in body
    labels = [e.label for e in answer.expander]
    assert labels == ["Passage [1] — Major Recommendations", "Passage [2]"]
    assert answer.expander[0].text[0].value == fake_services.SOURCES[0].passage
    assert texts(answer.info) == [ADVISORY_NOTICE]


def test_conversation_is_kept_and_every_answer_keeps_its_notice(tmp_path):
    at = page(tmp_path)
    ask(at, "first question")
    ask(at, "nothing about this")
    ask(at, "third question")
    assert [m.name for m in at.chat_message] == ["user", "assistant"] * 3
    for block in assistant_blocks(at):
        assert texts(block.info) == [ADVISORY_NOTICE]
    assert len(at.session_state["messages"]) == 6
    at.sidebar.button[0].click().run()  # New conversation
    assert not at.chat_message and at.session_state["messages"] == []


def test_a_follow_up_is_searched_with_the_conversation_and_says_so(tmp_path):
    at = page(tmp_path)
    ask(at, "How is asthma treated?")
    assert fake_services.CALLS[-1][2].history == ()
    ask(at, "and in children?")
    assert fake_services.CALLS[-1][2].history == ("How is asthma treated?",)
    captions = texts(assistant_blocks(at)[-1].caption)
    assert any("How is asthma treated? and in children?" in c for c in captions)
    ask(at, "and in adults?")  # the previous turn's rewritten query carries the subject
    assert fake_services.CALLS[-1][2].history == (
        "How is asthma treated?", "How is asthma treated? and in children?")


def test_refusal_says_nothing_found_and_has_notice(tmp_path):
    at = ask(page(tmp_path), "nothing relevant here")
    (answer,) = assistant_blocks(at)
    assert fake_services.REFUSAL in texts(answer.markdown)
    assert any("nothing relevant" in c for c in texts(answer.caption))
    assert not answer.expander
    assert texts(answer.info) == [ADVISORY_NOTICE]


def test_a_source_matched_by_quoted_text_is_labelled_as_such(tmp_path):
    at = ask(page(tmp_path), "quoted please")
    assert not at.exception
    (answer,) = assistant_blocks(at)
    body = texts(answer.markdown)
    assert "**\\[1\\]** Colorectal cancer screening · NGC" in body
    captions = texts(answer.caption)
    quote = fake_services.QUOTED_SOURCES[0].quote
    assert captions[0] == f"matched by quoted text; not cited by the model: “{quote}”"
    assert any("did not cite it by number" in c for c in captions)
    assert not any("cites a passage by number nor quotes" in c for c in captions)
    assert texts(answer.info) == [ADVISORY_NOTICE]


def test_a_cited_answer_has_no_matched_or_given_note(tmp_path):
    (answer,) = assistant_blocks(ask(page(tmp_path), "cited please"))
    captions = " ".join(texts(answer.caption))
    assert "matched by quoted text" not in captions and "passages it was given" not in captions


def test_generation_error_is_shown_and_page_keeps_working(tmp_path):
    at = ask(page(tmp_path), "boom please")
    assert not at.exception
    (answer,) = assistant_blocks(at)
    assert any("the engine ran out of context" in e for e in texts(answer.error))
    assert fake_services.ANSWER_PIECES[0].strip() in " ".join(texts(answer.markdown))
    assert texts(answer.info) == [ADVISORY_NOTICE]
    ask(at, "a normal question after the error")
    assert not at.exception
    last = assistant_blocks(at)[-1]
    assert not last.error and texts(last.info) == [ADVISORY_NOTICE]
    assert len(assistant_blocks(at)) == 2


def test_no_index_says_how_to_build_one(tmp_path):
    at = page(tmp_path, index_missing=True)
    assert not at.exception
    assert any(e.startswith("**No index yet.**") for e in texts(at.error))
    assert any("python -m ingest build" in c for c in texts(at.code))
    assert at.chat_input[0].disabled
    assert not at.sidebar.multiselect  # no sources to filter without an index


def test_model_missing_says_how_to_fetch_it(tmp_path):
    at = page(tmp_path, model_missing=True)
    assert not at.exception
    assert any(e.startswith("**Model missing.**") for e in texts(at.error))
    assert f"python -m assistant fetch-model {DEFAULT_MODEL}" in texts(at.code)
    assert at.chat_input[0].disabled


def test_other_model_path_is_passed_through(tmp_path):
    at = page(tmp_path)
    at.sidebar.selectbox[0].set_value("Another GGUF file…").run()
    assert at.chat_input[0].disabled  # no path typed yet: model missing
    at.sidebar.text_input[0].set_value("/data/meditron-7b.Q8_0.gguf").run()
    ask(at, "a question")
    assert fake_services.CALLS[-1][1] == "/data/meditron-7b.Q8_0.gguf"


def test_blank_question_is_ignored(tmp_path):
    at = ask(page(tmp_path), "   ")
    assert not at.exception and not at.chat_message and not fake_services.CALLS


def test_evidence_above_the_answer_and_a_flagged_number(tmp_path):
    at = ask(page(tmp_path), "flagged please")
    assert not at.exception
    (answer,) = assistant_blocks(at)
    body = texts(answer.markdown)
    evidence_at = body.index(views.EVIDENCE_TITLE)
    flagged = [i for i, b in enumerate(body) if f"600 mg {views.FLAG}" in b]
    assert flagged and flagged[0] > evidence_at  # the evidence comes first, then the answer
    assert not any(f"75 years {views.FLAG}" in b for b in body)  # found in the passage
    assert any(":orange-background[Adults aged 50 to 75 years" in b for b in body)
    (warning,) = texts(answer.warning)
    assert warning.startswith("1 of 2 numbers not found in the sources: 600 mg")
    assert texts(answer.info) == [ADVISORY_NOTICE]
    at = ask(at, "flagged again")  # the first answer, redrawn from the history, keeps its flag
    first = assistant_blocks(at)[0]
    assert any(f"600 mg {views.FLAG}" in b for b in texts(first.markdown))
    assert texts(first.warning)[0].startswith("1 of 2 numbers")


def test_sidebar_served_model_choice_gives_the_spec(tmp_path):
    at = page(tmp_path)
    at.sidebar.selectbox[0].select("A served model (OpenAI-compatible server)…").run()
    url, name = at.sidebar.text_input
    url.set_value("http://127.0.0.1:8000/v1")
    name.set_value("meditron-7b")
    at = ask(at.run(), "what is the dose?")
    assert not at.exception, at.exception
    assert fake_services.CALLS[-1][1] == "openai:http://127.0.0.1:8000/v1#meditron-7b"


def test_answer_offers_downloads_and_says_when_the_repetition_guard_stopped_it(tmp_path):
    at = page(tmp_path)
    ask(at, "loop question")
    assert not at.exception
    _, answer = at.chat_message
    assert any("began repeating itself" in c for c in texts(answer.caption))
    buttons = answer.get("download_button")
    assert [b.proto.label for b in buttons] == ["Download answer", "Download receipt"]
    assert texts(answer.info) == [ADVISORY_NOTICE]
    # an answer without downloads (the fake's plain answer) shows no buttons
    ask(at, "Who should be screened?")
    assert not at.chat_message[-1].get("download_button")
    # the earlier answer keeps its buttons when the conversation is drawn again
    assert len(at.chat_message[1].get("download_button")) == 2
