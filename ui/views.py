"""How one answer is drawn: its text, its numbered sources and the advisory notice.

Used for the answer being streamed and for every earlier answer in the conversation, so a
refusal, an error and a cited answer all end the same way: sources (or why there are none),
then the notice.
"""

from __future__ import annotations

import re

import streamlit as st

from ui.backend import Reply, SetupProblem, SourceView

NOTICE_ICON = ":material/info:"
ERROR_ICON = ":material/error:"
SETUP_TITLES = {
    "no-index": "No index yet",
    "model-missing": "Model missing",
    "setup": "Not ready",
}

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~$])")


def escape_md(text: str) -> str:
    """``text`` shown literally by ``st.markdown`` (corpus titles may hold ``[`` or ``*``)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def source_line(source: SourceView) -> str:
    """``[n] Title · ORG`` with the title linked to the document when it has a URL."""
    title = escape_md(source.title or source.doc_id or "untitled document")
    if source.url.startswith(("http://", "https://")):
        title = f"[{title}]({source.url})"
    org = f" · {escape_md(source.source.upper())}" if source.source else ""
    return f"**\\[{source.number}\\]** {title}{org}"


def render_sources(sources: tuple[SourceView, ...], refused: bool) -> None:
    if not sources:
        if refused:
            st.caption("No sources: nothing relevant to this question was found in the index.")
        return
    st.markdown("**Sources**")
    for source in sources:
        st.markdown(source_line(source))
        label = f"Passage [{source.number}]"
        if source.heading:
            label += f" — {source.heading}"
        with st.expander(label):
            st.text(source.passage)
    if not any(s.cited_in_text for s in sources):
        st.caption("The answer cites no passage by number; these are the passages it was given.")


def render_notice(notice: str) -> None:
    st.info(notice, icon=NOTICE_ICON)


def render_details(reply: Reply) -> None:
    details = reply.details
    parts = []
    if details.get("n_generated_tokens") is not None:
        parts.append(f"{details['n_generated_tokens']} tokens")
    if details.get("gen_s"):
        parts.append(f"{details['gen_s']:.1f} s generating")
    if details.get("finish_reason") == "length":
        parts.append("stopped at the max tokens limit")
    if parts:
        st.caption(" · ".join(parts))
    unresolved = details.get("unresolved_citations")
    if unresolved:
        cited = ", ".join(f"[{n}]" for n in unresolved)
        st.warning(f"The answer cites {cited}, which matches no passage it was given.")


def render_reply_tail(reply: Reply) -> None:
    """Everything under the answer text: error, sources, details, the notice."""
    if reply.error:
        st.error(f"The answer could not be completed: {reply.error}", icon=ERROR_ICON)
    render_sources(reply.sources, reply.refused)
    render_details(reply)
    render_notice(reply.notice)


def render_reply(reply: Reply) -> None:
    """A whole earlier answer, from the conversation history."""
    if reply.text:
        st.markdown(reply.text)
    render_reply_tail(reply)


def render_setup_problem(problem: SetupProblem) -> None:
    title = SETUP_TITLES.get(problem.kind, SETUP_TITLES["setup"])
    st.error(f"**{title}.** {problem.message}", icon=ERROR_ICON)
    if problem.fix:
        st.code(problem.fix, language="bash")
