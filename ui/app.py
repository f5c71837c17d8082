"""The question-answering page: ``streamlit run ui/app.py``.

Ask a question about the indexed clinical guidelines; the answer streams in, followed by its
numbered sources and the advisory notice.  The index folder and the model come from
``GUIDELINES_INDEX`` / ``GUIDELINES_MODEL`` (``assistant.config.Settings.from_env``), else the
sample index and the default model.  The engine model and the index load once per process
(``st.cache_resource``) and are shared by every session.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `streamlit run ui/app.py` puts ui/, not the checkout, on the path
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from assistant.config import Settings  # noqa: E402
from assistant.model.presets import SERVED_PREFIX  # noqa: E402
from assistant.notice import NOTICE_TITLE  # noqa: E402
from ui.backend import (  # noqa: E402
    EvidenceBlock,
    IndexView,
    ModelView,
    Options,
    Reply,
    Services,
    SetupProblem,
)
from ui.views import (  # noqa: E402
    marked_text,
    render_evidence,
    render_reply,
    render_reply_tail,
    render_setup_problem,
)

PAGE_TITLE = "Clinical guidelines assistant"
OTHER_MODEL = "Another GGUF file…"
SERVED_MODEL = "A served model (OpenAI-compatible server)…"
MESSAGES = "messages"  # session_state key: the conversation, a list of dicts
K_RANGE = (1, 12)
TEMPERATURE_RANGE = (0.0, 1.5)
MAX_TOKENS_RANGE = (8, 4096)
INTERRUPTED = Reply(text="", error="stopped before the answer was complete")
WAITING = "Searching the guidelines and reading the passages…"  # shown until the first token


@dataclass(frozen=True)
class Controls:
    """What the sidebar asks for: the model spec and the per-question options."""

    model: str
    options: Options


# -- heavy resources: loaded once per process, shared by all sessions -------------------------


def _index_stamp(path: Path) -> int:
    """Changes when the index folder is (re)built, so a rebuilt index is reopened."""
    try:
        return max((p.stat().st_mtime_ns for p in path.iterdir()), default=path.stat().st_mtime_ns)
    except OSError:
        return 0


@st.cache_resource(show_spinner="Opening the index…", max_entries=4)
def _cached_index(_services: Services, services_name: str, path: str, stamp: int) -> IndexView:
    return _services.open_index(Path(path))


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def _cached_model(_services: Services, services_name: str, spec: str) -> ModelView:
    return _services.load_model(spec)


def open_index(services: Services, path: Path) -> IndexView | SetupProblem:
    try:
        return _cached_index(services, services.name, str(path), _index_stamp(path))
    except SetupProblem as problem:  # not cached: the next run tries again
        return problem


def load_model(services: Services, spec: str) -> ModelView | SetupProblem:
    try:
        return _cached_model(services, services.name, spec)
    except SetupProblem as problem:
        return problem


# -- sidebar -----------------------------------------------------------------------------------


def _model_control(services: Services, settings: Settings) -> str:
    presets = dict(services.presets())
    choices = [*presets, OTHER_MODEL, SERVED_MODEL]
    served = settings.model.startswith(SERVED_PREFIX)
    default = settings.model if settings.model in presets else (
        SERVED_MODEL if served else OTHER_MODEL)
    help_text = "  \n".join(f"**{name}**: {text}" for name, text in presets.items())
    choice = st.selectbox("Model", choices, index=choices.index(default), help=help_text)
    if choice == SERVED_MODEL:
        return _served_control(settings.model if served else "")
    if choice != OTHER_MODEL:
        return choice
    initial = "" if settings.model in presets or served else settings.model
    return st.text_input("GGUF file", value=initial, placeholder="/path/to/model.gguf").strip()


def _served_control(initial: str) -> str:
    """A served model's base URL and name, as the spec ``openai:<base_url>#<model>``."""
    url, _, name = initial[len(SERVED_PREFIX):].partition("#")
    url = st.text_input("Server (OpenAI-compatible base URL)", value=url,
                        placeholder="http://127.0.0.1:8000/v1",
                        help="vLLM, llama.cpp's server, TGI… The prompt, citations and notice "
                             "are the same as with the built-in engine.").strip()
    name = st.text_input("Served model name", value=name, placeholder="the server's model id")
    return f"{SERVED_PREFIX}{url}#{name.strip()}" if url or name.strip() else ""


def sidebar_controls(services: Services, settings: Settings, index: IndexView | None) -> Controls:
    with st.sidebar:
        st.header("Settings")
        model = _model_control(services, settings)
        k = st.slider("Passages", *K_RANGE, value=min(max(settings.k, K_RANGE[0]), K_RANGE[1]),
                      help="How many guideline passages are retrieved for each question.")
        sources: list[str] = []
        if index is not None and index.sources:
            sources = st.multiselect("Sources", sorted(index.sources), placeholder="All sources",
                                     help="Search only these sources of the index.")
        temperature = st.slider("Temperature", *TEMPERATURE_RANGE,
                                value=float(settings.temperature), step=0.05,
                                help="0 gives the most likely answer every time.")
        max_tokens = st.number_input("Max tokens", *MAX_TOKENS_RANGE, value=settings.max_tokens,
                                     step=16, help="The longest answer, in tokens.")
    options = Options(k=int(k), temperature=float(temperature), max_tokens=int(max_tokens),
                      sources=tuple(sources))
    return Controls(model=model, options=options)


def sidebar_status(settings: Settings, index: IndexView | SetupProblem,
                   model: ModelView | SetupProblem) -> None:
    with st.sidebar:
        st.divider()
        st.subheader("Index")
        if isinstance(index, IndexView):
            st.markdown(f"**{index.documents:,}** documents · **{index.chunks:,}** chunks")
            if index.sources:
                st.caption("Documents per source: " + ", ".join(
                    f"{name} ({n:,})" for name, n in sorted(index.sources.items())))
            st.caption(f"Embedding model: {index.embedding_model}")
            st.caption(f"Folder: `{index.path}`")
        else:
            st.caption(f"No index at `{settings.index}`")
        st.subheader("Model")
        if isinstance(model, ModelView):
            quant = f" · {model.quantization}" if model.quantization else ""
            st.markdown(f"**{model.spec}**{quant}")
            if model.quantization == "served":
                st.caption(model.description)
            else:
                st.caption(f"File: `{model.path.name}`")
        else:
            st.caption(f"Not loaded: `{model.value or '(none chosen)'}`")
        if st.button("New conversation", disabled=not st.session_state.get(MESSAGES)):
            st.session_state[MESSAGES] = []
            st.rerun()


# -- the conversation --------------------------------------------------------------------------


def render_history() -> None:
    for message in st.session_state[MESSAGES]:
        with st.chat_message(message["role"]):
            if message["role"] == "user":
                st.markdown(message["content"])
            else:
                render_reply(message["reply"])


def conversation_queries(messages: list[dict]) -> tuple[str, ...]:
    """Each earlier turn's search query: its rewritten follow-up, else the question as asked."""
    out: list[str] = []
    for message in messages:
        if message["role"] == "user":
            out.append(message["content"])
        elif out and isinstance(message.get("reply"), Reply):
            out[-1] = message["reply"].details.get("search_query") or out[-1]
    return tuple(out)


def stream_answer(services: Services, index: IndexView, model: ModelView, question: str,
                  options: Options) -> Reply:
    """Stream the answer into the current chat message; always ends with sources and notice."""
    ending: dict[str, object] = {}
    evidence_slot = st.empty()  # the evidence sentences, above the answer
    waiting = st.empty()
    waiting.caption(WAITING)

    def pieces():
        stream = services.ask(index, model, question, options)
        try:
            for item in stream:
                if isinstance(item, Reply):
                    ending["reply"] = item
                    continue
                if isinstance(item, EvidenceBlock):
                    with evidence_slot.container():
                        render_evidence(item.sentences)
                    continue
                if item:
                    waiting.empty()
                    yield item
        except Exception as e:  # a generation error: shown under the partial answer
            ending["error"] = f"{type(e).__name__}: {e}"
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    text_slot = st.empty()
    with text_slot.container():
        streamed = st.write_stream(pieces())
    waiting.empty()
    text = streamed if isinstance(streamed, str) else "".join(map(str, streamed))
    reply = ending.get("reply")
    if not isinstance(reply, Reply):
        error = ending.get("error") or "the assistant ended without an answer"
        reply = Reply(text=text, error=str(error))
    elif ending.get("error"):
        reply = replace(reply, text=reply.text or text, error=str(ending["error"]))
    if reply.unsupported_numbers or reply.unsupported_terms or (not text and reply.text):
        text_slot.markdown(marked_text(reply))  # the streamed text, its flags added
    render_reply_tail(reply)
    return reply


def render(services: Services, settings: Settings) -> None:
    """The whole page, over ``services`` (the assistant, or a fake in layout tests)."""
    st.set_page_config(page_title=PAGE_TITLE, page_icon=":material/clinical_notes:")
    st.title(PAGE_TITLE)
    st.caption(f"{NOTICE_TITLE}. Answers are drawn from open clinical guidelines and cite them.")
    st.session_state.setdefault(MESSAGES, [])

    index = open_index(services, settings.index)
    controls = sidebar_controls(services, settings, index if isinstance(index, IndexView) else None)
    model = load_model(services, controls.model)
    sidebar_status(settings, index, model)

    render_history()
    for problem in (index, model):
        if isinstance(problem, SetupProblem):
            render_setup_problem(problem)
    ready = isinstance(index, IndexView) and isinstance(model, ModelView)
    question = (st.chat_input("Ask a question about the guidelines", disabled=not ready) or "")
    question = question.strip()
    if not (question and ready):
        return
    options = replace(controls.options, history=conversation_queries(st.session_state[MESSAGES]))
    st.session_state[MESSAGES].append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"):
        try:
            reply = stream_answer(services, index, model, question, options)
        except BaseException:  # a new question or Stop interrupted it: keep the turn, noted
            st.session_state[MESSAGES].append({"role": "assistant", "reply": INTERRUPTED})
            raise
    st.session_state[MESSAGES].append({"role": "assistant", "reply": reply})


def main() -> None:
    from ui.services import AssistantServices

    settings = Settings.from_env()
    render(AssistantServices(settings), settings)


if __name__ == "__main__":
    main()
